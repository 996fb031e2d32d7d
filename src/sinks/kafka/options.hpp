// The kafka sink's configuration ([sink] type = "kafka"), read and checked
// once at start-up, without I/O (librdkafka only parses the properties).
// Pure; thread-safe.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "config/settings.hpp"

namespace tailbox::sinks::kafka {

struct Options {
  std::string brokers;                      // required: "host:port,host:port"
  std::string topic;                        // required
  bool transactional = true;                // `mode` "transactional" | "idempotent"
  std::string progress_topic;               // default "<topic>.tailbox-progress"
  std::string transactional_id;             // default "tailbox-<host_id>"
  std::string key_mode = "idempotency_key"; // `key`: "idempotency_key" | "file" | "field"
  std::string key_field;                    // key = "field:<name>"
  bool ndjson = true;                       // `format` "ndjson" | "raw"
  std::string compression = "none";         // none gzip snappy lz4 zstd
  std::chrono::milliseconds timeout{30'000};  // at least 1 s
  std::vector<std::pair<std::string, std::string>> properties;  // passed to librdkafka
  // A secret property, read from a file or the environment when the producer
  // is made (never logged).
  struct Secret {
    std::string property, what, file, env;
  };
  std::vector<Secret> secrets;
};

// Reads every key of the [sink] table the kafka sink knows. Throws
// config::ConfigError naming the key. The caller runs finish().
Options parse_options(config::Settings& settings, const std::string& host_id);

}  // namespace tailbox::sinks::kafka
