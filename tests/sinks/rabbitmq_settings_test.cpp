// The RabbitMQ sink without a broker: settings validation, routing keys and
// the classification of broker answers. The sink against a real
// rabbitmq-server is tested in tests/integration/rabbitmq_*_test.py.
#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>

#include "sinks/rabbitmq/classify.hpp"
#include "sinks/rabbitmq/options.hpp"
#include "sinks/rabbitmq/rabbitmq_sink.hpp"

#include "support/sink_settings.hpp"

using namespace tailbox;
namespace rmq = sinks::rabbitmq;

namespace {

using Values = testing::SettingValues;
using testing::has;
using testing::says;

Values base() {
  Values v;
  v["queue"] = {std::string("logs"), 2};
  v["queue_type"] = {std::string("stream"), 3};
  v["password_file"] = {std::string("/etc/tailbox/rabbitmq.password"), 4};
  return v;
}

std::string build(const Values& v) { return testing::build_sink<sinks::RabbitmqSink>(v, " ", "edge1"); }

rmq::Options options(const Values& v) { return testing::parsed_options(v, rmq::parse_options); }

}  // namespace

TEST_SUITE("sinks.rabbitmq.settings") {
  TEST_CASE("a minimal configuration is valid, with the documented defaults") {
    CHECK(says(build(base()), "ok:rabbitmq:logs exactly-once"));
    rmq::Options o = options(base());
    CHECK(o.host == "127.0.0.1");
    CHECK(o.port == 5672);
    CHECK(o.vhost == "/");
    CHECK(o.user == "guest");
    CHECK(o.queue_type == rmq::QueueType::stream);
    CHECK(!o.declare);
    CHECK(o.exchange.empty());
    CHECK(o.routing_key.empty());
    CHECK(o.mandatory);
    CHECK(o.timeout == std::chrono::seconds(10));
    CHECK(o.heartbeat == std::chrono::seconds(30));
    CHECK(o.ndjson);
    CHECK(!o.tls);
  }

  TEST_CASE("classic and quorum queues say at-least-once") {
    Values v = base();
    v["queue_type"] = {std::string("classic"), 3};
    CHECK(says(build(v), "at-least-once"));
    v["queue_type"] = {std::string("quorum"), 3};
    CHECK(says(build(v), "at-least-once: publisher confirms into a quorum queue"));
  }

  TEST_CASE("queue and queue_type are required; queue_type is one of three") {
    Values v = base();
    v.erase("queue_type");
    CHECK(says(build(v), "queue_type"));
    v = base();
    v["queue_type"] = {std::string("lazy"), 3};
    CHECK(says(build(v), "must be one of"));
    v = base();
    v.erase("queue");
    CHECK(says(build(v), "queue"));
    v = base();
    v["queue"] = {std::string("amq.gen-x"), 2};
    CHECK(says(build(v), "amq."));
  }

  TEST_CASE("the password comes from a file or the environment, exactly one") {
    Values v = base();
    v.erase("password_file");
    CHECK(says(build(v), "needs password_file or password_env"));
    v["password_env"] = {std::string("RABBIT_PW"), 5};
    CHECK(says(build(v), "ok:"));
    v["password_file"] = {std::string("/x"), 6};
    CHECK(says(build(v), "not both"));
    v = base();
    v["password"] = {std::string("secret"), 7};
    CHECK(says(build(v), "unknown key"));
  }

  TEST_CASE("an exchange needs a routing key; templates know {host} and {source}") {
    Values v = base();
    v["exchange"] = {std::string("logs-x"), 5};
    CHECK(says(build(v), "routing_key"));
    v["routing_key"] = {std::string("logs.{host}.{source}"), 6};
    CHECK(says(build(v), "ok:"));
    v["routing_key"] = {std::string("logs.{hostname}"), 6};
    CHECK(says(build(v), "placeholders"));
  }

  TEST_CASE("tls keys: port 5671 by default, cert and key together, tls = true needed") {
    Values v = base();
    v["tls"] = {true, 5};
    CHECK(options(v).port == 5671);
    v["tls_cert_file"] = {std::string("/c.pem"), 6};
    CHECK(says(build(v), "go together"));
    v = base();
    v["tls_ca_file"] = {std::string("/ca.pem"), 6};
    CHECK(says(build(v), "needs tls = true"));
  }

  TEST_CASE("durations: timeout above 0, heartbeat 0 or at least 1s") {
    Values v = base();
    v["timeout"] = {std::string("0"), 5};
    CHECK(says(build(v), "timeout"));
    v = base();
    v["heartbeat"] = {std::string("500ms"), 5};
    CHECK(says(build(v), "heartbeat"));
    v["heartbeat"] = {std::string("0"), 5};
    CHECK(says(build(v), "ok:"));
  }
}

TEST_SUITE("sinks.rabbitmq.routing") {
  TEST_CASE("placeholders are replaced by sanitised values; empty template = the queue") {
    rmq::Options o;
    o.queue = "q";
    CHECK(rmq::routing_key_for(o, "edge1", "app") == "q");
    o.routing_key = "logs.{host}.{source}";
    CHECK(rmq::routing_key_for(o, "edge.1", "a*b#c d") == "logs.edge_1.a_b_c_d");
    CHECK(rmq::routing_key_for(o, "", "x") == "logs._.x");
    CHECK(rmq::key_token("ok-1_2") == "ok-1_2");
  }
}

TEST_SUITE("sinks.rabbitmq.classify") {
  using K = rmq::Failure::Kind;
  TEST_CASE("an unroutable (returned) message is rejected with the broker's reason") {
    rmq::Verdict v = rmq::classify({K::returned, 312, "NO_ROUTE"});
    CHECK(v.reject);
    CHECK(says(v.reason, "unroutable"));
    CHECK(says(v.reason, "312"));
    CHECK(says(v.reason, "NO_ROUTE"));
  }
  TEST_CASE("timeouts, nacks, lost connections and broker errors are retried") {
    CHECK(!rmq::classify({K::timeout, 0, ""}).reject);
    CHECK(!rmq::classify({K::nacked, 0, ""}).reject);
    CHECK(!rmq::classify({K::library, 0, "connection lost"}).reject);
    CHECK(!rmq::classify({K::channel_close, 404, "NOT_FOUND - no exchange 'x'"}).reject);
    CHECK(!rmq::classify({K::channel_close, 403, "ACCESS_REFUSED"}).reject);
    CHECK(!rmq::classify({K::connection_close, 320, "CONNECTION_FORCED"}).reject);
    CHECK(!rmq::classify({K::channel_close, 406, "PRECONDITION_FAILED - inequivalent arg"}).reject);
  }
  TEST_CASE("a message the broker refuses for its size is rejected") {
    CHECK(rmq::classify({K::channel_close, 311, "CONTENT_TOO_LARGE"}).reject);
    CHECK(rmq::classify({K::channel_close, 406, "PRECONDITION_FAILED - message size 200 is larger than configured max size 100"}).reject);
  }
}
