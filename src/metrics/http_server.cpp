#include "metrics/http_server.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <algorithm>
#include <chrono>

#include "core/log_limit.hpp"

namespace tailbox::metrics {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

bool parse_listen(const std::string& listen, std::string& host, uint16_t& port) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 >= listen.size()) return false;
  host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) return false;
  try {
    size_t used = 0;
    unsigned long p = std::stoul(listen.substr(colon + 1), &used);
    if (used != listen.size() - colon - 1 || p > 65535) return false;
    port = static_cast<uint16_t>(p);
  } catch (const std::exception&) {
    return false;
  }
  return true;
}

struct HttpServer::Impl : std::enable_shared_from_this<Impl> {
  asio::any_io_executor executor;
  std::string listen;
  Handler handler;
  tcp::acceptor acceptor;
  std::atomic<bool> stopped{false};

  Impl(asio::any_io_executor ex, std::string l, Handler h)
      : executor(ex), listen(std::move(l)), handler(std::move(h)), acceptor(asio::make_strand(ex)) {}

  asio::awaitable<void> session(tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    for (;;) {
      http::request<http::string_body> req;
      stream.expires_after(std::chrono::seconds(10));
      auto [ec, n] = co_await http::async_read(stream, buffer, req, use_tuple);
      if (ec) break;
      http::response<http::string_body> res;
      res.version(req.version());
      res.keep_alive(req.keep_alive());
      res.set(http::field::server, "tailbox");
      if (req.method() != http::verb::get && req.method() != http::verb::head) {
        res.result(http::status::method_not_allowed);
        res.set(http::field::allow, "GET, HEAD");
        res.body() = "only GET\n";
      } else {
        std::string target(req.target());
        std::string path = target.substr(0, target.find('?'));
        Response r = handler(path);
        res.result(static_cast<http::status>(r.status));
        res.set(http::field::content_type, r.content_type);
        res.set("X-Content-Type-Options", "nosniff");
        for (const auto& [name, value] : r.headers) res.set(name, value);
        if (req.method() == http::verb::get) res.body() = std::move(r.body);
      }
      res.prepare_payload();
      stream.expires_after(std::chrono::seconds(10));
      auto [wec, wn] = co_await http::async_write(stream, res, use_tuple);
      if (wec || !res.keep_alive()) break;
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  // An accept that fails (EMFILE: out of descriptors) fails again at once
  // while the cause lasts: back off from 100 ms, doubling to 1 s, and log
  // once per 10 s, so that the loop neither spins nor floods the log.
  asio::awaitable<void> accept_loop() {
    auto self = shared_from_this();
    constexpr std::chrono::milliseconds kFirstDelay{100}, kMaxDelay{1000};
    auto delay = kFirstDelay;
    LogLimiter log_limit{std::chrono::seconds(10)};
    asio::steady_timer timer(acceptor.get_executor());
    while (!stopped.load()) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(executor), use_tuple);
      if (ec) {
        if (stopped.load() || ec == asio::error::operation_aborted) break;
        if (auto held = log_limit.allow("accept"))
          spdlog::warn("metrics endpoint: accept failed: {}{}; retrying in {} ms", ec.message(),
                       *held ? " (and " + std::to_string(*held) + " more times)" : std::string(),
                       delay.count());
        timer.expires_after(delay);
        auto [wec] = co_await timer.async_wait(use_tuple);
        (void)wec;
        delay = std::min(delay * 2, kMaxDelay);
        continue;
      }
      delay = kFirstDelay;
      asio::co_spawn(socket.get_executor(), session(std::move(socket)), asio::detached);
    }
  }
};

HttpServer::HttpServer(asio::any_io_executor executor, std::string listen, Handler handler)
    : impl_(std::make_shared<Impl>(executor, std::move(listen), std::move(handler))) {}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  std::string host;
  uint16_t port = 0;
  if (!parse_listen(impl_->listen, host, port))
    throw std::runtime_error("metrics listen address \"" + impl_->listen + "\" is not host:port");
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) throw std::runtime_error("metrics listen address \"" + host + "\": " + ec.message());
  tcp::endpoint ep(address, port);
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen on " + impl_->listen + ": " + ec.message());
  asio::co_spawn(a.get_executor(), impl_->accept_loop(), asio::detached);
}

void HttpServer::stop() {
  if (impl_->stopped.exchange(true)) return;
  auto impl = impl_;
  asio::post(impl->acceptor.get_executor(), [impl] {
    boost::system::error_code ec;
    impl->acceptor.close(ec);
  });
}

uint16_t HttpServer::port() const {
  boost::system::error_code ec;
  auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

}  // namespace tailbox::metrics
