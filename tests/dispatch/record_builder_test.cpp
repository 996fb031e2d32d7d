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
