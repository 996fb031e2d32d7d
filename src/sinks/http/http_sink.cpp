#include "sinks/http/http_sink.hpp"

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "sinks/http/options.hpp"
#include "sinks/http/request.hpp"

namespace tailbox::sinks {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);


namespace {

constexpr size_t kMaxResponseBody = 16u << 20;
constexpr size_t kDetailBodyBytes = 200;

// The first bytes of a response body, on one line, for a log and last_error.
std::string excerpt(std::string_view body) {
  std::string out;
  for (char c : body.substr(0, kDetailBodyBytes))
    out += static_cast<unsigned char>(c) < 0x20 || c == 0x7f ? ' ' : c;
  if (body.size() > kDetailBodyBytes) {
    // Do not cut a UTF-8 sequence in half.
    size_t cut = out.size();
    while (cut > 0 && (static_cast<unsigned char>(out[cut - 1]) & 0xC0) == 0x80) --cut;
    if (cut > 0 && static_cast<unsigned char>(out[cut - 1]) >= 0xC0) out.resize(cut - 1);
  }
  size_t first = out.find_first_not_of(' ');
  out = first == std::string::npos ? "" : out.substr(first);
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (body.size() > kDetailBodyBytes) out += "...";
  return out;
}

// Errors that mean a kept-alive connection was closed by the server while it
// sat in the pool: the request is sent again once, on a new connection.
bool stale_connection(const boost::system::error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::connection_aborted || ec == asio::ssl::error::stream_truncated;
}

using Request = bhttp::request<bhttp::string_body>;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// One pool slot: a keep-alive connection (or none yet) and the strand that
// all of its I/O runs on. Used by one delivery at a time.
struct Slot {
  explicit Slot(asio::any_io_executor ex) : strand(asio::make_strand(ex)) {}
  ~Slot() { close(); }

  bool is_open() const { return plain || tls; }
  void close() {
    boost::system::error_code ignored;
    if (plain) plain->socket().close(ignored);
    if (tls) beast::get_lowest_layer(*tls).socket().close(ignored);
    plain.reset();
    tls.reset();
    buffer.clear();
  }

  asio::strand<asio::any_io_executor> strand;
  std::unique_ptr<beast::tcp_stream> plain;
  std::unique_ptr<TlsStream> tls;
  beast::flat_buffer buffer;
};

using Pool = asio::experimental::concurrent_channel<void(boost::system::error_code, std::shared_ptr<Slot>)>;

// Gives a slot back to the pool however the delivery ends.
struct SlotLease {
  Pool& pool;
  std::shared_ptr<Slot> slot;
  ~SlotLease() {
    if (slot) pool.try_send(boost::system::error_code{}, std::move(slot));
  }
};

// How one try on a connection ended.
struct Attempt {
  Delivery delivery;
  bool stale = false;   // the connection was dead before any answer: try a new one
};

}  // namespace

struct HttpSink::Impl {
  http::Options opt;
  std::string name;
  std::string host_header;        // "host[:port]" as the Host header wants it
  std::string verify_name;        // tls_server_name or the URL's host
  bool verify_name_is_ip = false;
  std::string content_type;
  std::optional<std::pair<std::string, std::string>> auth;   // set by open()
  std::optional<ssl::context> tls_ctx;                        // set by open()
  Pool pool;

  Impl(http::Options o, asio::any_io_executor ex)
      : opt(std::move(o)), pool(ex, static_cast<size_t>(opt.connections)) {
    name = opt.url.display();
    bool v6 = opt.url.host.find(':') != std::string::npos;
    host_header = v6 ? "[" + opt.url.host + "]" : opt.url.host;
    if (opt.url.port != (opt.url.tls ? 443 : 80)) host_header += ":" + std::to_string(opt.url.port);
    verify_name = opt.tls_server_name.empty() ? opt.url.host : opt.tls_server_name;
    verify_name_is_ip = http::is_ip_literal(verify_name);
    content_type = opt.format == http::Format::ndjson ? "application/x-ndjson" : "application/json";
    for (int i = 0; i < opt.connections; ++i)
      pool.try_send(boost::system::error_code{}, std::make_shared<Slot>(ex));
  }

  Delivery failure(std::string_view phase, const boost::system::error_code& ec) const {
    std::string what = ec == beast::error::timeout
                           ? "no answer within the timeout of " + std::to_string(opt.timeout.count()) + " ms"
                           : ec.message();
    return Delivery::retry(std::string(phase) + ": " + what);
  }

  // Built on the caller's strand, so that encoding runs in parallel.
  Request request(std::span<const Record> batch) const {
    Request req{bhttp::verb::post, opt.url.target, 11};
    req.set(bhttp::field::host, host_header);
    req.set(bhttp::field::user_agent, "tailbox/" TAILBOX_VERSION);
    req.set(bhttp::field::content_type, content_type);
    req.set("Idempotency-Key", http::idempotency_key(batch));
    for (const auto& [n, v] : opt.headers) req.set(n, v);
    if (auth) req.set(auth->first, auth->second);
    std::string body;
    body.reserve(batch.size() * 256 + 16);
    http::append_body(body, batch, opt.format, opt.id_field);
    if (opt.gzip) {
      body = http::gzip(body);
      req.set(bhttp::field::content_encoding, "gzip");
    }
    req.body() = std::move(body);
    req.keep_alive(true);
    req.prepare_payload();
    return req;
  }

  Delivery classify(const bhttp::response<bhttp::string_body>& res) const {
    int status = static_cast<int>(res.result_int());
    auto outcome = http::classify(status);
    if (outcome == Delivery::Outcome::delivered) return Delivery::delivered();
    std::string reason(res.reason());
    if (reason.empty()) reason = std::string(bhttp::obsolete_reason(res.result()));
    std::string detail = "HTTP " + std::to_string(status) + " " + reason;
    if (std::string body = excerpt(res.body()); !body.empty()) detail += ": " + body;
    if (http::configuration_problem(status)) {
      detail += status < 400 ? " (redirects are not followed: check the sink's url; rows stay in the outbox)"
                             : " (a configuration problem: check the sink's url, headers and credentials; "
                               "rows stay in the outbox)";
    }
    if (outcome == Delivery::Outcome::reject) return Delivery::reject(detail);
    Delivery d = Delivery::retry(detail);
    if (auto it = res.find(bhttp::field::retry_after); it != res.end())
      d.retry_after = http::parse_retry_after(it->value(), std::chrono::system_clock::now())
                          .value_or(milliseconds(0));
    return d;
  }

  // Opens slot.plain or slot.tls; returns the failure, or nullopt when connected.
  asio::awaitable<std::optional<Delivery>> connect(Slot& s, Clock::time_point deadline) {
    s.close();
    beast::tcp_stream* stream = nullptr;
    if (opt.url.tls) {
      s.tls = std::make_unique<TlsStream>(s.strand, *tls_ctx);
      stream = &beast::get_lowest_layer(*s.tls);
    } else {
      s.plain = std::make_unique<beast::tcp_stream>(s.strand);
      stream = s.plain.get();
    }
    stream->expires_at(deadline);
    boost::system::error_code ec;
    auto address = asio::ip::make_address(opt.url.host, ec);
    if (!ec) {
      std::tie(ec) = co_await stream->async_connect(tcp::endpoint(address, opt.url.port), use_tuple);
    } else {
      // The system resolver has its own timeouts (resolv.conf); it cannot be cancelled.
      tcp::resolver resolver(s.strand);
      auto [rec, endpoints] = co_await resolver.async_resolve(opt.url.host, std::to_string(opt.url.port), use_tuple);
      if (rec) {
        s.close();
        co_return Delivery::retry("resolving " + opt.url.host + ": " + rec.message());
      }
      tcp::endpoint ignored;
      std::tie(ec, ignored) = co_await stream->async_connect(endpoints, use_tuple);
    }
    if (ec) {
      s.close();
      co_return failure("connect", ec);
    }
    stream->socket().set_option(tcp::no_delay(true), ec);
    if (!s.tls) co_return std::nullopt;

    SSL* ssl_handle = s.tls->native_handle();
    if (!verify_name_is_ip) SSL_set_tlsext_host_name(ssl_handle, verify_name.c_str());
    if (opt.tls_verify) {
      int ok = verify_name_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_handle), verify_name.c_str())
                                 : SSL_set1_host(ssl_handle, verify_name.c_str());
      if (ok != 1) {
        s.close();
        co_return Delivery::retry("cannot set the TLS name to verify (" + verify_name + ")");
      }
    }
    auto [hec] = co_await s.tls->async_handshake(ssl::stream_base::client, use_tuple);
    if (hec) {
      long verify = SSL_get_verify_result(ssl_handle);
      s.close();
      if (verify != X509_V_OK && hec != beast::error::timeout)
        co_return Delivery::retry(std::string("TLS handshake: certificate verify failed: ") +
                                  X509_verify_cert_error_string(verify) + " (the server's certificate for \"" +
                                  verify_name + "\" is not trusted: check tls_ca_file and tls_server_name; "
                                  "rows stay in the outbox)");
      co_return failure("TLS handshake", hec);
    }
    co_return std::nullopt;
  }

  template <class Stream>
  asio::awaitable<Attempt> send(Stream& stream, Slot& s, Request& req, Clock::time_point deadline) {
    beast::tcp_stream& tcp_layer = beast::get_lowest_layer(stream);
    tcp_layer.expires_at(deadline);
    auto [wec, written] = co_await bhttp::async_write(stream, req, use_tuple);
    if (wec) {
      s.close();
      co_return Attempt{failure("sending the request", wec), stale_connection(wec)};
    }
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(kMaxResponseBody);
    auto [rec, read] = co_await bhttp::async_read(stream, s.buffer, parser, use_tuple);
    bool too_long = rec == bhttp::error::body_limit && parser.is_header_done();
    if (rec && !too_long) {
      bool stale = !parser.got_some() && stale_connection(rec);
      s.close();
      co_return Attempt{failure("waiting for the response", rec), stale};
    }
    const auto& res = parser.get();
    if (too_long || !res.keep_alive()) s.close();
    else tcp_layer.expires_never();
    co_return Attempt{classify(res), false};
  }

  // One request on the slot's connection (opened when needed), on its strand.
  asio::awaitable<Delivery> exchange(Slot& s, Request& req) {
    auto deadline = Clock::now() + opt.timeout;
    for (int round = 0;; ++round) {
      bool reused = s.is_open();
      if (!reused)
        if (auto failed = co_await connect(s, deadline)) co_return std::move(*failed);
      // Not a ?: of two co_awaits: g++ 12 miscompiles that (the result's strings
      // pointed into a freed coroutine frame).
      Attempt a;
      if (s.tls) a = co_await send(*s.tls, s, req, deadline);
      else a = co_await send(*s.plain, s, req, deadline);
      if (a.stale && reused && round == 0) continue;
      co_return std::move(a.delivery);
    }
  }
};

HttpSink::HttpSink(config::Settings& settings, asio::any_io_executor executor)
    : impl_(std::make_shared<Impl>(http::parse_options(settings), executor)) {}

HttpSink::~HttpSink() = default;

const std::string& HttpSink::name() const { return impl_->name; }

std::string HttpSink::guarantee() const {
  return "exactly-once with a receiver that upserts by the \"" + impl_->opt.id_field +
         "\" field or dedups on the key (tools/receiver, a service keyed on it); "
         "at-least-once otherwise";
}

std::optional<std::string> HttpSink::open(const OpenContext&) {
  const http::Options& o = impl_->opt;
  if (!o.auth_header_file.empty() || !o.auth_header_env.empty())
    impl_->auth = http::read_auth_header(o.auth_header_file, o.auth_header_env);

  if (o.url.tls) {
    ssl::context ctx(ssl::context::tls_client);
    SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
    boost::system::error_code ec;
    auto file_error = [](const std::string& key, const std::string& path, const boost::system::error_code& e) {
      std::error_code fe;
      bool exists = std::filesystem::exists(path, fe);
      return std::runtime_error("cannot load " + key + " " + path + ": " +
                                (exists ? e.message() : std::string("no such file")));
    };
    if (o.tls_ca_file.empty()) ctx.set_default_verify_paths(ec);
    else ctx.load_verify_file(o.tls_ca_file, ec);
    if (ec) {
      if (o.tls_ca_file.empty()) throw std::runtime_error("cannot load the system's CA certificates: " + ec.message());
      throw file_error("tls_ca_file", o.tls_ca_file, ec);
    }
    if (!o.tls_cert_file.empty()) {
      ctx.use_certificate_chain_file(o.tls_cert_file, ec);
      if (ec) throw file_error("tls_cert_file", o.tls_cert_file, ec);
      ctx.use_private_key_file(o.tls_key_file, ssl::context::pem, ec);
      if (ec) throw file_error("tls_key_file", o.tls_key_file, ec);
      if (SSL_CTX_check_private_key(ctx.native_handle()) != 1)
        throw std::runtime_error("tls_key_file " + o.tls_key_file + " does not match tls_cert_file " + o.tls_cert_file);
    }
    ctx.set_verify_mode(o.tls_verify ? ssl::verify_peer : ssl::verify_none);
    impl_->tls_ctx.emplace(std::move(ctx));
    if (!o.tls_verify)
      spdlog::warn("{}: tls_verify = false: the server's certificate and name are NOT checked", impl_->name);
  }
  spdlog::info("{}: {} {}{}, up to {} connections, timeout {} ms{}", impl_->name,
               o.format == http::Format::ndjson ? "NDJSON" : "JSON arrays", "keyed by ", o.id_field,
               o.connections, o.timeout.count(), o.gzip ? ", gzip" : "");
  return std::nullopt;
}

asio::awaitable<Delivery> HttpSink::deliver(std::span<const Record> batch) {
  std::shared_ptr<Impl> impl = impl_;
  std::optional<Request> req;
  std::string error;
  try {
    req.emplace(impl->request(batch));
  } catch (const std::exception& e) {   // out of memory, OpenSSL or zlib refusing
    error = e.what();
  }
  if (!req) co_return Delivery::retry("cannot build the request: " + error);
  auto [ec, slot] = co_await impl->pool.async_receive(use_tuple);
  if (ec || !slot) co_return Delivery::retry("the sink is closing");
  SlotLease lease{impl->pool, slot};
  try {
    co_return co_await asio::co_spawn(slot->strand, impl->exchange(*slot, *req), asio::use_awaitable);
  } catch (const std::exception& e) {
    error = e.what();
  }
  slot->close();   // its state is unknown; nothing runs on it any more
  co_return Delivery::retry("unexpected error: " + error);
}

}  // namespace tailbox::sinks
