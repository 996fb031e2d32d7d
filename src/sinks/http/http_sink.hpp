// HttpSink (type = "http"): POSTs each batch to an HTTP(S) endpoint, as NDJSON
// (one object per line, sinks/ndjson.hpp) or as a JSON array of the same
// objects. Every object carries the record's idempotency key in `id_field`, and
// every request an `Idempotency-Key` header derived from the batch's keys, so a
// receiver that upserts by that field (tools/receiver, any service that dedups
// on the key; an Elasticsearch _bulk body is not implemented yet) makes a
// redelivered record a no-op: exactly-once. Otherwise at-least-once.
//
// HTTP/1.1 keep-alive over Boost.Beast, TLS with OpenSSL (certificates and the
// host name verified unless tls_verify = false), optional gzip bodies. At most
// `connections` requests are in flight; a delivery takes an idle connection
// from the pool (or opens one in that slot) and gives it back afterwards. Each
// request has one deadline (`timeout`) covering connect, TLS handshake, sending
// and the whole response.
//
// Responses are classified by http::classify(): 2xx delivered; 408, 425, 429,
// 5xx, network and TLS failures retry (with Retry-After as a hint); other 4xx
// reject (the dispatcher splits the batch and dead-letters the bad records);
// answers that say the configuration is wrong (3xx, 401, 403, 404, 405, 407,
// 415, 421) and certificate verification failures retry, so that a wrong token
// or URL never dead-letters good rows: they wait in the outbox until fixed.
//
// Thread-safety: construct and open() before deliveries start; deliver() may
// then be called by several workers at once. Each connection is used by one
// delivery at a time, on its own strand.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/settings.hpp"
#include "sinks/sink.hpp"

namespace tailbox::sinks {

namespace http {

enum class Format { ndjson, json_array };

// A parsed http:// or https:// URL. No user info, no fragment.
struct Url {
  bool tls = false;
  std::string host;            // without brackets for IPv6
  uint16_t port = 0;           // 80 / 443 when not written
  std::string target = "/";    // path and query, as sent in the request line
  // "http://host:port/path" without the query (which may hold a token): for logs.
  std::string display() const;
};

// The sink's configuration, with the default next to each field.
struct Options {
  Url url;                                                   // `url`, required
  Format format = Format::ndjson;                            // "ndjson" | "json_array"
  std::string id_field = "_id";                              // the key's field in each object
  std::vector<std::pair<std::string, std::string>> headers;  // extra "Name: value" headers
  std::string auth_header_file;                              // one header line, read at open()
  std::string auth_header_env;                               // or: the variable that holds it
  std::chrono::milliseconds timeout{30'000};                 // per request, connect to last byte
  int connections = 2;                                       // requests in flight at most
  bool gzip = false;                                         // `compression` = "none" | "gzip"
  std::string tls_ca_file;        // PEM CA bundle; default: the system's trust store
  std::string tls_cert_file;      // client certificate chain (PEM), for mutual TLS
  std::string tls_key_file;       // its private key (PEM)
  std::string tls_server_name;    // SNI and the name verified; default: the URL's host
  bool tls_verify = true;         // false: no certificate or host name check (logged)
};

// Reads every key of the [sink] table that the http sink knows, without I/O.
// Throws config::ConfigError naming the key. The caller runs finish().
Options parse_options(config::Settings& settings);

// Parses an http:// or https:// URL; on failure returns nullopt and says why.
std::optional<Url> parse_url(std::string_view text, std::string& why);

// Splits "Name: value" into a header; nullopt unless the name is an HTTP token
// and the value holds no CR, LF or NUL. Surrounding blanks of the value go.
std::optional<std::pair<std::string, std::string>> parse_header_line(std::string_view line);

// What an HTTP status means for the batch (see the file comment).
Delivery::Outcome classify(int status);
// True for statuses that say the sink's configuration is wrong (they retry).
bool configuration_problem(int status);

// A Retry-After value (delay-seconds or an HTTP-date) as a delay from `now`,
// clamped to [0, kMaxRetryAfter]; nullopt when malformed.
inline constexpr std::chrono::milliseconds kMaxRetryAfter{300'000};
std::optional<std::chrono::milliseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now);

// Appends the batch's body: NDJSON (each object ends with "\n") or a JSON array.
void append_body(std::string& out, std::span<const Record> batch, Format format,
                 std::string_view id_field);

// 32 hex digits of SHA-256 over the batch's keys in order: the same rows give
// the same key on every retry and after a restart.
std::string idempotency_key(std::span<const Record> batch);

// gzip (RFC 1952) of `data`, at zlib's fastest level.
std::string gzip(std::string_view data);

}  // namespace http

class HttpSink : public Sink {
 public:
  // Settings: see http::Options (parse_options). No I/O here.
  HttpSink(config::Settings& settings, boost::asio::any_io_executor executor);
  ~HttpSink() override;

  const std::string& name() const override;
  std::string guarantee() const override;
  // Reads the auth header and the TLS files and sets up TLS; connects to
  // nothing (an unreachable receiver is a retry, not a start-up failure).
  // Throws std::runtime_error when a file or the variable is missing or bad;
  // the message never holds the header's value.
  std::optional<std::string> open(const std::optional<std::string>& committed_state) override;
  boost::asio::awaitable<Delivery> deliver(std::span<const Record> batch) override;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace tailbox::sinks
