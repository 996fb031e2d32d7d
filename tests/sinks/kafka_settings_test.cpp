// The Kafka sink without brokers: settings validation and the progress
// record's partition. The sink against librdkafka's mock cluster is tested in
// tests/integration/kafka_sink_integration_test.py and kafka_kill9_chaos_test.py.
#include "sinks/kafka/kafka_sink.hpp"

#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>
#include <set>

#include "support/sink_settings.hpp"

using namespace tailbox;

namespace {

using Values = testing::SettingValues;
using testing::has;

Values base() {
  Values v;
  v["brokers"] = {std::string("127.0.0.1:9092,127.0.0.1:9093"), 2};
  v["topic"] = {std::string("logs"), 3};
  return v;
}

std::string build(const Values& v) { return testing::build_sink<sinks::KafkaSink>(v, ":", "edge1"); }


}  // namespace

TEST_SUITE("sinks.kafka.settings") {
  TEST_CASE("a minimal configuration is transactional, exactly-once, named by broker and topic") {
    std::string r = build(base());
    CHECK(has(r, "ok:kafka:127.0.0.1:9092/logs:exactly-once"));
  }

  TEST_CASE("idempotent mode says at-least-once") {
    Values v = base();
    v["mode"] = {std::string("idempotent"), 4};
    CHECK(has(build(v), ":at-least-once"));
  }

  TEST_CASE("brokers and topic are required") {
    Values v = base();
    v.erase("brokers");
    CHECK(has(build(v), "sink.brokers"));
    v = base();
    v.erase("topic");
    CHECK(has(build(v), "sink.topic"));
  }

  TEST_CASE("bad values name their key") {
    Values v = base();
    v["mode"] = {std::string("exactly"), 4};
    CHECK(has(build(v), "sink.mode"));
    v = base();
    v["key"] = {std::string("random"), 4};
    CHECK(has(build(v), "sink.key"));
    v = base();
    v["compression"] = {std::string("brotli"), 4};
    CHECK(has(build(v), "sink.compression"));
    v = base();
    v["timeout"] = {std::string("10ms"), 4};
    CHECK(has(build(v), "sink.timeout"));
    v = base();
    v["colour"] = {std::string("blue"), 4};
    CHECK(has(build(v), "colour"));
  }

  TEST_CASE("key = field:<name> and key = file are accepted") {
    Values v = base();
    v["key"] = {std::string("field:user"), 4};
    CHECK(has(build(v), "ok:"));
    v["key"] = {std::string("file"), 4};
    CHECK(has(build(v), "ok:"));
    v["key"] = {std::string("field:"), 4};
    CHECK(has(build(v), "sink.key"));
  }

  TEST_CASE("librdkafka properties are checked at start-up; secrets and tailbox's own are refused") {
    Values v = base();
    v["properties"] = {std::vector<std::string>{"security.protocol=SASL_SSL", "sasl.mechanism=PLAIN"}, 5};
    CHECK(has(build(v), "ok:"));
    v["properties"] = {std::vector<std::string>{"no.such.property=1"}, 5};
    CHECK(has(build(v), "no.such.property"));
    v["properties"] = {std::vector<std::string>{"sasl.password=hunter2"}, 5};
    std::string r = build(v);
    CHECK(has(r, "sasl_password_file"));
    CHECK(!has(r, "hunter2"));
    v["properties"] = {std::vector<std::string>{"enable.idempotence=false"}, 5};
    CHECK(has(build(v), "set by tailbox"));
    v["properties"] = {std::vector<std::string>{"justtext"}, 5};
    CHECK(has(build(v), "name=value"));
  }

  TEST_CASE("a password comes from a file or an environment variable, not both") {
    Values v = base();
    v["sasl_password_file"] = {std::string("/etc/tailbox/kafka.pw"), 6};
    CHECK(has(build(v), "ok:"));
    v["sasl_password_env"] = {std::string("KAFKA_PW"), 7};
    CHECK(has(build(v), "not both"));
  }

  TEST_CASE("the progress partition is stable and spreads relays over partitions") {
    CHECK(sinks::kafka_progress_partition("tailbox-edge1", 3) ==
          sinks::kafka_progress_partition("tailbox-edge1", 3));
    std::set<int32_t> seen;
    for (int i = 0; i < 100; ++i) {
      int32_t p = sinks::kafka_progress_partition("tailbox-edge" + std::to_string(i), 6);
      CHECK(p >= 0);
      CHECK(p < 6);
      seen.insert(p);
    }
    CHECK(seen.size() == 6);
  }
}
