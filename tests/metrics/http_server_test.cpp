// The metrics HTTP server, over loopback: a real server on an ephemeral port
// and a real client (Beast), no mock.
#include "metrics/http_server.hpp"

#include <doctest/doctest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <atomic>
#include <string>
#include <thread>

using namespace tailbox;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// A server on 127.0.0.1:0 with its io_context on a thread of its own.
struct Server {
  asio::io_context ioc;
  std::atomic<int> calls{0};
  metrics::HttpServer server{ioc.get_executor(), "127.0.0.1:0",
                             [this](const std::string& path) -> metrics::Response {
                               ++calls;
                               if (path == "/metrics") return {200, "text/plain", "t_up 1\n"};
                               return {404, "text/plain", "no " + path + "\n",
                                       {{"X-Extra", "yes"}}};
                             }};
  std::thread thread;

  Server() {
    server.start();
    thread = std::thread([this] { ioc.run(); });
  }
  ~Server() {
    server.stop();
    ioc.stop();
    thread.join();
  }
};

// Sends `req` on `stream` and reads the answer.
http::response<http::string_body> exchange(beast::tcp_stream& stream,
                                           http::request<http::string_body> req) {
  req.set(http::field::host, "127.0.0.1");
  req.prepare_payload();
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  if (req.method() == http::verb::head) {
    http::response_parser<http::string_body> parser;
    parser.skip(true);   // a HEAD answer has a Content-Length but no body
    http::read(stream, buffer, parser);
    return parser.release();
  }
  http::read(stream, buffer, res);
  return res;
}

beast::tcp_stream connect(asio::io_context& client, uint16_t port) {
  beast::tcp_stream stream(client);
  stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  return stream;
}

}  // namespace

TEST_SUITE("metrics.http_server") {
  TEST_CASE("GET answers the handler's status, type, body and headers; the query is not the path") {
    Server s;
    REQUIRE(s.server.port() != 0);
    asio::io_context client;
    auto stream = connect(client, s.server.port());
    auto res = exchange(stream, {http::verb::get, "/metrics?x=1", 11});
    CHECK(res.result_int() == 200);
    CHECK(res[http::field::content_type] == "text/plain");
    CHECK(res["X-Content-Type-Options"] == "nosniff");
    CHECK(res.body() == "t_up 1\n");
    // Keep-alive: the same connection serves a second request.
    res = exchange(stream, {http::verb::get, "/nope", 11});
    CHECK(res.result_int() == 404);
    CHECK(res.body() == "no /nope\n");
    CHECK(res["X-Extra"] == "yes");
    CHECK(s.calls.load() == 2);
  }

  TEST_CASE("HEAD answers without a body; other methods get 405 without calling the handler") {
    Server s;
    asio::io_context client;
    auto stream = connect(client, s.server.port());
    auto head = exchange(stream, {http::verb::head, "/metrics", 11});
    CHECK(head.result_int() == 200);
    CHECK(head.body().empty());
    auto post = exchange(stream, {http::verb::post, "/metrics", 11});
    CHECK(post.result_int() == 405);
    CHECK(post[http::field::allow] == "GET, HEAD");
    CHECK(s.calls.load() == 1);
  }

  TEST_CASE("a port taken, or an address that is not host:port, fails start() with a message") {
    Server s;
    asio::io_context ioc;
    metrics::HttpServer taken(ioc.get_executor(), "127.0.0.1:" + std::to_string(s.server.port()),
                              [](const std::string&) { return metrics::Response{}; });
    CHECK_THROWS_WITH_AS(taken.start(), doctest::Contains("cannot listen on 127.0.0.1:"),
                         std::runtime_error);
    metrics::HttpServer bad(ioc.get_executor(), "localhost",
                            [](const std::string&) { return metrics::Response{}; });
    CHECK_THROWS_WITH_AS(bad.start(), doctest::Contains("is not host:port"), std::runtime_error);
  }

  TEST_CASE("listen addresses: host:port and [v6]:port") {
    std::string host;
    uint16_t port = 1;
    CHECK(metrics::parse_listen("127.0.0.1:9464", host, port));
    CHECK(host == "127.0.0.1");
    CHECK(port == 9464);
    CHECK(metrics::parse_listen("[::1]:0", host, port));
    CHECK(host == "::1");
    CHECK(port == 0);
    for (const char* bad : {"9464", "host:", ":9464", "host:65536", "host:12a", "[]:80"})
      CHECK_MESSAGE(!metrics::parse_listen(bad, host, port), bad);
  }
}
