// The postgres sink's options and statements, without a server.
#include "sinks/postgres/options.hpp"

#include <doctest/doctest.h>

#include "sinks/postgres/statements.hpp"

using namespace tailbox;
namespace pg = sinks::postgres;

namespace {

using Values = std::map<std::string, config::SettingValue>;

// parse_options() then finish(), as the registry does; "ok" or the error.
std::string parse(Values v, pg::Options* out = nullptr) {
  config::Settings s("sink", v, 1);
  try {
    pg::Options o = pg::parse_options(s);
    s.finish();
    if (out) *out = o;
    return "ok";
  } catch (const config::ConfigError& e) {
    return e.what();
  }
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_SUITE("sinks.postgres.options") {
  TEST_CASE("the defaults sit next to the fields") {
    pg::Options o;
    REQUIRE(parse({{"conninfo", {std::string("host=db dbname=logs"), 2}}}, &o) == "ok");
    CHECK(o.conninfo == "host=db dbname=logs");
    CHECK(o.table == "tailbox_logs");
    CHECK_FALSE(o.create_table);
    CHECK(o.timeout == std::chrono::milliseconds(30'000));
    CHECK(o.connections == 1);
    CHECK(o.password_file.empty());
    CHECK(o.password_env.empty());
  }

  TEST_CASE("every key is checked and named") {
    const config::SettingValue ci{std::string("host=db"), 2};
    CHECK(has(parse({}), "conninfo"));
    CHECK(has(parse({{"conninfo", {std::string("host='unterminated"), 2}}}), "not a valid libpq connection string"));
    CHECK(has(parse({{"conninfo", {std::string("password='x"), 2}}}), "details withheld"));
    CHECK(has(parse({{"conninfo", ci}, {"password_file", {std::string("/p"), 3}}, {"password_env", {std::string("P"), 4}}}),
              "not both"));
    CHECK(has(parse({{"conninfo", ci}, {"password_file", {std::string(""), 3}}}), "must not be empty"));
    CHECK(has(parse({{"conninfo", ci}, {"table", {std::string("logs; DROP"), 3}}}), "table"));
    CHECK(has(parse({{"conninfo", ci}, {"timeout", {std::string("0s"), 3}}}), "timeout"));
    CHECK(has(parse({{"conninfo", ci}, {"connections", {int64_t(17), 3}}}), "connections"));
    CHECK(has(parse({{"conninfo", ci}, {"tabel", {std::string("x"), 3}}}), "tabel"));
    pg::Options o;
    REQUIRE(parse({{"conninfo", ci}, {"table", {std::string("app.logs"), 3}}, {"create_table", {true, 4}},
                   {"connections", {int64_t(4), 5}}, {"password_env", {std::string("PGPASS"), 6}}}, &o) == "ok");
    CHECK(o.table == "app.logs");
    CHECK(o.create_table);
    CHECK(o.connections == 4);
    CHECK(o.password_env == "PGPASS");
  }

  TEST_CASE("the name shows where it writes, never a password") {
    CHECK(pg::target_name("host=db port=5433 dbname=logs password=secret", "t") == "postgres:db:5433/logs/t");
    CHECK(pg::target_name("postgresql://u:secret@h/d", "t") == "postgres:h/d/t");
    CHECK(pg::one_line("a\n\tb  c\n") == "a b c");
  }

  TEST_CASE("the statements name the table and the set-up plans the INSERT") {
    std::string insert = pg::insert_sql("app.logs");
    CHECK(insert.starts_with("INSERT INTO app.logs (key, host,"));
    CHECK(insert.ends_with("ON CONFLICT (key) DO NOTHING"));
    CHECK_FALSE(has(pg::setup_sql("app.logs", false), "CREATE TABLE"));
    std::string setup = pg::setup_sql("app.logs", true);
    CHECK(setup.starts_with("CREATE TABLE IF NOT EXISTS app.logs ("));
    CHECK(has(setup, "AS " + insert + ";\nEXPLAIN (COSTS OFF) EXECUTE tailbox_check"));
    CHECK(pg::copy_sql("app.logs") ==
          "COPY app.logs (key, host, source, path, file_offset, ingest_time, event_time, message, "
          "fields) FROM STDIN (FORMAT binary)");
    CHECK(pg::copy_check_sql("app.logs").ends_with("WHERE c.oid = 'app.logs'::regclass"));
  }
}
