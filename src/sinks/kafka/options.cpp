#include "sinks/kafka/options.hpp"

#include <librdkafka/rdkafka.h>

namespace tailbox::sinks::kafka {

Options parse_options(config::Settings& s, const std::string& host_id) {
  Options o;
  o.brokers = s.required_string("brokers");
  o.topic = s.required_string("topic");
  o.transactional = s.choice("mode", "transactional", {"transactional", "idempotent"}) == "transactional";
  o.progress_topic = s.string("progress_topic", o.topic + ".tailbox-progress");
  o.transactional_id = s.string("transactional_id", "tailbox-" + host_id);
  if (o.transactional_id.empty()) s.fail("transactional_id", "must not be empty");
  std::string key = s.string("key", "idempotency_key");
  if (key == "idempotency_key" || key == "file") {
    o.key_mode = key;
  } else if (key.rfind("field:", 0) == 0 && key.size() > 6) {
    o.key_mode = "field";
    o.key_field = key.substr(6);
  } else {
    s.fail("key", "must be \"idempotency_key\", \"file\" or \"field:<name>\", got \"" + key + "\"");
  }
  o.ndjson = s.choice("format", "ndjson", {"ndjson", "raw"}) == "ndjson";
  o.compression = s.choice("compression", "none", {"none", "gzip", "snappy", "lz4", "zstd"});
  o.timeout = s.duration("timeout", o.timeout);
  if (o.timeout.count() < 1000) s.fail("timeout", "must be at least 1s");
  for (auto& p : s.string_list("properties", false)) {
    auto eq = p.find('=');
    if (eq == std::string::npos || eq == 0)
      s.fail("properties", "each entry must be \"name=value\" (a librdkafka property), got \"" + p + "\"");
    std::string k = p.substr(0, eq);
    if (k.find("password") != std::string::npos || k == "sasl.oauthbearer.client.secret")
      s.fail("properties", k + " is a secret: use sasl_password_file / sasl_password_env or "
                           "ssl_key_password_file / ssl_key_password_env");
    if (k == "transactional.id" || k == "enable.idempotence" || k == "bootstrap.servers" ||
        k == "acks" || k == "isolation.level")
      s.fail("properties", k + " is set by tailbox (see README, Kafka sink)");
    o.properties.emplace_back(k, p.substr(eq + 1));
  }
  for (auto [what, property] : {std::pair{"sasl_password", "sasl.password"},
                                std::pair{"ssl_key_password", "ssl.key.password"}}) {
    auto source = s.secret(what);
    if (source.given()) o.secrets.push_back({property, what, source.file, source.env});
  }
  // Check the properties now, so a typo is a configuration error at start-up.
  {
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    char err[512];
    for (auto& [k, v] : o.properties)
      if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        s.fail("properties", k + ": " + err);
      }
    rd_kafka_conf_destroy(conf);
  }
  return o;
}

}  // namespace tailbox::sinks::kafka
