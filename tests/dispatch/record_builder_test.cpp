// RecordBuilder's json parser writes valid JSON whatever the line holds.
#include "dispatch/record_builder.hpp"

#include <doctest/doctest.h>

#include <boost/json.hpp>

using namespace tailbox;

namespace {

// The fields (or the parse error) the json parser gives `line`.
std::pair<std::string, std::string> parse_json_line(const std::string& line) {
  config::Config cfg;
  cfg.host_id = "h";
  cfg.sources.push_back({});
  cfg.sources[0].name = "app";
  cfg.sources[0].parser = config::ParserKind::json;
  dispatch::RecordBuilder builder(cfg);
  dispatch::Batch batch;
  outbox::LeasedRow row;
  row.payload = line;
  row.info = std::make_shared<outbox::FileInfo>(outbox::FileInfo{"app", "/logs/a.log", "u1"});
  batch.rows.push_back(row);
  builder.build(batch);
  return {std::string(batch.records[0].fields), std::string(batch.records[0].parse_error)};
}

bool valid_json(const std::string& text) {
  boost::system::error_code ec;
  boost::json::parse(text, ec);
  return !ec;
}

}  // namespace

TEST_SUITE("dispatch.record_builder") {
  TEST_CASE("a number too large for a double keeps its exact text, as a string") {
    auto [fields, error] = parse_json_line(R"({"big":1e999,"neg":-2.5E+400,"ok":1.5,"s":"1e999"})");
    CHECK(error == "");
    CHECK(valid_json(fields));
    auto v = boost::json::parse(fields).as_object();
    CHECK(v.at("big") == "1e999");
    CHECK(v.at("neg") == "-2.5E+400");
    CHECK(v.at("ok") == 1.5);
    CHECK(v.at("s") == "1e999");
  }

  TEST_CASE("huge numbers nested in arrays and objects, and strings with quotes around them") {
    auto [fields, error] = parse_json_line(R"({"a":[1,2e500,{"b":"x\"1e999","c":9e9999}]})");
    CHECK(error == "");
    REQUIRE(valid_json(fields));
    auto v = boost::json::parse(fields);
    CHECK(v.at("a").at(1) == "2e500");
    CHECK(v.at("a").at(2).at("b") == "x\"1e999");
    CHECK(v.at("a").at(2).at("c") == "9e9999");
  }

  TEST_CASE("ordinary lines are unchanged") {
    auto [fields, error] = parse_json_line(R"({"n":12,"x":-0.25,"t":true})");
    CHECK(error == "");
    REQUIRE(valid_json(fields));
    auto v = boost::json::parse(fields);
    CHECK(v.at("n") == 12);
    CHECK(v.at("x") == -0.25);
    CHECK(v.at("t") == true);
  }

  TEST_CASE("quote_huge_numbers rewrites only what overflows") {
    CHECK(dispatch::quote_huge_numbers(R"({"a":1e999,"b":1e2})") == R"({"a":"1e999","b":1e2})");
    CHECK(dispatch::quote_huge_numbers(R"(["\\",-1e309])") == R"(["\\","-1e309"])");
  }
}

namespace {

config::SourceConfig source(const std::string& name, config::ParserKind parser,
                            const std::string& pattern = "") {
  config::SourceConfig s;
  s.name = name;
  s.parser = parser;
  s.pattern = pattern;
  return s;
}

// Three sources: raw, json and regex, on host "web-1".
config::Config three_sources() {
  config::Config cfg;
  cfg.host_id = "web-1";
  cfg.sources.push_back(source("plain", config::ParserKind::raw));
  cfg.sources.push_back(source("app", config::ParserKind::json));
  cfg.sources.push_back(
      source("access", config::ParserKind::regex, R"((?P<ip>\S+) (?<verb>[A-Z]+) (?<path>\S*))"));
  return cfg;
}

outbox::LeasedRow row(const std::string& source, const std::string& uid, int64_t offset,
                      std::string payload) {
  outbox::LeasedRow r;
  r.offset = offset;
  r.ingest_ms = 1700000000123;
  r.payload = std::move(payload);
  r.info = std::make_shared<outbox::FileInfo>(
      outbox::FileInfo{source, "/logs/" + source + ".log", uid});
  return r;
}

std::string text(std::string_view v) { return std::string(v); }

}  // namespace

TEST_SUITE("dispatch.record_builder") {
  TEST_CASE("every record carries its key, host, source, path, offset, time and exact line") {
    dispatch::RecordBuilder builder(three_sources());
    dispatch::Batch batch;
    batch.rows.push_back(row("plain", "00ab12", 0, "first"));
    batch.rows.push_back(row("plain", "00ab12-2", 4096, std::string("bin\0\xff", 5)));
    builder.build(batch);
    REQUIRE(batch.records.size() == 2);
    const Record& a = batch.records[0];
    CHECK(text(a.key) == "web-1/00ab12/0");
    CHECK(text(a.host) == "web-1");
    CHECK(text(a.source) == "plain");
    CHECK(text(a.path) == "/logs/plain.log");
    CHECK(a.offset == 0);
    CHECK(a.ingest_ms == 1700000000123);
    CHECK(text(a.line) == "first");
    CHECK(a.fields.empty());        // parser = raw
    CHECK(a.parse_error.empty());
    const Record& b = batch.records[1];
    CHECK(text(b.key) == "web-1/00ab12-2/4096");
    CHECK(text(b.line) == std::string("bin\0\xff", 5));
    CHECK(batch.payload_bytes() == 10);
  }

  TEST_CASE("regex: named groups become fields, (?P<name>) as well as (?<name>)") {
    dispatch::RecordBuilder builder(three_sources());
    dispatch::Batch batch;
    batch.rows.push_back(row("access", "u1", 7, "10.0.0.1 GET /index.html"));
    builder.build(batch);
    CHECK(batch.records[0].parse_error.empty());
    auto v = boost::json::parse(batch.records[0].fields).as_object();
    CHECK(v.at("ip") == "10.0.0.1");
    CHECK(v.at("verb") == "GET");
    CHECK(v.at("path") == "/index.html");
  }

  TEST_CASE("a line that does not parse is delivered raw, with the reason") {
    dispatch::RecordBuilder builder(three_sources());
    dispatch::Batch batch;
    batch.rows.push_back(row("access", "u1", 0, "no match here"));
    batch.rows.push_back(row("app", "u2", 0, "[1,2]"));
    batch.rows.push_back(row("app", "u2", 6, "{oops"));
    builder.build(batch);
    CHECK(text(batch.records[0].parse_error) == "does not match the source's pattern");
    CHECK(text(batch.records[0].line) == "no match here");
    CHECK(batch.records[0].fields.empty());
    CHECK(text(batch.records[1].parse_error) == "not a JSON object");
    CHECK(text(batch.records[2].parse_error).starts_with("not JSON: "));
    CHECK(text(batch.records[2].line) == "{oops");
  }

  TEST_CASE("regex fields are valid UTF-8: invalid bytes become U+FFFD, the line keeps them") {
    dispatch::RecordBuilder builder(three_sources());
    dispatch::Batch batch;
    batch.rows.push_back(row("access", "u1", 0, "10.0.0.1 GET /caf\xe9"));
    builder.build(batch);
    auto v = boost::json::parse(batch.records[0].fields).as_object();
    CHECK(v.at("path") == "/caf\xef\xbf\xbd");
    CHECK(text(batch.records[0].line) == "10.0.0.1 GET /caf\xe9");
  }

  TEST_CASE("a source the configuration no longer has is delivered raw") {
    dispatch::RecordBuilder builder(three_sources());
    dispatch::Batch batch;
    batch.rows.push_back(row("renamed-away", "u9", 3, "{\"a\":1}"));
    builder.build(batch);
    CHECK(text(batch.records[0].key) == "web-1/u9/3");
    CHECK(batch.records[0].fields.empty());
    CHECK(batch.records[0].parse_error.empty());
  }

  TEST_CASE("deterministic: building a batch again gives the same bytes (a redelivery)") {
    dispatch::RecordBuilder builder(three_sources());
    dispatch::Batch batch;
    batch.rows.push_back(row("app", "u2", 0, R"({"b":1,"a":[1e999]})"));
    batch.rows.push_back(row("access", "u1", 30, "1.2.3.4 PUT /x"));
    batch.rows.push_back(row("access", "u1", 50, "nothing"));
    builder.build(batch);
    std::vector<std::string> first;
    for (const Record& r : batch.records)
      first.push_back(text(r.key) + "|" + text(r.fields) + "|" + text(r.parse_error));
    builder.build(batch);   // the same Batch, its buffers reused
    for (size_t i = 0; i < first.size(); ++i) {
      const Record& r = batch.records[i];
      CHECK(text(r.key) + "|" + text(r.fields) + "|" + text(r.parse_error) == first[i]);
    }
  }

  TEST_CASE("a pattern that does not compile, or has no named group, is a configuration error") {
    config::Config bad = three_sources();
    bad.sources[2].pattern = "(?<ip>[";
    CHECK_THROWS_AS(dispatch::RecordBuilder{bad}, config::ConfigError);
    bad.sources[2].pattern = R"(\S+ (\w+))";
    CHECK_THROWS_AS(dispatch::RecordBuilder{bad}, config::ConfigError);
  }
}
