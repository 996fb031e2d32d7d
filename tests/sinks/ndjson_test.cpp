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
    CHECK(sinks::base64(std::string_view("\xff\xfe\x00", 3)) == "//4A");
    std::string every;   // every byte value, three times: no line breaks in the output
    for (int i = 0; i < 3 * 256; ++i) every += static_cast<char>(i % 256);
    CHECK(sinks::base64(every) ==
          "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BB"
          "QkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn+AgYKD"
          "hIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmqq6ytrq+wsbKztLW2t7i5uru8vb6/wMHCw8TF"
          "xsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t/g4eLj5OXm5+jp6uvs7e7v8PHy8/T19vf4+fr7/P3+/wABAgMEBQYH"
          "CAkKCwwNDg8QERITFBUWFxgZGhscHR4fICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj9AQUJDREVGR0hJ"
          "SktMTU5PUFFSU1RVVldYWVpbXF1eX2BhYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4SFhoeIiYqL"
          "jI2Oj5CRkpOUlZaXmJmam5ydnp+goaKjpKWmp6ipqqusra6vsLGys7S1tre4ubq7vL2+v8DBwsPExcbHyMnKy8zN"
          "zs/Q0dLT1NXW19jZ2tvc3d7f4OHi4+Tl5ufo6err7O3u7/Dx8vP09fb3+Pn6+/z9/v8AAQIDBAUGBwgJCgsMDQ4P"
          "EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkdISUpLTE1OT1BR"
          "UlNUVVZXWFlaW1xdXl9gYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOEhYaHiImKi4yNjo+QkZKT"
          "lJWWl5iZmpucnZ6foKGio6SlpqeoqaqrrK2ur7CxsrO0tba3uLm6u7y9vr/AwcLDxMXGx8jJysvMzc7P0NHS09TV"
          "1tfY2drb3N3e3+Dh4uPk5ebn6Onq6+zt7u/w8fLz9PX29/j5+vv8/f7/");
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
