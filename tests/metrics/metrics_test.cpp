// The metrics registry: what render() writes in the Prometheus text format.
#include "metrics/metrics.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <string>

using namespace tailbox;
using metrics::Registry;

namespace {

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_SUITE("metrics.registry") {
  TEST_CASE("counters and gauges read their component's value at every scrape") {
    Registry reg;
    std::atomic<int64_t> lines{0};
    double paused = 0;
    reg.counter_fn("t_lines_total", "Lines read.", {{"source", "app"}},
                   [&lines] { return double(lines.load()); });
    reg.gauge_fn("t_paused", "1 while paused.", {}, [&paused] { return paused; });
    std::string first = reg.render();
    CHECK(has(first, "# HELP t_lines_total Lines read.\n# TYPE t_lines_total counter\n"));
    CHECK(has(first, "t_lines_total{source=\"app\"} 0\n"));
    CHECK(has(first, "# TYPE t_paused gauge\nt_paused 0\n"));
    lines = 12345;
    paused = 0.25;
    std::string second = reg.render();
    CHECK(has(second, "t_lines_total{source=\"app\"} 12345\n"));
    CHECK(has(second, "t_paused 0.25\n"));
  }

  TEST_CASE("one family per name, one series per label set, HELP and TYPE once") {
    Registry reg;
    reg.counter_fn("t_bytes_total", "Bytes.", {{"source", "a"}}, [] { return 1.0; });
    reg.counter_fn("t_bytes_total", "Bytes.", {{"source", "b"}}, [] { return 2.0; });
    std::string text = reg.render();
    CHECK(text == "# HELP t_bytes_total Bytes.\n# TYPE t_bytes_total counter\n"
                  "t_bytes_total{source=\"a\"} 1\nt_bytes_total{source=\"b\"} 2\n");
  }

  TEST_CASE("a name registered with two types is a bug, refused") {
    Registry reg;
    reg.gauge_fn("t_x", "x", {}, [] { return 0.0; });
    CHECK_THROWS_AS(reg.counter_fn("t_x", "x", {}, [] { return 0.0; }), std::logic_error);
  }

  TEST_CASE("label values are escaped: backslash, quote, newline") {
    Registry reg;
    reg.gauge_fn("t_lag", "Lag.", {{"path", "C:\\logs\\\"a\"\nb"}}, [] { return 1.0; });
    CHECK(has(reg.render(), "t_lag{path=\"C:\\\\logs\\\\\\\"a\\\"\\nb\"} 1\n"));
  }

  TEST_CASE("numbers: integers without a fraction, others with 9 digits, infinities as +Inf") {
    Registry reg;
    reg.gauge_fn("t_a", "a", {}, [] { return 1e12; });
    reg.gauge_fn("t_b", "b", {}, [] { return 1.0 / 3; });
    reg.gauge_fn("t_c", "c", {}, [] { return 1.0 / 0.0; });
    std::string text = reg.render();
    CHECK(has(text, "t_a 1000000000000\n"));
    CHECK(has(text, "t_b 0.333333333\n"));
    CHECK(has(text, "t_c +Inf\n"));
  }

  TEST_CASE("a histogram a component owns: cumulative buckets, +Inf, sum and count") {
    metrics::Histogram h({0.01, 0.1, 1});
    Registry reg;
    reg.histogram("t_seconds", "Time per batch.", {{"sink", "file"}}, h);
    h.observe(0.005);
    h.observe(0.05);
    h.observe(0.05);
    h.observe(5);
    std::string text = reg.render();
    CHECK(text == "# HELP t_seconds Time per batch.\n# TYPE t_seconds histogram\n"
                  "t_seconds_bucket{sink=\"file\",le=\"0.01\"} 1\n"
                  "t_seconds_bucket{sink=\"file\",le=\"0.1\"} 3\n"
                  "t_seconds_bucket{sink=\"file\",le=\"1\"} 3\n"
                  "t_seconds_bucket{sink=\"file\",le=\"+Inf\"} 4\n"
                  "t_seconds_sum{sink=\"file\"} 5.105\n"
                  "t_seconds_count{sink=\"file\"} 4\n");
  }

  TEST_CASE("a value on a bucket's bound counts in that bucket (le is inclusive)") {
    metrics::Histogram h({1, 2});
    h.observe(1);
    h.observe(2);
    auto cum = h.cumulative();
    REQUIRE(cum.size() == 3);
    CHECK(cum[0] == 1);
    CHECK(cum[1] == 2);
    CHECK(cum[2] == 2);
  }

  TEST_CASE("collectors are appended; remove() drops one series and an empty family") {
    Registry reg;
    reg.gauge_fn("t_lag", "Lag.", {{"path", "/a"}}, [] { return 1.0; });
    reg.gauge_fn("t_lag", "Lag.", {{"path", "/b"}}, [] { return 2.0; });
    reg.add_collector([] {
      return metrics::format_family("t_dynamic", "gauge", "Dynamic.", {{{{"k", "v"}}, 7.0}});
    });
    std::string text = reg.render();
    CHECK(has(text, "# HELP t_dynamic Dynamic.\n# TYPE t_dynamic gauge\nt_dynamic{k=\"v\"} 7\n"));
    reg.remove("t_lag", {{"path", "/a"}});
    text = reg.render();
    CHECK_FALSE(has(text, "path=\"/a\""));
    CHECK(has(text, "t_lag{path=\"/b\"} 2\n"));
    reg.remove("t_lag", {{"path", "/b"}});
    CHECK_FALSE(has(reg.render(), "t_lag"));
  }
}
