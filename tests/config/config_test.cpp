#include "config/config.hpp"

#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>

#include "sinks/registry.hpp"

using tailbox::config::ConfigError;
using tailbox::config::load_string;

namespace {
const char* kMinimal = R"(
host_id = "edge-7"
[[source]]
name = "app"
paths = "/var/log/app/*.log"
[sink]
type = "sqlite"
)";

std::string error_of(const std::string& text) {
  try {
    load_string(text, "t.toml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_SUITE("config") {
  TEST_CASE("a minimal file gets the documented defaults") {
    auto cfg = load_string(kMinimal);
    CHECK(cfg.host_id == "edge-7");
    REQUIRE(cfg.sources.size() == 1);
    CHECK(cfg.sources[0].paths == std::vector<std::string>{"/var/log/app/*.log"});
    CHECK(cfg.sources[0].read_from == tailbox::config::ReadFrom::head);
    CHECK(cfg.delivery.workers == 4);
    CHECK(cfg.delivery.ordering == tailbox::config::Ordering::none);
    CHECK(cfg.outbox.synchronous == tailbox::config::Synchronous::normal);
    CHECK(cfg.sink.type == "sqlite");
  }

  TEST_CASE("every section parses") {
    auto cfg = load_string(R"(
host_id = "h"
[[source]]
name = "a"
paths = ["/a/*.log", "/b/**/*.log"]
exclude = ["*.gz"]
read_from = "tail"
parser = "regex"
pattern = '^(?<level>\w+) (?<msg>.*)$'
partial_line_timeout = "2s"
[[source]]
name = "b"
paths = ["/c.log"]
parser = "json"
[tail]
poll_interval = "500ms"
[outbox]
path = "/tmp/o.db"
max_rows = 5000
max_bytes = "64MiB"
synchronous = "full"
[delivery]
workers = 8
batch_rows = 500
batch_bytes = "2MiB"
linger = "0ms"
backoff_min = "100ms"
backoff_max = "1m"
jitter = 0.2
max_attempts = 5
ordering = "per_file"
[sink]
type = "file"
path = "/tmp/out.ndjson"
)");
    CHECK(cfg.sources.size() == 2);
    CHECK(cfg.sources[0].exclude.size() == 1);
    CHECK(cfg.sources[0].partial_line_timeout.count() == 2000);
    CHECK(cfg.sources[1].parser == tailbox::config::ParserKind::json);
    CHECK(cfg.outbox.max_bytes == 64 << 20);
    CHECK(cfg.delivery.backoff_max.count() == 60000);
    CHECK(cfg.delivery.jitter == doctest::Approx(0.2));
    CHECK(cfg.delivery.ordering == tailbox::config::Ordering::per_file);
  }

  TEST_CASE("an unknown key is rejected with its name and line") {
    std::string e = error_of(std::string(kMinimal) + "\n[delivery]\nworkerz = 3\n");
    CHECK(e.find("delivery.workerz") != std::string::npos);
    CHECK(e.find("unknown key") != std::string::npos);
    CHECK(e.find("line 10") != std::string::npos);
  }

  TEST_CASE("a wrong type names the key") {
    std::string e = error_of(std::string(kMinimal) + "\n[delivery]\nworkers = \"four\"\n");
    CHECK(e.find("delivery.workers") != std::string::npos);
  }

  TEST_CASE("out-of-range and malformed values are rejected") {
    CHECK(error_of(std::string(kMinimal) + "[delivery]\nworkers = 0\n").find("between") !=
          std::string::npos);
    CHECK(error_of(std::string(kMinimal) + "[delivery]\nlinger = \"5 parsecs\"\n")
              .find("delivery.linger") != std::string::npos);
    CHECK(error_of(std::string(kMinimal) + "[delivery]\nordering = \"random\"\n")
              .find("must be one of") != std::string::npos);
    CHECK(error_of(std::string(kMinimal) + "[delivery]\nbackoff_min = \"2s\"\nbackoff_max = \"1s\"\n")
              .find("backoff_max") != std::string::npos);
  }

  TEST_CASE("missing sources, paths and sink are errors") {
    CHECK(error_of("[sink]\ntype = \"sqlite\"\n").find("source") != std::string::npos);
    CHECK(error_of("[[source]]\nname = \"a\"\n[sink]\ntype = \"sqlite\"\n").find("source.paths") !=
          std::string::npos);
    CHECK(error_of("[[source]]\nname = \"a\"\npaths = \"/x\"\n").find("[sink]") != std::string::npos);
  }

  TEST_CASE("two sources may not share a name") {
    CHECK(error_of("[[source]]\nname = \"a\"\npaths = \"/x\"\n[[source]]\nname = \"a\"\npaths = "
                   "\"/y\"\n[sink]\ntype = \"sqlite\"\n")
              .find("used twice") != std::string::npos);
  }

  TEST_CASE("a regex parser needs a pattern") {
    CHECK(error_of("[[source]]\nname = \"a\"\npaths = \"/x\"\nparser = \"regex\"\n[sink]\ntype = "
                   "\"sqlite\"\n")
              .find("source.pattern") != std::string::npos);
  }

  TEST_CASE("tailing settings: defaults") {
    auto cfg = load_string(kMinimal);
    const auto& src = cfg.sources[0];
    CHECK(src.max_line_mode == tailbox::config::LongLines::split);
    CHECK(src.ignore_older.count() == 0);
    CHECK_FALSE(src.read_gzip);
    CHECK_FALSE(src.multiline.enabled());
    CHECK(src.multiline.max_lines == 500);
    CHECK(src.multiline.max_bytes == 1 << 20);
    CHECK(src.multiline.timeout.count() == 2000);
    CHECK(cfg.tail.inotify);
    CHECK(cfg.tail.recheck_interval.count() == 10'000);
  }

  TEST_CASE("tailing settings: multiline, long lines, ignore_older, gzip, inotify") {
    auto cfg = load_string(R"(
[[source]]
name = "java"
paths = "/var/log/java/*.log*"
max_line_mode = "truncate"
ignore_older = "2h"
read_gzip = true
multiline.start_pattern = '^\d{4}-\d{2}-\d{2} '
multiline.max_lines = 200
multiline.max_bytes = "256KiB"
multiline.timeout = "500ms"
[[source]]
name = "other"
paths = "/x"
[source.multiline]
start_pattern = '^\S'
[tail]
inotify = false
recheck_interval = "30s"
[sink]
type = "sqlite"
)");
    const auto& j = cfg.sources[0];
    CHECK(j.max_line_mode == tailbox::config::LongLines::truncate);
    CHECK(j.ignore_older.count() == 2 * 3600 * 1000);
    CHECK(j.read_gzip);
    CHECK(j.multiline.start_pattern == "^\\d{4}-\\d{2}-\\d{2} ");
    CHECK(j.multiline.max_lines == 200);
    CHECK(j.multiline.max_bytes == 256 * 1024);
    CHECK(j.multiline.timeout.count() == 500);
    CHECK(cfg.sources[1].multiline.start_pattern == "^\\S");
    CHECK_FALSE(cfg.tail.inotify);
    CHECK(cfg.tail.recheck_interval.count() == 30'000);
  }

  TEST_CASE("tailing settings: mistakes name the key") {
    std::string head = "[[source]]\nname = \"a\"\npaths = \"/x\"\n";
    std::string sink = "[sink]\ntype = \"sqlite\"\n";
    CHECK(error_of(head + "multiline.start_pattern = '(unclosed'\n" + sink)
              .find("source.multiline.start_pattern: is not a valid regular expression") !=
          std::string::npos);
    CHECK(error_of(head + "multiline.max_lines = 10\n" + sink)
              .find("source.multiline.start_pattern: is required") != std::string::npos);
    CHECK(error_of(head + "multiline.start_pattern = 'x'\nmultiline.max_line = 3\n" + sink)
              .find("source.multiline.max_line: unknown key") != std::string::npos);
    CHECK(error_of(head + "multiline = 3\n" + sink).find("source.multiline") != std::string::npos);
    CHECK(error_of(head + "max_line_mode = \"drop\"\n" + sink).find("source.max_line_mode") !=
          std::string::npos);
    CHECK(error_of(head + "read_gzip = \"yes\"\n" + sink).find("source.read_gzip") !=
          std::string::npos);
    CHECK(error_of(head + "ignore_older = \"ages\"\n" + sink).find("source.ignore_older") !=
          std::string::npos);
    CHECK(error_of(head + "[tail]\ninotify = 1\n" + sink).find("tail.inotify") != std::string::npos);
  }

  TEST_CASE("TOML syntax errors give the line") {
    std::string e = error_of("host_id = \n");
    CHECK(e.find("line 1") != std::string::npos);
  }

  TEST_CASE("sink settings are validated by the sink, unknown keys included") {
    boost::asio::io_context ioc;
    auto cfg = load_string(std::string(kMinimal) + "pathh = \"/tmp/x.db\"\n");
    try {
      tailbox::sinks::make_sink(cfg.sink, ioc.get_executor());
      FAIL("expected a ConfigError");
    } catch (const ConfigError& e) {
      CHECK(std::string(e.what()).find("sink.pathh") != std::string::npos);
    }
    auto bad = load_string("[[source]]\nname = \"a\"\npaths = \"/x\"\n[sink]\ntype = \"carrier-pigeon\"\n");
    CHECK_THROWS_AS(tailbox::sinks::make_sink(bad.sink, ioc.get_executor()), ConfigError);
    auto file = load_string("[[source]]\nname = \"a\"\npaths = \"/x\"\n[sink]\ntype = \"file\"\n");
    CHECK_THROWS_AS(tailbox::sinks::make_sink(file.sink, ioc.get_executor()), ConfigError);
  }

  TEST_CASE("outbox disk headroom: defaults, sizes, and 0 to turn it off") {
    auto cfg = load_string(kMinimal);
    CHECK(cfg.outbox.min_free_bytes == 64LL << 20);
    CHECK(cfg.outbox.reserve_bytes == 8LL << 20);
    cfg = load_string(std::string(kMinimal) +
                      "[outbox]\nmin_free_bytes = \"512KiB\"\nreserve_bytes = 0\n");
    CHECK(cfg.outbox.min_free_bytes == 512 * 1024);
    CHECK(cfg.outbox.reserve_bytes == 0);
    CHECK(error_of(std::string(kMinimal) + "[outbox]\nmin_free_bytes = -1\n")
              .find("outbox.min_free_bytes") != std::string::npos);
  }
}
