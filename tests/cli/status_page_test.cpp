#include <doctest/doctest.h>

#include <boost/json.hpp>

#include "cli/status_page.hpp"
#include "support/temp_dir.hpp"

using tailbox::cli::LiveState;
using tailbox::cli::StatusPage;

namespace {

std::string header(const tailbox::metrics::Response& r, const std::string& name) {
  for (const auto& [k, v] : r.headers)
    if (k == name) return v;
  return {};
}

}  // namespace

TEST_SUITE("status_page") {
  TEST_CASE("serves the page with a CSP that allows nothing external, and only its own paths") {
    tailbox::testing::TempDir dir;
    tailbox::config::Config cfg;
    cfg.outbox.path = dir / "outbox.db";
    StatusPage page(cfg, "sqlite:x", "exactly-once", [] { return LiveState{}; });
    auto r = page.handle("/");
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->content_type.starts_with("text/html"));
    std::string csp = header(*r, "Content-Security-Policy");
    CHECK(csp.starts_with("default-src 'none'"));
    CHECK(csp.find("script-src 'sha256-") != std::string::npos);
    CHECK(r->body.find("innerHTML") == std::string::npos);
    CHECK_FALSE(page.handle("/metrics"));
    CHECK_FALSE(page.handle("/status.jsonx"));
  }

  TEST_CASE("an outbox that cannot be read is reported in outbox_error; the live part stays") {
    tailbox::testing::TempDir dir;
    tailbox::config::Config cfg;
    cfg.host_id = "h1";
    cfg.outbox.path = dir / "missing.db";
    LiveState live;
    live.rows_delivered = 7;
    live.sink.open = true;
    live.sink.last_success_ms = 100;
    live.sink.last_failure_ms = 200;
    live.sink.last_error = "busy";
    StatusPage page(cfg, "sqlite:x", "exactly-once", [live] { return live; });
    auto r = page.handle("/status.json");
    REQUIRE(r);
    auto o = boost::json::parse(r->body).as_object();
    CHECK(o.at("outbox_error").as_string().find("does not exist") != boost::json::string::npos);
    CHECK(o.at("relay").at("host_id") == "h1");
    CHECK(o.at("totals").at("rows_delivered") == 7);
    CHECK(o.at("sink").at("state") == "retrying");
    CHECK(o.at("sink").at("last_error") == "busy");
    CHECK(o.at("sink").at("last_error_ms") == 200);
  }

  TEST_CASE("the sink's state and last error: connecting until open, the newer of open and delivery errors") {
    tailbox::testing::TempDir dir;
    tailbox::config::Config cfg;
    cfg.outbox.path = dir / "missing.db";
    LiveState live;
    live.sink.open_error = "connection refused";
    live.sink.open_error_ms = 50;
    auto state = [&] {
      StatusPage page(cfg, "s", "g", [live] { return live; });
      return boost::json::parse(page.handle("/status.json")->body).at("sink").as_object();
    };
    CHECK(state().at("state") == "connecting");
    CHECK(state().at("last_error") == "connection refused");
    live.sink.open = true;
    live.sink.last_success_ms = 60;
    CHECK(state().at("state") == "connected");
    CHECK(state().at("last_error_ms") == 50);
    live.sink.last_failure_ms = 70;
    live.sink.last_error = "HTTP 503";
    CHECK(state().at("state") == "retrying");
    CHECK(state().at("last_error") == "HTTP 503");
  }
}
