#include "sinks/rabbitmq/options.hpp"

namespace tailbox::sinks::rabbitmq {

namespace {

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

bool has_control(std::string_view s) {
  for (char ch : s)
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) return true;
  return false;
}

}  // namespace

std::string_view queue_type_name(QueueType type) {
  switch (type) {
    case QueueType::classic: return "classic";
    case QueueType::quorum: return "quorum";
    case QueueType::stream: return "stream";
  }
  return "classic";
}

std::string key_token(std::string_view value) {
  if (value.empty()) return "_";
  std::string out(value);
  for (char& ch : out) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '.' || c == '*' || c == '#' || c <= 0x20 || c == 0x7f) ch = '_';
  }
  return out;
}

std::string routing_key_for(const Options& o, std::string_view host, std::string_view source) {
  if (o.routing_key.empty()) return o.queue;
  std::string out = replace_all(o.routing_key, "{host}", key_token(host));
  return replace_all(std::move(out), "{source}", key_token(source));
}

Options parse_options(config::Settings& s) {
  Options o;
  o.host = s.string("host", o.host);
  if (o.host.empty() || has_control(o.host)) s.fail("host", "must be a host name or address");
  o.tls = s.boolean("tls", false);
  o.port = static_cast<int>(s.integer("port", o.tls ? 5671 : 5672, 1, 65535));
  o.vhost = s.string("vhost", o.vhost);
  if (o.vhost.empty()) s.fail("vhost", "must not be empty (the default vhost is \"/\")");
  o.user = s.string("user", o.user);
  if (o.user.empty()) s.fail("user", "must not be empty");
  auto password = s.secret("password");
  if (!password.given()) s.fail("user", "needs password_file or password_env (the password itself is never in the configuration)");
  o.password_file = password.file;
  o.password_env = password.env;

  o.queue = s.required_string("queue");
  if (o.queue.size() > 255 || has_control(o.queue) || o.queue.starts_with("amq."))
    s.fail("queue", "must be a queue name of at most 255 bytes, without control characters, "
                    "not starting with \"amq.\"");
  if (!s.optional_string("queue_type"))
    s.fail("queue_type", "is required: \"stream\" (exactly-once), \"quorum\" or \"classic\" "
                         "(at-least-once)");
  const std::string type = s.choice("queue_type", "classic", {"classic", "quorum", "stream"});
  o.queue_type = type == "stream" ? QueueType::stream
                 : type == "quorum" ? QueueType::quorum : QueueType::classic;
  o.declare = s.boolean("declare", false);
  o.exchange = s.string("exchange", "");
  if (o.exchange.size() > 255 || has_control(o.exchange) ||
      (o.exchange.starts_with("amq.") && o.exchange != "amq.direct" && o.exchange != "amq.topic" &&
       o.exchange != "amq.fanout" && o.exchange != "amq.headers"))
    s.fail("exchange", "must be an exchange name of at most 255 bytes without control characters");
  o.routing_key = s.string("routing_key", "");
  if (o.routing_key.empty() && !o.exchange.empty())
    s.fail("routing_key", "is required with an exchange (\"\" routes to the queue through the "
                          "default exchange only)");
  if (has_control(o.routing_key)) s.fail("routing_key", "must not hold control characters");
  {
    std::string rest = replace_all(replace_all(o.routing_key, "{host}", ""), "{source}", "");
    if (rest.find('{') != std::string::npos || rest.find('}') != std::string::npos)
      s.fail("routing_key", "knows only the placeholders {host} and {source}");
  }
  if (o.routing_key.size() > 200) s.fail("routing_key", "must be at most 200 bytes (255 with values)");
  o.mandatory = s.boolean("mandatory", true);
  o.timeout = s.duration("timeout", o.timeout);
  if (o.timeout.count() <= 0) s.fail("timeout", "must be more than 0");
  o.heartbeat = s.duration("heartbeat", o.heartbeat);
  if (o.heartbeat.count() < 0 || (o.heartbeat.count() > 0 && o.heartbeat.count() < 1000))
    s.fail("heartbeat", "must be 0 (off) or at least 1s");
  o.ndjson = s.choice("format", "ndjson", {"ndjson", "raw"}) == "ndjson";
  o.tls_ca_file = s.string("tls_ca_file", "");
  o.tls_cert_file = s.string("tls_cert_file", "");
  o.tls_key_file = s.string("tls_key_file", "");
  o.tls_verify = s.boolean("tls_verify", true);
  if (o.tls_cert_file.empty() != o.tls_key_file.empty())
    s.fail(o.tls_cert_file.empty() ? "tls_key_file" : "tls_cert_file",
           "tls_cert_file and tls_key_file go together");
  if (!o.tls && (!o.tls_ca_file.empty() || !o.tls_cert_file.empty()))
    s.fail(o.tls_ca_file.empty() ? "tls_cert_file" : "tls_ca_file", "needs tls = true");
  return o;
}

}  // namespace tailbox::sinks::rabbitmq
