// HttpServer: a small HTTP/1.1 server (Boost.Beast) for /metrics, /healthz,
// /readyz and the status page. Read-only: GET and HEAD; any other method is
// answered 405 before the handler is called. Keep-alive, a deadline on every
// read and write, one coroutine per connection on the shared io_context.
//
// Thread-safety: start() and port() before or while the io_context runs;
// stop() from any thread. The handler is called on the connection's strand
// and must be thread-safe.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tailbox::metrics {

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers = {};   // extra, e.g. a CSP
};

class HttpServer {
 public:
  using Handler = std::function<Response(const std::string& path)>;

  // `listen` is "host:port" (e.g. "127.0.0.1:9464", "[::1]:0").
  HttpServer(boost::asio::any_io_executor executor, std::string listen, Handler handler);
  ~HttpServer();

  // Binds and starts accepting. Throws std::runtime_error when it cannot bind.
  void start();
  void stop();
  uint16_t port() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Splits "host:port" / "[v6]:port". Returns false when malformed.
bool parse_listen(const std::string& listen, std::string& host, uint16_t& port);

}  // namespace tailbox::metrics
