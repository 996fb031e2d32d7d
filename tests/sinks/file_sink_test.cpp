#include "sinks/file/file_sink.hpp"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <fstream>

#include "support/temp_dir.hpp"

using namespace tailbox;

namespace {

config::Settings settings(const std::string& path, const std::string& format = "raw") {
  std::map<std::string, config::SettingValue> v;
  v["path"] = {path, 1};
  v["format"] = {format, 2};
  return config::Settings("sink", v, 1);
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

sinks::Delivery deliver(sinks::FileSink& sink, std::vector<std::string>& lines) {
  std::vector<Record> records(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) records[i].line = lines[i];
  boost::asio::io_context ioc;
  auto f = boost::asio::co_spawn(ioc, sink.deliver(records), boost::asio::use_future);
  ioc.run();
  return f.get();
}

// Records with keys: each key's line is "line <key>".
sinks::Delivery deliver_keys(sinks::FileSink& sink, const std::vector<std::string>& keys) {
  std::vector<std::string> lines;
  for (const auto& k : keys) lines.push_back("line " + k);
  std::vector<Record> records(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    records[i].key = keys[i];
    records[i].line = lines[i];
  }
  boost::asio::io_context ioc;
  auto f = boost::asio::co_spawn(ioc, sink.deliver(records), boost::asio::use_future);
  ioc.run();
  return f.get();
}

std::map<std::string, int> ids_in(const std::string& path) {
  std::map<std::string, int> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    auto at = line.find("\"_id\":\"");
    REQUIRE(at != std::string::npos);
    auto start = at + 7;
    ++out[line.substr(start, line.find('"', start) - start)];
  }
  return out;
}

}  // namespace

TEST_SUITE("sinks.file") {
  TEST_CASE("without a committed state, NDJSON records the output already holds are not written again") {
    testing::TempDir dir;
    std::string path = dir / "out.ndjson";
    {
      auto s = settings(path, "ndjson");
      sinks::FileSink sink(s);
      sink.open({});
      CHECK(deliver_keys(sink, {"edge1/aa/0", "edge1/aa/10", "edge1/bb/0"}).outcome ==
            sinks::Delivery::Outcome::delivered);
    }
    // A new outbox (no sink state) delivers the same keys again, mixed with new ones.
    auto s = settings(path, "ndjson");
    sinks::FileSink sink(s);
    CHECK(sink.open({}));
    auto d = deliver_keys(sink, {"edge1/aa/10", "edge1/cc/0", "edge1/bb/0", "edge1/aa/5", "edge2/aa/0"});
    CHECK(d.outcome == sinks::Delivery::Outcome::delivered);
    CHECK(sink.skipped() == 2);
    auto ids = ids_in(path);
    CHECK(ids.size() == 6);
    CHECK(ids["edge1/cc/0"] == 1);
    CHECK(ids["edge1/aa/0"] == 1);
    CHECK(ids["edge1/aa/10"] == 1);
    CHECK(ids["edge1/bb/0"] == 1);
    CHECK(ids["edge1/aa/5"] == 1);
    CHECK(ids["edge2/aa/0"] == 1);
  }

  TEST_CASE("a restart before a new outbox delivered everything again still leaves out old records") {
    testing::TempDir dir;
    std::string path = dir / "out.ndjson";
    {
      auto s = settings(path, "ndjson");
      sinks::FileSink sink(s);
      sink.open({});
      (void)deliver_keys(sink, {"edge1/aa/0", "edge1/aa/10", "edge1/aa/20"});
    }
    std::optional<std::string> state;
    {
      auto s = settings(path, "ndjson");
      sinks::FileSink sink(s);
      state = sink.open({});                    // a new outbox: no state
      state = deliver_keys(sink, {"edge1/aa/0", "edge1/bb/0"}).state;   // acked
    }
    // The relay restarts with that state; the new outbox still holds aa/10, aa/20.
    auto s = settings(path, "ndjson");
    sinks::FileSink sink(s);
    CHECK_FALSE(sink.open(state));
    (void)deliver_keys(sink, {"edge1/aa/10", "edge1/aa/20", "edge1/bb/10"});
    CHECK(sink.skipped() == 2);
    auto ids = ids_in(path);
    CHECK(ids.size() == 5);
    for (const auto& [id, n] : ids) CHECK_MESSAGE(n == 1, id);
  }

  TEST_CASE("with a committed state the output is not read for keys (nothing skipped)") {
    testing::TempDir dir;
    std::string path = dir / "out.ndjson";
    auto s = settings(path, "ndjson");
    std::optional<std::string> state;
    {
      sinks::FileSink sink(s);
      sink.open({});
      state = deliver_keys(sink, {"edge1/aa/0"}).state;
    }
    auto s2 = settings(path, "ndjson");
    sinks::FileSink sink(s2);
    CHECK_FALSE(sink.open(state));
    (void)deliver_keys(sink, {"edge1/aa/0"});   // a redelivery the cut already handles
    CHECK(sink.skipped() == 0);
  }

  TEST_CASE("a delivered batch is on disk and its size is the state") {
    testing::TempDir dir;
    auto s = settings(dir / "out.log");
    sinks::FileSink sink(s);
    sink.open({});
    std::vector<std::string> lines{"a", "bb"};
    auto d = deliver(sink, lines);
    CHECK(d.outcome == sinks::Delivery::Outcome::delivered);
    REQUIRE(d.state);
    CHECK(d.state->ends_with(":5"));
    CHECK(read(dir / "out.log") == "a\nbb\n");
    CHECK(sink.serial());
  }

  TEST_CASE("at start, bytes past the committed size are cut (unconfirmed batch)") {
    testing::TempDir dir;
    std::string path = dir / "out.log";
    std::optional<std::string> committed;
    {
      auto s = settings(path);
      sinks::FileSink sink(s);
      sink.open({});
      std::vector<std::string> first{"one"};
      committed = deliver(sink, first).state;      // acked
      std::vector<std::string> second{"two"};
      (void)deliver(sink, second);                  // written, never acked (crash)
    }
    std::ofstream(path, std::ios::app) << "torn-par";   // a torn write on top
    auto s = settings(path);
    sinks::FileSink sink(s);
    sink.open(committed);
    CHECK(read(path) == "one\n");
    std::vector<std::string> again{"two"};
    auto d = deliver(sink, again);
    CHECK(read(path) == "one\ntwo\n");
    CHECK(d.state->ends_with(":8"));
  }

  TEST_CASE("first use records the starting size before anything is written") {
    testing::TempDir dir;
    std::string path = dir / "out.log";
    std::ofstream(path) << "old\n";
    std::optional<std::string> initial;
    {
      auto s = settings(path);
      sinks::FileSink sink(s);
      initial = sink.open({});
      REQUIRE(initial);
      CHECK(initial->ends_with(":4"));
      std::vector<std::string> lines{"new"};
      (void)deliver(sink, lines);   // written, then a crash before the ack
    }
    auto s = settings(path);
    sinks::FileSink sink(s);
    CHECK_FALSE(sink.open(initial));   // a known file: nothing new to record
    CHECK(read(path) == "old\n");
  }

  TEST_CASE("a different file at the path is appended to, not cut") {
    testing::TempDir dir;
    std::string path = dir / "out.log";
    std::ofstream(path) << "someone else's\n";
    auto s = settings(path);
    sinks::FileSink sink(s);
    auto fresh = sink.open({std::string("1:2:3")});   // state of another inode
    CHECK(fresh);
    std::vector<std::string> lines{"x"};
    deliver(sink, lines);
    CHECK(read(path) == "someone else's\nx\n");
  }
}
