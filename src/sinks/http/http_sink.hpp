// HttpSink (type = "http"): POSTs each batch to an HTTP(S) endpoint, as NDJSON
// (one object per line, sinks/ndjson.hpp) or as a JSON array of the same
// objects, each carrying its idempotency key in `id_field`. Exactly-once with a
// receiver that upserts by that field, at-least-once otherwise: see
// docs/sinks/http.md.
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
#include "sinks/http/options.hpp"
#include "sinks/http/request.hpp"
#include "sinks/sink.hpp"

namespace tailbox::sinks {


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
  std::optional<std::string> open(const OpenContext& context) override;
  boost::asio::awaitable<Delivery> deliver(std::span<const Record> batch) override;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace tailbox::sinks
