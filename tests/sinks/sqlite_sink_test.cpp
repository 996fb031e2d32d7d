// The sqlite inbox sink against a real SQLite file: what a delivered batch
// stores, that a redelivered batch adds nothing (the PRIMARY KEY is the
// idempotency key), that a failing inbox answers retry and loses nothing, and
// its settings. End to end through the relay: integration_e2e_sqlite.
#include "sinks/sqlite/sqlite_sink.hpp"

#include <doctest/doctest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <filesystem>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "support/sink_settings.hpp"
#include "support/temp_dir.hpp"

using namespace tailbox;
using sinks::Delivery;
using testing::has;

namespace {

struct Inbox {
  testing::TempDir dir;
  std::string path = dir / "inbox.db";
  boost::asio::io_context ioc;
  std::unique_ptr<sinks::SqliteSink> sink;

  explicit Inbox(const std::string& table = "") {
    testing::SettingValues v;
    v["path"] = {path, 2};
    if (!table.empty()) v["table"] = {table, 3};
    config::Settings s("sink", v, 1);
    sink = std::make_unique<sinks::SqliteSink>(s, ioc.get_executor());
    s.finish();
    CHECK_FALSE(sink->open({}));   // no state to commit
  }

  // Records "edge1/uid-a/<offset>" for each offset; every third has fields.
  Delivery deliver(const std::vector<int64_t>& offsets) {
    std::vector<std::string> keys, lines;
    for (int64_t o : offsets) {
      keys.push_back("edge1/uid-a/" + std::to_string(o));
      lines.push_back("line at " + std::to_string(o));
    }
    std::vector<Record> records(offsets.size());
    for (size_t i = 0; i < offsets.size(); ++i) {
      Record& r = records[i];
      r.key = keys[i];
      r.host = "edge1";
      r.source = "app";
      r.path = "/var/log/app.log";
      r.offset = offsets[i];
      r.ingest_ms = 1000 + offsets[i];
      r.line = lines[i];
      if (offsets[i] % 3 == 0) r.fields = R"({"n":1})";
    }
    auto f = boost::asio::co_spawn(ioc, sink->deliver(records), boost::asio::use_future);
    ioc.restart();
    ioc.run();
    return f.get();
  }

  int64_t count(const std::string& table = "inbox") {
    SQLite::Database db(path, SQLite::OPEN_READONLY);
    return db.execAndGet("SELECT count(*) FROM " + table).getInt64();
  }
};

}  // namespace

TEST_SUITE("sinks.sqlite") {
  TEST_CASE("a delivered batch is in the inbox, one row per key, every column kept") {
    Inbox in;
    REQUIRE(in.deliver({0, 10, 20}).outcome == Delivery::Outcome::delivered);
    CHECK(in.count() == 3);
    SQLite::Database db(in.path, SQLite::OPEN_READONLY);
    SQLite::Statement q(db, "SELECT key, host, source, path, offset, ingest_time, line, fields "
                            "FROM inbox ORDER BY offset");
    REQUIRE(q.executeStep());
    CHECK(q.getColumn(0).getString() == "edge1/uid-a/0");
    CHECK(q.getColumn(1).getString() == "edge1");
    CHECK(q.getColumn(2).getString() == "app");
    CHECK(q.getColumn(3).getString() == "/var/log/app.log");
    CHECK(q.getColumn(4).getInt64() == 0);
    CHECK(q.getColumn(5).getInt64() == 1000);
    CHECK(q.getColumn(6).getString() == "line at 0");
    CHECK(q.getColumn(7).getString() == R"({"n":1})");
    REQUIRE(q.executeStep());
    CHECK(q.getColumn(7).isNull());   // no fields: NULL, not ""
  }

  TEST_CASE("a batch delivered again (its ack was lost) adds nothing") {
    Inbox in;
    REQUIRE(in.deliver({0, 10, 20}).outcome == Delivery::Outcome::delivered);
    REQUIRE(in.deliver({10, 20, 30}).outcome == Delivery::Outcome::delivered);
    CHECK(in.count() == 4);
  }

  TEST_CASE("a batch of many records (written in blocks) keeps each one's columns; a redelivery adds only new keys") {
    Inbox in;
    std::vector<int64_t> first, second;
    for (int64_t i = 0; i < 100; ++i) first.push_back(i * 10);          // 3 blocks of 32 and 4 more
    for (int64_t i = 50; i < 150; ++i) second.push_back(i * 10);        // half of them again
    REQUIRE(in.deliver(first).outcome == Delivery::Outcome::delivered);
    CHECK(in.count() == 100);
    REQUIRE(in.deliver(second).outcome == Delivery::Outcome::delivered);
    CHECK(in.count() == 150);
    SQLite::Database db(in.path, SQLite::OPEN_READONLY);
    SQLite::Statement q(db, "SELECT key, offset, ingest_time, line, fields FROM inbox ORDER BY offset");
    int64_t n = 0;
    while (q.executeStep()) {
      int64_t offset = n * 10;
      CHECK(q.getColumn(0).getString() == "edge1/uid-a/" + std::to_string(offset));
      CHECK(q.getColumn(1).getInt64() == offset);
      CHECK(q.getColumn(2).getInt64() == 1000 + offset);
      CHECK(q.getColumn(3).getString() == "line at " + std::to_string(offset));
      CHECK(q.getColumn(4).isNull() == (offset % 3 != 0));
      ++n;
    }
    CHECK(n == 150);
  }

  TEST_CASE("batches delivered at once by several workers all arrive, each record once") {
    // Workers deliver concurrently from several threads; the sink writes on
    // its own strand, one transaction at a time.
    Inbox in;
    constexpr int kBatches = 16, kRows = 200;
    std::vector<std::vector<std::string>> keys(kBatches);
    std::vector<std::vector<Record>> batches(kBatches);
    for (int b = 0; b < kBatches; ++b) {
      for (int i = 0; i < kRows; ++i) keys[b].push_back("edge1/uid-" + std::to_string(b) + "/" + std::to_string(i));
      for (int i = 0; i < kRows; ++i) {
        Record r;
        r.key = keys[b][i];
        r.host = "edge1";
        r.source = "app";
        r.path = "/x";
        r.offset = i;
        r.line = keys[b][i];
        batches[b].push_back(r);
      }
    }
    std::vector<std::future<Delivery>> answers;
    for (int b = 0; b < kBatches; ++b)
      answers.push_back(boost::asio::co_spawn(in.ioc, in.sink->deliver(batches[b]), boost::asio::use_future));
    in.ioc.restart();
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) threads.emplace_back([&] { in.ioc.run(); });
    for (auto& t : threads) t.join();
    for (auto& a : answers) CHECK(a.get().outcome == Delivery::Outcome::delivered);
    CHECK(in.count() == kBatches * kRows);
    // Again, all at once: nothing added.
    answers.clear();
    for (int b = 0; b < kBatches; ++b)
      answers.push_back(boost::asio::co_spawn(in.ioc, in.sink->deliver(batches[b]), boost::asio::use_future));
    in.ioc.restart();
    in.ioc.run();
    for (auto& a : answers) CHECK(a.get().outcome == Delivery::Outcome::delivered);
    CHECK(in.count() == kBatches * kRows);
  }

  TEST_CASE("an inbox that fails answers retry, and the batch arrives once it works again") {
    Inbox in("logs");
    {
      SQLite::Database db(in.path, SQLite::OPEN_READWRITE);
      db.exec("ALTER TABLE logs RENAME TO logs_away");
    }
    Delivery d = in.deliver({0, 10});
    CHECK(d.outcome == Delivery::Outcome::retry);
    CHECK(has(d.detail, "inbox " + in.path));
    {
      SQLite::Database db(in.path, SQLite::OPEN_READWRITE);
      db.exec("ALTER TABLE logs_away RENAME TO logs");
    }
    CHECK(in.deliver({0, 10}).outcome == Delivery::Outcome::delivered);
    CHECK(in.count("logs") == 2);
  }

  TEST_CASE("an inbox that cannot be opened makes open() throw, naming it") {
    testing::TempDir dir;
    std::string path = dir / "inbox.db";
    std::filesystem::create_directory(path);   // a directory where the file should be
    testing::SettingValues v;
    v["path"] = {path, 2};
    boost::asio::io_context ioc;
    config::Settings s("sink", v, 1);
    sinks::SqliteSink sink(s, ioc.get_executor());
    const std::string want = "cannot open the sqlite inbox " + path;
    CHECK_THROWS_WITH_AS(sink.open({}), doctest::Contains(want.c_str()), std::runtime_error);
  }

  TEST_CASE("settings: path, table and synchronous are checked") {
    auto build = [](const testing::SettingValues& v) {
      return testing::build_sink<sinks::SqliteSink>(v, " ");
    };
    CHECK(has(build({}), "ok:sqlite:tailbox-inbox.db exactly-once"));
    CHECK(has(build({{"path", {std::string(""), 2}}}), "sink.path: must not be empty"));
    CHECK(has(build({{"table", {std::string("in box"), 3}}}), "sink.table: must be a plain SQL name"));
    CHECK(has(build({{"table", {std::string("1inbox"), 3}}}), "sink.table"));
    CHECK(has(build({{"synchronous", {std::string("off"), 4}}}), "sink.synchronous"));
    CHECK(has(build({{"colour", {std::string("blue"), 5}}}), "colour"));
  }
}
