#include "sinks/ndjson.hpp"

#include <doctest/doctest.h>

#include <boost/json.hpp>

using namespace tailbox;

namespace {
Record record(std::string_view line) {
  Record r;
  r.key = "edge/abc/10";
  r.host = "edge";
  r.source = "app";
  r.path = "/var/log/a.log";
  r.offset = 10;
  r.ingest_ms = 1'700'000'000'123;
  r.line = line;
  return r;
}
}  // namespace

TEST_SUITE("sinks.ndjson") {
  TEST_CASE("a record is one JSON object on one line, with its key") {
    std::string out;
    sinks::append_ndjson(out, record("say \"hi\"\tand\\bye"));
    REQUIRE(out.back() == '\n');
    CHECK(out.find('\n') == out.size() - 1);
    auto v = boost::json::parse(out).as_object();
    CHECK(v.at("_id").as_string() == "edge/abc/10");
    CHECK(v.at("message").as_string() == "say \"hi\"\tand\\bye");
    CHECK(v.at("offset").as_int64() == 10);
    CHECK(v.at("ingest_time").as_string() == "2023-11-14T22:13:20.123Z");
    CHECK_FALSE(v.contains("message_base64"));
  }

  TEST_CASE("the id field name is configurable") {
    std::string out;
    sinks::append_ndjson(out, record("x"), "id");
    CHECK(boost::json::parse(out).as_object().contains("id"));
  }

  TEST_CASE("invalid UTF-8 keeps its exact bytes in message_base64") {
    std::string out;
    std::string bad = std::string("ok \xff\xfe end");
    sinks::append_ndjson(out, record(bad));
    auto v = boost::json::parse(out).as_object();
    CHECK(v.at("message").as_string() == "ok \xEF\xBF\xBD\xEF\xBF\xBD end");
    CHECK(v.at("message_base64").as_string() == sinks::base64(bad));
  }

  TEST_CASE("parsed fields are embedded as an object") {
    Record r = record("{\"level\":\"info\"}");
    r.fields = "{\"level\":\"info\"}";
    std::string out;
    sinks::append_ndjson(out, r);
    auto v = boost::json::parse(out).as_object();
    CHECK(v.at("fields").as_object().at("level").as_string() == "info");
  }

  TEST_CASE("a record line's key is read back, escaped or not, and only from records") {
    std::string out;
    sinks::append_ndjson(out, record("x"));
    out.pop_back();   // the newline
    CHECK(sinks::ndjson_record_key(out) == "edge/abc/10");
    Record quoted = record("x");
    quoted.key = "ed\"ge/abc/10";
    out.clear();
    sinks::append_ndjson(out, quoted);
    out.pop_back();
    CHECK(sinks::ndjson_record_key(out) == "ed\"ge/abc/10");
    CHECK(sinks::ndjson_record_key(R"({"host":"h","_id":"h/u/5"})") == "h/u/5");
    CHECK(sinks::ndjson_record_key(R"({"_id":5})") == "");
    CHECK(sinks::ndjson_record_key(R"({"_id":"h/u/5",)") == "h/u/5");   // fast path: the key is whole
    CHECK(sinks::ndjson_record_key(R"({"_id":"h/u)") == "");
    CHECK(sinks::ndjson_record_key("plain text") == "");
    CHECK(sinks::ndjson_record_key("") == "");
  }

  TEST_CASE("utf-8 validation and base64") {
    CHECK(sinks::valid_utf8("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80"));
    CHECK_FALSE(sinks::valid_utf8("\xC0\xAF"));          // overlong
    CHECK_FALSE(sinks::valid_utf8("\xED\xA0\x80"));      // surrogate
    CHECK_FALSE(sinks::valid_utf8("\xE2\x82"));          // truncated
    CHECK(sinks::base64("") == "");
    CHECK(sinks::base64("f") == "Zg==");
    CHECK(sinks::base64("fo") == "Zm8=");
    CHECK(sinks::base64("foobar") == "Zm9vYmFy");
  }
}
