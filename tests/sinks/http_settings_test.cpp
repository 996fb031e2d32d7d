// The http sink without a server: settings validation, URL parsing, response
// classification, Retry-After, body encoding, idempotency keys and gzip. The
// sink against a real receiver (tools/receiver, with TLS, failures and stalls)
// is tested in tests/integration/http_sink_integration_test.py.
#include "sinks/http/http_sink.hpp"

#include <doctest/doctest.h>
#include <zlib.h>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <vector>

#include "support/sink_settings.hpp"

using namespace tailbox;
using sinks::Delivery;
namespace http = sinks::http;

namespace {

using Values = testing::SettingValues;
using testing::has;

Values base() { return {{"url", {std::string("http://127.0.0.1:9200/_bulk"), 2}}}; }

std::string build(const Values& v) { return testing::build_sink<sinks::HttpSink>(v, ""); }


Record record(std::string_view key, std::string_view line) {
  Record r;
  r.key = key;
  r.host = "edge";
  r.source = "app";
  r.path = "/var/log/a.log";
  r.offset = 10;
  r.ingest_ms = 1'700'000'000'123;
  r.line = line;
  return r;
}

std::string gunzip(const std::string& data) {
  z_stream zs{};
  REQUIRE(inflateInit2(&zs, 15 + 16) == Z_OK);
  std::string out(data.size() * 20 + 1024, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  int rc = inflate(&zs, Z_FINISH);
  inflateEnd(&zs);
  REQUIRE(rc == Z_STREAM_END);
  out.resize(zs.total_out);
  return out;
}

}  // namespace

TEST_SUITE("sinks.http.settings") {
  TEST_CASE("a minimal configuration is valid and the name shows no query") {
    Values v = base();
    v["url"] = {std::string("https://logs.example.com/ingest?token=hunter2"), 2};
    std::string r = build(v);
    CHECK(r == "ok:https://logs.example.com:443/ingest");
  }

  TEST_CASE("url is required and must be http(s) with a host and a valid port") {
    CHECK(has(build(Values{}), "sink.url: is required"));
    for (const char* bad : {"ftp://host/x", "127.0.0.1:9200", "http://", "http://:80/x", "http://host:0/",
                            "http://host:65536/", "http://host:12a/", "http://host/a b", "http://[::1/x",
                            "http://host/x#frag", "http://ho st/"}) {
      Values v = base();
      v["url"] = {std::string(bad), 2};
      std::string r = build(v);
      INFO(bad, " -> ", r);
      CHECK(has(r, "sink.url: "));
      CHECK(has(r, "(line 2)"));
    }
  }

  TEST_CASE("credentials in the url are refused without echoing them") {
    Values v = base();
    v["url"] = {std::string("https://user:s3cret@host/x"), 2};
    std::string r = build(v);
    CHECK(has(r, "sink.url: must not hold a user or password"));
    CHECK_FALSE(has(r, "s3cret"));
  }

  TEST_CASE("an unknown key is rejected by name") {
    Values v = base();
    v["timout"] = {std::string("5s"), 7};
    CHECK(has(build(v), "sink.timout: unknown key (line 7)"));
  }

  TEST_CASE("values are checked: format, compression, timeout, connections, id_field") {
    auto with = [](const char* key, config::SettingValue value) {
      Values v = base();
      v[key] = value;
      return build(v);
    };
    CHECK(has(with("format", {std::string("xml"), 3}), "sink.format: must be one of"));
    CHECK(has(with("compression", {std::string("zstd"), 3}), "sink.compression: must be one of"));
    CHECK(has(with("timeout", {std::string("0"), 3}), "sink.timeout: must be more than 0"));
    CHECK(has(with("timeout", {std::string("soon"), 3}), "sink.timeout: expected a duration"));
    CHECK(has(with("connections", {int64_t(0), 3}), "sink.connections: must be between 1 and 64"));
    CHECK(has(with("id_field", {std::string(""), 3}), "sink.id_field: must not be empty"));
    CHECK(has(with("format", {std::string("json_array"), 3}), "ok:"));
    CHECK(has(with("compression", {std::string("gzip"), 3}), "ok:"));
  }

  TEST_CASE("headers must be \"Name: value\", not the ones the sink sets, and are not echoed") {
    Values v = base();
    v["headers"] = {std::vector<std::string>{"X-Tenant: a", "X-Other:b"}, 4};
    CHECK(has(build(v), "ok:"));
    v["headers"] = {std::vector<std::string>{"X-Tenant: a", "Bearer s3cret"}, 4};
    std::string r = build(v);
    CHECK(has(r, "sink.headers: entry 2 is not a header line"));
    CHECK_FALSE(has(r, "s3cret"));
    v["headers"] = {std::vector<std::string>{"Content-Length: 5"}, 4};
    CHECK(has(build(v), "\"Content-Length\" is set by the sink"));
    v["headers"] = {std::vector<std::string>{"Bad Name: x"}, 4};
    CHECK(has(build(v), "entry 1 is not a header line"));
  }

  TEST_CASE("auth_header_file and auth_header_env exclude each other") {
    Values v = base();
    v["auth_header_file"] = {std::string("/etc/tailbox/token"), 5};
    v["auth_header_env"] = {std::string("TOKEN"), 6};
    CHECK(has(build(v), "sink.auth_header_env: give auth_header_file or auth_header_env, not both"));
    v.erase("auth_header_file");
    v["auth_header_env"] = {std::string("1TOKEN"), 6};
    CHECK(has(build(v), "sink.auth_header_env: must be an environment variable name"));
  }

  TEST_CASE("tls keys need an https url; a client certificate needs its key") {
    Values v = base();
    v["tls_ca_file"] = {std::string("/etc/ca.pem"), 5};
    CHECK(has(build(v), "sink.tls_ca_file: needs an https:// url"));
    v["url"] = {std::string("https://127.0.0.1:9200/_bulk"), 2};
    CHECK(has(build(v), "ok:"));
    v["tls_cert_file"] = {std::string("/etc/client.pem"), 6};
    CHECK(has(build(v), "tls_cert_file and tls_key_file go together"));
    v["tls_key_file"] = {std::string("/etc/client.key"), 7};
    CHECK(has(build(v), "ok:"));
    Values w = base();
    w["tls_verify"] = {false, 3};
    CHECK(has(build(w), "sink.tls_verify: needs an https:// url"));
  }
}

TEST_SUITE("sinks.http") {
  TEST_CASE("urls: default ports, IPv6, query kept in the target") {
    std::string why;
    auto u = http::parse_url("HTTPS://Logs.example.com?pipeline=x", why);
    REQUIRE(u);
    CHECK(u->tls);
    CHECK(u->port == 443);
    CHECK(u->target == "/?pipeline=x");
    u = http::parse_url("http://[::1]:8080/a/b?c=d", why);
    REQUIRE(u);
    CHECK(u->host == "::1");
    CHECK(u->port == 8080);
    CHECK(u->target == "/a/b?c=d");
    CHECK(u->display() == "http://[::1]:8080/a/b");
  }

  TEST_CASE("statuses: 2xx delivered; 408/425/429/5xx retry; other 4xx reject; configuration problems retry") {
    for (int s : {200, 201, 204, 299}) CHECK(http::classify(s) == Delivery::Outcome::delivered);
    for (int s : {408, 425, 429, 500, 502, 503, 504, 599}) CHECK(http::classify(s) == Delivery::Outcome::retry);
    for (int s : {400, 409, 413, 422}) CHECK(http::classify(s) == Delivery::Outcome::reject);
    for (int s : {301, 302, 307, 401, 403, 404, 405, 407, 415, 421}) {
      CHECK(http::classify(s) == Delivery::Outcome::retry);
      CHECK(http::configuration_problem(s));
    }
    CHECK_FALSE(http::configuration_problem(400));
  }

  TEST_CASE("Retry-After: seconds or an HTTP-date, clamped") {
    auto now = std::chrono::system_clock::from_time_t(784111777);   // Sun, 06 Nov 1994 08:49:37 GMT
    using std::chrono::milliseconds;
    CHECK(http::parse_retry_after("1", now) == milliseconds(1000));
    CHECK(http::parse_retry_after(" 120 ", now) == milliseconds(120'000));
    CHECK(http::parse_retry_after("99999999999", now) == http::kMaxRetryAfter);
    CHECK(http::parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now) == milliseconds(10'000));
    CHECK(http::parse_retry_after("Sunday, 06-Nov-94 08:49:42 GMT", now) == milliseconds(5'000));
    CHECK(http::parse_retry_after("Sun Nov  6 08:49:40 1994", now) == milliseconds(3'000));
    CHECK(http::parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now) == milliseconds(0));
    CHECK(http::parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now) == http::kMaxRetryAfter);
    CHECK_FALSE(http::parse_retry_after("soon", now));
    CHECK_FALSE(http::parse_retry_after("-5", now));
  }

  TEST_CASE("bodies: NDJSON lines or one JSON array of the same objects, keyed by id_field") {
    Record a = record("edge/abc/10", "one \"quoted\"");
    Record b = record("edge/abc/30", "two");
    std::vector<Record> batch{a, b};
    std::string nd;
    http::append_body(nd, batch, http::Format::ndjson, "id");
    CHECK(std::count(nd.begin(), nd.end(), '\n') == 2);
    CHECK(boost::json::parse(nd.substr(0, nd.find('\n'))).as_object().at("id").as_string() == "edge/abc/10");
    std::string arr;
    http::append_body(arr, batch, http::Format::json_array, "_id");
    auto v = boost::json::parse(arr).as_array();
    REQUIRE(v.size() == 2);
    CHECK(v[0].as_object().at("message").as_string() == "one \"quoted\"");
    CHECK(v[1].as_object().at("_id").as_string() == "edge/abc/30");
    std::string empty;
    http::append_body(empty, std::span<const Record>(), http::Format::json_array, "_id");
    CHECK(boost::json::parse(empty).as_array().empty());
  }

  TEST_CASE("the Idempotency-Key depends on the batch's keys only") {
    std::vector<Record> one{record("edge/abc/10", "x"), record("edge/abc/30", "y")};
    std::vector<Record> same{record("edge/abc/10", "other bytes"), record("edge/abc/30", "y")};
    std::vector<Record> half{record("edge/abc/10", "x")};
    std::string k = http::idempotency_key(one);
    CHECK(k.size() == 32);
    CHECK(k == http::idempotency_key(same));
    CHECK(k != http::idempotency_key(half));
  }

  TEST_CASE("gzip round-trips") {
    std::string text;
    for (int i = 0; i < 5000; ++i) text += "line " + std::to_string(i) + " of a log\n";
    std::string z = http::gzip(text);
    CHECK(z.size() < text.size() / 3);
    CHECK(gunzip(z) == text);
    CHECK(gunzip(http::gzip("")).empty());
  }

  TEST_CASE("open() reads the auth header and says what is wrong without showing it") {
    boost::asio::io_context ioc;
    Values v = base();
    v["auth_header_env"] = {std::string("TAILBOX_TEST_AUTH_HEADER"), 5};
    config::Settings s("sink", v, 1);
    sinks::HttpSink sink(s, ioc.get_executor());
    unsetenv("TAILBOX_TEST_AUTH_HEADER");
    CHECK_THROWS_WITH_AS(sink.open({}), doctest::Contains("is not set"), std::runtime_error);
    setenv("TAILBOX_TEST_AUTH_HEADER", "Bearer s3cret", 1);
    try {
      sink.open({});
      FAIL("a header line without a name was accepted");
    } catch (const std::runtime_error& e) {
      CHECK(has(e.what(), "must hold one header line"));
      CHECK_FALSE(has(e.what(), "s3cret"));
    }
    setenv("TAILBOX_TEST_AUTH_HEADER", "Authorization: Bearer s3cret\n", 1);
    CHECK_NOTHROW(sink.open({}));
    unsetenv("TAILBOX_TEST_AUTH_HEADER");
  }

  TEST_CASE("open() names a missing CA file") {
    boost::asio::io_context ioc;
    Values v = base();
    v["url"] = {std::string("https://127.0.0.1:9200/_bulk"), 2};
    v["tls_ca_file"] = {std::string("/nonexistent/ca.pem"), 3};
    config::Settings s("sink", v, 1);
    sinks::HttpSink sink(s, ioc.get_executor());
    CHECK_THROWS_WITH_AS(sink.open({}),
                         doctest::Contains("cannot load tls_ca_file /nonexistent/ca.pem: no such file"),
                         std::runtime_error);
  }
}
