// The Tailer on real files: events and polling, watchers, .gz files,
// ignore_older, multiline records, long lines and truncations (see
// tail_relay.hpp for the fixture).
#include "tail/tailer.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "tail/tail_relay.hpp"
#include "tail/watcher.hpp"

using namespace tailbox;
using namespace tailbox::testing;
using namespace std::chrono_literals;

TEST_SUITE("tail.tailer") {
  TEST_CASE("inotify wakes the reader of a file that grows") {
    Relay relay(kEventsOnly);
    relay.start_reading("a.log", "one\n", 1);
    append(relay.log("a.log"), "two\n");
    CHECK(relay.wait_rows(2));
    append(relay.log("a.log"), "thr");
    append(relay.log("a.log"), "ee\n");
    CHECK(relay.wait_rows(3));
    CHECK(relay.tailer->stats().evented.load());
  }

  TEST_CASE("a file written line by line is read in a few transactions, not one per write") {
    Relay r(kEventsOnly);
    std::atomic<int> commits{0};
    r.on_outbox = [&](outbox::Outbox& o) {
      o.set_fault_hook([&](std::string_view stage) {
        if (stage.starts_with("append-commit")) ++commits;
      });
    };
    r.start();
    const std::string path = r.log("app.log");
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(r.wait_rows(0));
    // 300 lines, each its own write(), about 1 ms apart: an application logging.
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 300; ++i) {
      std::string line = "line " + std::to_string(i) + "\n";
      REQUIRE(::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ::close(fd);
    REQUIRE(r.wait_rows(300));
    auto rows = r.stop_and_read();
    REQUIRE(rows.size() == 300);
    for (int i = 0; i < 300; ++i) CHECK(rows[static_cast<size_t>(i)].payload == "line " + std::to_string(i));
    // At most one read (and transaction) per 10 ms of writing, plus a few.
    INFO("writing took " << ms << " ms; transactions: " << commits.load());
    CHECK(commits.load() <= static_cast<int>(ms / 10) + 10);
  }

  TEST_CASE("inotify wakes discovery: new and renamed files are followed at once") {
    Relay relay(kEventsOnly);
    relay.start("*.log*");
    append(relay.log("b.log"), "first\n");
    REQUIRE(relay.wait_rows(1));
    // Rotation by rename: the old file is followed under its new name, the new
    // file at the old name is picked up.
    std::filesystem::rename(relay.log("b.log"), relay.log("b.log.1"));
    append(relay.log("b.log.1"), "late write to the rotated file\n");
    append(relay.log("b.log"), "new file\n");
    CHECK(relay.wait_rows(3));
    relay.stop();
    std::set<std::string> lines;
    for (const auto& r : relay.all_rows()) lines.insert(r.payload);
    CHECK(lines == std::set<std::string>{"first", "late write to the rotated file", "new file"});
  }

  TEST_CASE("without inotify, files are polled as before") {
    Relay relay(kFastPoll);
    relay.start();
    append(relay.log("c.log"), "x\n");
    REQUIRE(relay.wait_rows(1));
    append(relay.log("c.log"), "y\n");
    CHECK(relay.wait_rows(2));
    CHECK_FALSE(relay.tailer->stats().evented.load());
  }

  TEST_CASE("a file named through a symbolic link is polled (its writes are not in a watched directory)") {
    Relay relay("inotify = true\npoll_interval = \"1h\"\nrecheck_interval = \"1h\"\n"
                "read_interval = \"20ms\"\n");
    std::filesystem::create_directories(relay.dir / "elsewhere");
    append(relay.dir / "elsewhere/target.log", "one\n");
    std::filesystem::create_symlink(relay.dir / "elsewhere/target.log", relay.log("link.log"));
    relay.start();
    REQUIRE(relay.wait_rows(1));
    append(relay.dir / "elsewhere/target.log", "two\n");
    CHECK(relay.wait_rows(2));
  }

  TEST_CASE("the inotify watcher names what was created, written and removed") {
    testing::TempDir dir;
    boost::asio::io_context ioc;
    auto w = tail::make_inotify_watcher(ioc.get_executor());
    REQUIRE(w);
    std::vector<tail::Watcher::Event> seen;
    w->start([&](std::span<const tail::Watcher::Event> events) {
      seen.insert(seen.end(), events.begin(), events.end());
    });
    w->watch({dir.path()});
    CHECK(w->covers(dir.path()));
    CHECK_FALSE(w->covers(dir / "sub"));
    append(dir / "a.log", "x\n");
    std::filesystem::rename(dir / "a.log", dir / "b.log");
    std::filesystem::remove(dir / "b.log");
    std::filesystem::create_directory(dir / "sub");
    auto has = [&](tail::Watcher::Change c, const std::string& path) {
      for (const auto& e : seen)
        if (e.change == c && e.path == path) return true;
      return false;
    };
    using C = tail::Watcher::Change;
    for (int i = 0; i < 200 && !has(C::directory, dir / "sub"); ++i) ioc.run_for(10ms);
    CHECK(has(C::created, dir / "a.log"));
    CHECK(has(C::modified, dir / "a.log"));
    CHECK(has(C::removed, dir / "a.log"));   // moved out of its name
    CHECK(has(C::created, dir / "b.log"));   // moved in
    CHECK(has(C::removed, dir / "b.log"));
    CHECK(has(C::directory, dir / "sub"));
    w->watch({});
    CHECK_FALSE(w->covers(dir.path()));
    w->stop();
    ioc.run_for(10ms);
  }

  TEST_CASE("the poll watcher reports nothing and covers nothing") {
    auto w = tail::make_poll_watcher();
    w->watch({"/tmp"});
    CHECK_FALSE(w->covers("/tmp"));
    CHECK(w->kind() == "poll");
  }

  TEST_CASE("a .gz file is read once, decompressed, and never again after a restart") {
    Relay relay(kFastPoll, "read_gzip = true\nexclude = \"*.skip.gz\"");
    std::string text = "alpha\nbravo\ncharlie\n";
    {
      std::ofstream(relay.log("app.log.2.gz"), std::ios::binary) << gzip(text);
      std::ofstream(relay.log("x.skip.gz"), std::ios::binary) << gzip("excluded\n");
    }
    relay.start("*.gz");
    REQUIRE(relay.wait_rows(3));
    CHECK(eventually([&] { return relay.tailer->files().empty(); }));   // released
    auto rows = relay.stop_and_read();
    REQUIRE(rows.size() == 3);
    CHECK(rows[1].payload == "bravo");
    CHECK(rows[1].offset == 6);   // an offset in the decompressed stream
    auto files = relay.files();
    REQUIRE(files.size() == 1);
    CHECK(files[0].released);

    relay.start("*.gz");
    std::this_thread::sleep_for(300ms);   // several scans
    CHECK(relay.rows() == 3);
    CHECK(relay.tailer->files().empty());
    relay.stop();
    CHECK(relay.files().size() == 1);
  }

  TEST_CASE(".gz files are not read unless read_gzip = true") {
    Relay relay(kFastPoll);
    std::ofstream(relay.log("app.log.1.gz"), std::ios::binary) << gzip("compressed\n");
    relay.start_reading("app.log", "plain\n", 1, "app.log*");
    std::this_thread::sleep_for(200ms);
    CHECK(relay.rows() == 1);
  }

  TEST_CASE("ignore_older skips old files, but never a file with a checkpoint") {
    Relay relay(kFastPoll, "ignore_older = \"1h\"");
    relay.start_reading("kept.log", "kept 1\n", 1);
    relay.stop();

    // While stopped: the followed file gets a line and looks old; another old
    // file appears.
    append(relay.log("kept.log"), "kept 2\n");
    set_age(relay.log("kept.log"), std::chrono::hours(48));
    append(relay.log("old.log"), "old 1\nold 2\n");
    set_age(relay.log("old.log"), std::chrono::hours(48));
    relay.start();
    REQUIRE(relay.wait_rows(2));   // kept 2: resumed
    std::this_thread::sleep_for(200ms);
    CHECK(relay.rows() == 2);                                 // old.log: skipped
    CHECK(relay.tailer->stats().files_ignored.load() == 1);
    // Written to again: followed from where it was when skipped.
    append(relay.log("old.log"), "old 3\n");
    CHECK(relay.wait_rows(3));
    auto rows = relay.stop_and_read();
    REQUIRE(rows.size() == 3);
    CHECK(rows[1].payload == "kept 2");
    CHECK(rows[2].payload == "old 3");
    CHECK(rows[2].offset == 12);
  }

  TEST_CASE("a multiline record is committed only when complete; a restart reads it again") {
    Relay relay(kFastPoll, "multiline.start_pattern = '^\\d{4}-'\nmultiline.timeout = \"1h\"");
    append(relay.log("j.log"), "2024-01-01 boom\n  at a\n  at b\n");
    relay.start();
    std::this_thread::sleep_for(200ms);
    CHECK(relay.rows() == 0);
    relay.stop();
    auto files = relay.files();
    REQUIRE(files.size() == 1);
    CHECK(files[0].read_offset == 0);   // the record is not delivered, not skipped either

    relay.start_reading("j.log", "2024-01-01 next\n", 1);
    auto rows = relay.stop_and_read();
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].payload == "2024-01-01 boom\n  at a\n  at b");
    CHECK(rows[0].offset == 0);
    CHECK(rows[0].length == 30);
    CHECK(relay.files()[0].read_offset == 30);
  }

  TEST_CASE("multiline.timeout flushes the last record after quiet") {
    Relay relay(kFastPoll, "multiline.start_pattern = '^\\S'\nmultiline.timeout = \"100ms\"");
    relay.start_reading("t.log", "head\n  cont\n", 1);
    relay.stop();
    CHECK(relay.all_rows()[0].payload == "head\n  cont");
    CHECK(relay.files()[0].read_offset == 12);
  }

  TEST_CASE("max_line_mode = truncate delivers the head, counts the whole line") {
    Relay relay(kFastPoll, "max_line_bytes = 256\nmax_line_mode = \"truncate\"");
    relay.start_reading("l.log", std::string(100'000, 'x') + "\nshort\n", 2);
    auto rows = relay.stop_and_read();
    REQUIRE(rows.size() == 2);
    CHECK(rows[0].payload == std::string(256, 'x'));
    CHECK(rows[0].length == 100'001);
    CHECK(rows[1].offset == 100'001);
    CHECK(relay.files()[0].read_offset == 100'007);
  }

  TEST_CASE("a truncated file is counted and read again from 0 as a new file") {
    Relay relay(kEventsOnly);
    relay.start_reading("t.log", "one\ntwo\nthree\n", 3);
    std::filesystem::resize_file(relay.log("t.log"), 0);
    append(relay.log("t.log"), "after\n");
    REQUIRE(relay.wait_rows(4));
    CHECK(relay.tailer->stats().truncations.load() == 1);
    auto rows = relay.stop_and_read();
    CHECK(rows[3].payload == "after");
    CHECK(rows[3].offset == 0);
    CHECK(rows[3].file != rows[0].file);
  }

  TEST_CASE("a truncation refilled past the old offset is seen by the first bytes") {
    // Polled slowly, so that truncate + refill happen between two looks.
    Relay relay("inotify = false\npoll_interval = \"300ms\"\nread_interval = \"300ms\"");
    relay.start_reading("r.log", "aaaa\n", 1);
    std::this_thread::sleep_for(20ms);
    std::filesystem::resize_file(relay.log("r.log"), 0);
    append(relay.log("r.log"), "bbbbbbbbbb\ncc\n");
    REQUIRE(relay.wait_rows(3));
    auto rows = relay.stop_and_read();
    REQUIRE(rows.size() == 3);
    CHECK(rows[1].payload == "bbbbbbbbbb");
    CHECK(rows[1].offset == 0);
    CHECK(rows[2].payload == "cc");
  }
}
