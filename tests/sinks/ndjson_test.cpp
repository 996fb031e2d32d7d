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

  TEST_CASE("strings are escaped exactly as boost::json::serialize escapes them") {
    // Every byte value, alone and between ASCII, and the strings of the
    // other fields: a record written again must be byte-for-byte the same.
    std::vector<std::string> lines;
    for (int c = 1; c < 0x80; ++c) {
      lines.push_back(std::string(1, static_cast<char>(c)));
      lines.push_back("ab" + std::string(1, static_cast<char>(c)) + "cdefghijklmnop");
    }
    for (size_t pos = 0; pos < 20; ++pos)   // every place in and across 8-byte blocks
      for (char c : {'\x01', '\x1f', '"', '\\', '\n', ' ', '!', '#', '[', ']', '\x7f'})
        lines.push_back(std::string(pos, 'a') + c + "\xC3\xA9" + std::string(20 - pos, 'b'));
    lines.push_back(std::string("nul\0inside", 10));
    lines.push_back("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \x7F end");
    lines.push_back(std::string(37, 'x') + "\"\\/\b\f\n\r\t\x01\x1f");
    for (const std::string& line : lines) {
      Record r = record(line);
      r.path = line;
      std::string out;
      sinks::append_ndjson(out, r);
      std::string want = "\"message\":" + boost::json::serialize(boost::json::string_view(line));
      CHECK_MESSAGE(out.find(want) != std::string::npos, "line bytes: ", line.size());
      std::string path = "\"path\":" + boost::json::serialize(boost::json::string_view(line));
      CHECK(out.find(path) != std::string::npos);
    }
  }

  TEST_CASE("ingest_time is right for consecutive records across second boundaries") {
    const int64_t times[] = {1'700'000'000'999, 1'700'000'001'000, 1'700'000'001'001,
                             1'700'000'000'005, 0, 999, 1'000, 86'399'999, 86'400'000,
                             951'782'400'000 /* 2000-02-29 */, 253'402'300'799'999, -1, -1'500};
    for (int64_t t : times) {
      Record r = record("x");
      r.ingest_ms = t;
      std::string out;
      sinks::append_ndjson(out, r);
      CHECK(out.find("\"ingest_time\":\"" + sinks::rfc3339_ms(t) + "\"") != std::string::npos);
    }
    Record r = record("x");
    r.ingest_ms = 1'700'000'000'999;
    std::string out;
    sinks::append_ndjson(out, r);
    r.ingest_ms = 1'700'000'001'000;
    sinks::append_ndjson(out, r);
    CHECK(out.find("2023-11-14T22:13:20.999Z") != std::string::npos);
    CHECK(out.find("2023-11-14T22:13:21.000Z") != std::string::npos);
  }

  TEST_CASE("valid_utf8 finds a bad byte at any place after runs of ASCII") {
    for (size_t prefix = 0; prefix < 20; ++prefix) {
      std::string ascii(prefix, 'a');
      CHECK(valid_utf8(ascii));
      CHECK(valid_utf8(ascii + "\xC3\xA9" + ascii));
      CHECK(valid_utf8(ascii + "\xF0\x9F\x98\x80"));
      CHECK_FALSE(valid_utf8(ascii + "\xFF" + ascii));
      CHECK_FALSE(valid_utf8(ascii + "\xC3"));                 // cut short
      CHECK_FALSE(valid_utf8(ascii + "\xC0\x80" + ascii));     // overlong
      CHECK_FALSE(valid_utf8(ascii + "\xED\xA0\x80"));         // surrogate
      CHECK_FALSE(valid_utf8("\xE2\x82" + ascii));
    }
  }
}
