// The PostgreSQL sink without a server: settings validation, SQLSTATE
// classification and event times. The sink against a real
// server is tested in tests/integration/postgres_sink_integration_test.py.
#include "sinks/postgres/postgres_sink.hpp"

#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>

#include "support/sink_settings.hpp"

using namespace tailbox;
using sinks::Delivery;
namespace pg = sinks::postgres;

namespace {

using Values = testing::SettingValues;
using testing::has;

Values base() { return {{"conninfo", {std::string("host=127.0.0.1 port=5433 dbname=logs user=tailbox"), 2}}}; }

std::string build(const Values& v) { return testing::build_sink<sinks::PostgresSink>(v, ""); }

}  // namespace

TEST_SUITE("sinks.postgres.settings") {
  TEST_CASE("a minimal configuration is valid and the name shows no user or password") {
    Values v = base();
    v["conninfo"] = {std::string("host=db1 port=5433 dbname=logs user=u password=hunter2"), 2};
    std::string r = build(v);
    CHECK(r == "ok:postgres:db1:5433/logs/tailbox_logs");
    CHECK(r.find("hunter2") == std::string::npos);
  }

  TEST_CASE("conninfo is required") {
    Values v;
    CHECK(build(v).find("sink.conninfo: is required") != std::string::npos);
  }

  TEST_CASE("a malformed conninfo is refused without echoing a password") {
    Values v = base();
    v["conninfo"] = {std::string("host=db1 nonsense_key=1"), 2};
    CHECK(build(v).find("sink.conninfo: not a valid libpq connection string") != std::string::npos);
    v["conninfo"] = {std::string("postgresql://u:s3cr%zzet@db1/logs"), 2};
    std::string r = build(v);
    CHECK(r.find("sink.conninfo") != std::string::npos);
    CHECK(r.find("s3cr") == std::string::npos);
  }

  TEST_CASE("table must be a plain name, optionally schema-qualified") {
    for (std::string bad : {"1logs", "logs;drop table x", "a.b.c", "", "lo-gs", "\"logs\"", ".logs"}) {
      Values v = base();
      v["table"] = {bad, 3};
      CAPTURE(bad);
      CHECK(build(v).find("sink.table: must be a plain SQL name") != std::string::npos);
    }
    Values v = base();
    v["table"] = {std::string("ops.edge_logs"), 3};
    CHECK(build(v) == "ok:postgres:127.0.0.1:5433/logs/ops.edge_logs");
  }

  TEST_CASE("unknown keys are refused by finish()") {
    Values v = base();
    v["pasword_file"] = {std::string("/etc/tailbox/pg"), 4};
    CHECK(build(v).find("sink.pasword_file: unknown key (line 4)") != std::string::npos);
  }

  TEST_CASE("password_file and password_env exclude each other") {
    Values v = base();
    v["password_file"] = {std::string("/etc/tailbox/pg"), 4};
    v["password_env"] = {std::string("PGPASS"), 5};
    CHECK(build(v).find("sink.password_env: set password_file or password_env, not both") !=
          std::string::npos);
  }

  TEST_CASE("timeout, create_table and connections are checked") {
    Values v = base();
    v["timeout"] = {std::string("0"), 4};
    CHECK(build(v).find("sink.timeout: must be more than 0") != std::string::npos);
    v["timeout"] = {std::string("soon"), 4};
    CHECK(build(v).find("sink.timeout: expected a duration") != std::string::npos);
    v = base();
    v["create_table"] = {std::string("yes"), 5};
    CHECK(build(v).find("sink.create_table: expected true or false") != std::string::npos);
    v = base();
    v["connections"] = {int64_t{0}, 6};
    CHECK(build(v).find("sink.connections: must be between 1 and 16") != std::string::npos);
    v["connections"] = {int64_t{4}, 6};
    CHECK(build(v).starts_with("ok:"));
  }
}

TEST_SUITE("sinks.postgres.encoding") {
  TEST_CASE("data exceptions reject the batch; everything else retries") {
    CHECK(pg::classify("22021") == Delivery::Outcome::reject);  // invalid byte sequence / NUL
    CHECK(pg::classify("22001") == Delivery::Outcome::reject);  // string too long
    CHECK(pg::classify("22P02") == Delivery::Outcome::reject);  // invalid text representation
    for (const char* s : {"", "08006", "08001", "57P01", "57014", "40001", "40P01", "53100",
                          "53300", "42P01", "42501", "23505", "XX000"}) {
      CAPTURE(s);
      CHECK(pg::classify(s) == Delivery::Outcome::retry);
    }
    CHECK(pg::connection_lost("08006"));
    CHECK(pg::connection_lost("57P01"));
    CHECK_FALSE(pg::connection_lost("57014"));
    CHECK_FALSE(pg::connection_lost(""));
  }

  TEST_CASE("event time comes from a valid RFC 3339 time or timestamp field") {
    CHECK(pg::event_time_us(R"({"time":"1970-01-01T00:00:01Z"})") == 1'000'000);
    CHECK(pg::event_time_us(R"({"time":"2026-11-27T10:00:00.123456Z"})") ==
          1795773600'123456LL);
    CHECK(pg::event_time_us(R"({"time":"2026-11-27T11:00:00.5+01:00"})") == 1795773600'500000LL);
    CHECK(pg::event_time_us(R"({"timestamp":"2026-11-27 10:00:00-00:30"})") ==
          1795775400'000000LL);
    CHECK(pg::event_time_us(R"({"time":"2024-02-29T00:00:00Z"})").has_value());  // leap day
    CHECK(pg::event_time_us(R"({"time":"yesterday","timestamp":"1970-01-01T00:00:00Z"})") == 0);
    for (const char* bad : {R"({"time":"2025-02-29T00:00:00Z"})", R"({"time":"2026-13-01T00:00:00Z"})",
                            R"({"time":"2026-11-27T24:00:00Z"})", R"({"time":"2026-11-27T10:00:00"})",
                            R"({"time":"2026-11-27"})", R"({"time":1795773600})",
                            R"({"time":"2026-11-27T10:00:00.Z"})", R"({"ts":"2026-11-27T10:00:00Z"})",
                            R"(not json "time")", ""}) {
      CAPTURE(bad);
      CHECK_FALSE(pg::event_time_us(bad).has_value());
    }
  }

  TEST_CASE("a batch as a binary COPY stream: header, 9 columns per row, NULLs, trailer") {
    std::string fields = R"({"time":"2000-01-01T00:00:01.5Z"})";
    std::string line("a\0\xff\\\t\r", 6);  // bytes as they are: the server judges them
    Record with{"k1", "h", "s", "/p", 7, 946'684'800'001, line, fields, ""};
    Record plain{"k2", "h", "s", "/p", 0x0102030405060708LL, 0, "", "", ""};
    std::vector<Record> batch{with, plain};
    std::string out = "left over";
    pg::copy_binary(batch, out);
    auto be32 = [](int32_t v) {
      auto u = static_cast<uint32_t>(v);
      return std::string{char(u >> 24), char(u >> 16), char(u >> 8), char(u)};
    };
    auto be64 = [&](int64_t v) {
      auto u = static_cast<uint64_t>(v);
      return be32(int32_t(u >> 32)) + be32(int32_t(u));
    };
    auto text = [&](std::string_view v) { return be32(int32_t(v.size())) + std::string(v); };
    std::string want("PGCOPY\n\xff\r\n\0", 11);
    want += be32(0) + be32(0);
    want += std::string("\0\x09", 2) + text("k1") + text("h") + text("s") + text("/p");
    want += be32(8) + be64(7);
    want += be32(8) + be64(1'000);      // ingest_ms: 1 ms after 2000-01-01 UTC, in microseconds
    want += be32(8) + be64(1'500'000);  // event_time, from the fields
    want += text(line);
    want += be32(int32_t(fields.size() + 1)) + "\x01" + fields;  // jsonb, version 1
    want += std::string("\0\x09", 2) + text("k2") + text("h") + text("s") + text("/p");
    want += be32(8) + be64(0x0102030405060708LL);
    want += be32(8) + be64(-946'684'800'000'000LL);  // the Unix epoch
    want += be32(-1);                                  // no event time
    want += text("");                                  // an empty line is not NULL
    want += be32(-1);                                  // no fields
    want += "\xff\xff";
    CHECK(out == want);
  }

  TEST_CASE("table names") {
    CHECK(pg::valid_table_name("tailbox_logs"));
    CHECK(pg::valid_table_name("_x9.Logs"));
    CHECK(pg::valid_table_name(std::string(63, 'a')));
    CHECK_FALSE(pg::valid_table_name(std::string(64, 'a')));
    CHECK_FALSE(pg::valid_table_name("a."));
    CHECK_FALSE(pg::valid_table_name("caf\xc3\xa9"));
  }
}
