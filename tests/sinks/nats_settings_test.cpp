// The NATS sink without a server: settings validation and subject templates.
// The sink against real nats-server processes is tested in
// tests/integration/nats_sink_integration_test.py and nats_*_chaos_test.py.
#include "sinks/nats/nats_sink.hpp"

#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>

#include "support/sink_settings.hpp"

using namespace tailbox;
namespace nats = sinks::nats;

namespace {

using Values = testing::SettingValues;
using testing::has;
using testing::says;

Values base() { return {{"stream", {std::string("LOGS"), 2}}}; }

std::string build(const Values& v) { return testing::build_sink<sinks::NatsSink>(v, "", "edge1"); }

nats::Options options(const Values& v) { return testing::parsed_options(v, nats::parse_options); }

}  // namespace

TEST_SUITE("sinks.nats.settings") {
  TEST_CASE("a minimal configuration is valid, with the documented defaults") {
    CHECK(build(base()) == "ok:nats:LOGS");
    nats::Options o = options(base());
    CHECK(o.url == "nats://127.0.0.1:4222");
    CHECK(o.subject == "logs.{host}.{source}");
    CHECK(o.stream_subjects == std::vector<std::string>{"logs.*.*"});
    CHECK(!o.create_stream);
    CHECK(o.duplicate_window == std::chrono::minutes(2));
    CHECK(o.timeout == std::chrono::seconds(10));
    CHECK(o.replicas == 1);
    CHECK(o.ndjson);
  }

  TEST_CASE("stream is required and must be a stream name") {
    CHECK(says(build({}), "sink.stream: is required"));
    Values v = base();
    v["stream"] = {std::string("a.b"), 3};
    CHECK(says(build(v), "sink.stream: must be a NATS stream name"));
  }

  TEST_CASE("format is ndjson or raw") {
    Values v = base();
    v["format"] = {std::string("xml"), 4};
    CHECK(says(build(v), "sink.format"));
    v["format"] = {std::string("raw"), 4};
    CHECK(build(v) == "ok:nats:LOGS");
  }

  TEST_CASE("an unknown key is rejected by name") {
    Values v = base();
    v["stream_subject"] = {std::string("logs.>"), 7};
    CHECK(says(build(v), "stream_subject"));
  }

  TEST_CASE("a bad subject template is rejected") {
    for (const char* bad : {"logs.>", "logs.*.{host}", "logs..x", ".logs", "logs.{hostname}",
                            "logs.{host} x", ""}) {
      Values v = base();
      v["subject"] = {std::string(bad), 5};
      CHECK(says(build(v), "sink.subject"));
    }
  }

  TEST_CASE("authentication settings go together, one method at a time") {
    Values v = base();
    v["password_env"] = {std::string("PW"), 6};
    CHECK(says(build(v), "needs user"));
    v["user"] = {std::string("u"), 6};
    CHECK(build(v) == "ok:nats:LOGS");
    v["token_env"] = {std::string("TOK"), 7};
    CHECK(says(build(v), "choose one authentication"));
    Values w = base();
    w["password_file"] = {std::string("/p"), 6};
    w["password_env"] = {std::string("PW"), 7};
    w["user"] = {std::string("u"), 8};
    CHECK(says(build(w), "not both"));
    Values t = base();
    t["tls_cert_file"] = {std::string("/c.pem"), 6};
    CHECK(says(build(t), "go together"));
  }

  TEST_CASE("durations and replicas are checked") {
    Values v = base();
    v["timeout"] = {std::string("0"), 3};
    CHECK(says(build(v), "sink.timeout"));
    Values w = base();
    w["replicas"] = {int64_t{7}, 3};
    CHECK(says(build(w), "sink.replicas"));
    Values d = base();
    d["create_stream"] = {true, 3};
    d["duplicate_window"] = {std::string("1s"), 4};
    d["stream_subjects"] = {std::vector<std::string>{"logs.>"}, 5};
    nats::Options o = options(d);
    CHECK(o.duplicate_window == std::chrono::seconds(1));
    CHECK(o.stream_subjects == std::vector<std::string>{"logs.>"});
  }
}

TEST_SUITE("sinks.nats.subjects") {
  TEST_CASE("placeholders are replaced by sanitised tokens") {
    CHECK(nats::subject_for("logs.{host}.{source}", "edge1", "app") == "logs.edge1.app");
    CHECK(nats::subject_for("logs.{host}.{source}", "edge.1", "a*b>c d\te\x01") ==
          "logs.edge_1.a_b_c_d_e_");
    CHECK(nats::subject_for("logs.{source}", "", "") == "logs._");
    CHECK(nats::subject_for("x.h-{host}-{source}", "h", "s") == "x.h-h-s");
    CHECK(nats::subject_for("fixed.subject", "h", "s") == "fixed.subject");
  }

  TEST_CASE("the stream's default subjects and this host's filter") {
    CHECK(nats::wildcard_subject("logs.{host}.{source}") == "logs.*.*");
    CHECK(nats::wildcard_subject("x.h-{host}.y") == "x.*.y");
    CHECK(nats::host_filter("logs.{host}.{source}", "edge.1") == "logs.edge_1.*");
    CHECK(nats::host_filter("logs.{source}", "edge1") == "logs.*");
    CHECK(nats::host_filter("x.{host}-{source}", "edge1") == "x.*");
  }

  TEST_CASE("the displayed URL holds no user or password") {
    CHECK(nats::display_url("nats://u:secret@h1:4222, nats://h2:4222") ==
          "nats://h1:4222,nats://h2:4222");
    CHECK(nats::display_url("tok@h:1") == "h:1");
  }
}
