// The rabbitmq sink's configuration ([sink] type = "rabbitmq"), read and
// checked once at start-up, without I/O. Pure functions; thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "config/settings.hpp"

namespace tailbox::sinks::rabbitmq {

enum class QueueType { classic, quorum, stream };

struct Options {
  std::string host = "127.0.0.1";
  int port = 5672;                                  // 5671 when tls = true
  std::string vhost = "/";
  std::string user = "guest";                       // with password_file or password_env
  std::string password_file, password_env;
  std::string queue;                                // required: where the messages land
  QueueType queue_type = QueueType::classic;        // required: the guarantee depends on it
  bool declare = false;                             // declare the queue (durable, x-queue-type)
  std::string exchange;                             // "" = the default exchange
  std::string routing_key;                          // template; "" = the queue's name
  bool mandatory = true;                            // unroutable -> basic.return -> dead row
  std::chrono::milliseconds timeout{10'000};        // per batch (every confirm), connect, calls
  std::chrono::milliseconds heartbeat{30'000};      // 0: off
  bool ndjson = true;                               // `format` "ndjson" | "raw"
  bool tls = false;
  std::string tls_ca_file, tls_cert_file, tls_key_file;
  bool tls_verify = true;                           // peer certificate and host name
};

// Reads every key of the [sink] table the rabbitmq sink knows. Throws
// config::ConfigError naming the key. The caller runs finish().
Options parse_options(config::Settings& settings);

std::string_view queue_type_name(QueueType type);

// A value made safe as part of a routing key: '.', '*', '#', whitespace and
// control characters become '_'; an empty value becomes "_".
std::string key_token(std::string_view value);

// The routing key for one record: the template with {host} and {source}
// replaced by their key_token()s, or the queue's name when the template is "".
std::string routing_key_for(const Options& o, std::string_view host, std::string_view source);

}  // namespace tailbox::sinks::rabbitmq
