// Positions survive what happens around the Tailer: restarts with a changed
// configuration, file systems mounted late, files deleted while stopped, a
// full outbox, stops in the middle of a truncation, power cuts (durable
// commits for records a timer cut). Real files, a real outbox.
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

using namespace tailbox;
using namespace tailbox::testing;
using namespace std::chrono_literals;

TEST_SUITE("tail.positions") {
  TEST_CASE("a renamed source resumes its files at their offsets, under the new name") {
    Relay relay(kFastPoll);
    relay.start_reading("a.log", "one\ntwo\n", 2);
    relay.stop();
    const auto before = relay.files();
    REQUIRE(before.size() == 1);

    relay.source_name = "web";
    relay.start_reading("a.log", "three\n", 3);
    std::this_thread::sleep_for(200ms);   // several scans: nothing read twice
    auto rows = relay.stop_and_read();
    REQUIRE(rows.size() == 3);
    CHECK(rows[2].payload == "three");
    CHECK(rows[2].file == rows[0].file);   // same file, same uid
    CHECK(rows[2].info->source == "web");
    auto after = relay.files();
    REQUIRE(after.size() == 1);
    CHECK(after[0].uid == before[0].uid);
    CHECK(after[0].source == "web");
    CHECK_FALSE(after[0].released);
  }

  TEST_CASE("a checkpointed file whose directory is missing at start is kept, then resumed") {
    // A log file system mounted after tailbox starts: the first scans find
    // nothing. The file must not be released (it would be read again from 0
    // under a new uid once the file system is there).
    Relay relay(kFastPoll);
    relay.start_reading("m.log", "one\ntwo\n", 2);
    relay.stop();
    std::filesystem::rename(relay.logs, relay.dir / "unmounted");
    relay.start();
    std::this_thread::sleep_for(300ms);   // several scans without the directory
    std::filesystem::rename(relay.dir / "unmounted", relay.logs);
    append(relay.log("m.log"), "three\n");
    REQUIRE(relay.wait_rows(3));
    std::this_thread::sleep_for(300ms);
    auto rows = relay.stop_and_read();
    REQUIRE(rows.size() == 3);
    CHECK(rows[2].payload == "three");
    CHECK(rows[2].offset == 8);
    CHECK(rows[2].file == rows[0].file);
    auto files = relay.files();
    REQUIRE(files.size() == 1);
    CHECK_FALSE(files[0].released);
  }

  TEST_CASE("a checkpointed file deleted while stopped is released on evidence") {
    Relay relay(kFastPoll);
    relay.start_reading("d.log", "one\n", 1);
    relay.stop();
    std::filesystem::remove(relay.log("d.log"));
    relay.start();
    CHECK(eventually([&] {
      for (const auto& f : testing::ok(relay.ob->unsafe_sync().tracked_files()))
        if (f.released) return true;
      return false;
    }));
    relay.stop();
  }

  TEST_CASE("while reading pauses for a full outbox, a deleted file is read to its end") {
    // Its unread lines exist only behind the descriptor: a stop would lose them.
    Relay relay(std::string(kFastPoll) + "read_chunk_bytes = 4096\n");
    relay.outbox_settings = "max_rows = 100\n";
    std::string many, few;
    for (int i = 0; i < 1000; ++i) many += "line " + std::to_string(i) + "\n";   // 8.9 kB
    for (int i = 0; i < 50; ++i) few += "kept " + std::to_string(i) + "\n";
    append(relay.log("big.log"), many);
    append(relay.log("other.log"), few);
    relay.start();
    REQUIRE(eventually([&] { return relay.tailer->stats().paused.load(); }));
    REQUIRE(relay.rows() < 1000);
    std::filesystem::remove(relay.log("big.log"));
    CHECK(eventually([&] { return relay.rows() >= 1000; }));
    relay.stop();
    int64_t big = 0;
    for (const auto& r : relay.all_rows())
      if (r.info->path.ends_with("big.log")) ++big;
    CHECK(big == 1000);
  }

  TEST_CASE("a .gz whose stream stalls longer than rotate_wait is not released while named") {
    Relay relay("inotify = false\npoll_interval = \"20ms\"\nread_interval = \"10ms\"\n"
                "rotate_wait = \"100ms\"\n",
                "read_gzip = true");
    std::string text;
    for (int i = 0; i < 2000; ++i) text += "gz line " + std::to_string(i) + "\n";
    const std::string gz = gzip(text);
    const size_t half = gz.size() / 2;
    {
      std::ofstream(relay.log("s.log.1.gz"), std::ios::binary) << gz.substr(0, half);
    }
    relay.start("*.gz");
    REQUIRE(eventually([&] { return relay.rows() > 0; }));
    std::this_thread::sleep_for(500ms);   // stalled for 5 x rotate_wait
    append(relay.log("s.log.1.gz"), gz.substr(half));
    CHECK(relay.wait_rows(2000));
    auto rows = relay.stop_and_read();
    REQUIRE(rows.size() == 2000);
    CHECK(rows.back().payload == "gz line 1999");
  }

  TEST_CASE("records read before a truncation are stored even when a stop arrives meanwhile") {
    Relay relay(kFastPoll, "multiline.start_pattern = \"^\\\\S\"");
    append(relay.log("t.log"), "first\n  cont\nsecond\n  more\n");
    relay.start();
    // "first" is complete (a start line follows); "second" waits for its end.
    REQUIRE(relay.wait_rows(1));
    std::atomic<bool> failing{true};
    std::atomic<int> failures{0};
    relay.ob->unsafe_sync().set_fault_hook([&](std::string_view stage) {
      if (stage.starts_with("append-commit") && failing.load()) {
        ++failures;
        throw std::runtime_error("injected: disk busy");
      }
    });
    std::filesystem::resize_file(relay.log("t.log"), 0);
    REQUIRE(eventually([&] { return failures.load() >= 1; }));
    relay.tailer->stop();   // the stop arrives while "second" cannot be stored yet
    std::this_thread::sleep_for(50ms);
    failing = false;
    for (auto& t : relay.threads) t.join();
    relay.threads.clear();
    relay.tailer.reset();
    relay.ob->unsafe_sync().set_fault_hook(nullptr);
    auto rows = relay.all_rows();
    REQUIRE(rows.size() == 2);
    CHECK(rows[1].payload == "second\n  more");
  }

  TEST_CASE("a record cut by a timer is committed durably, terminated lines are not") {
    Relay relay(kFastPoll, "partial_line_timeout = \"100ms\"");
    std::atomic<int> durable{0}, plain{0};
    relay.start_reading("p.log", "whole\n", 1);
    relay.ob->unsafe_sync().set_fault_hook([&](std::string_view stage) {
      if (stage == "append-commit-durable") ++durable;
      if (stage == "append-commit") ++plain;
    });
    append(relay.log("p.log"), "abc");   // no newline: flushed by the timer
    REQUIRE(relay.wait_rows(2));
    CHECK(durable.load() == 1);
    append(relay.log("p.log"), "def\n");
    REQUIRE(relay.wait_rows(3));
    relay.stop();
    relay.ob->unsafe_sync().set_fault_hook(nullptr);
    CHECK(durable.load() == 1);
    CHECK(plain.load() >= 1);
    auto rows = relay.all_rows();
    REQUIRE(rows.size() == 3);
    CHECK(rows[1].payload == "abc");
    CHECK(rows[2].payload == "def");
  }

  TEST_CASE("a multiline record holding a line cut by partial_line_timeout is committed durably") {
    // The cut line waits in the record being built; a later start line ends
    // the record. Re-read after a power cut, the same offset would start a
    // longer record: its commit must be durable whatever ended it.
    Relay relay(kFastPoll, "partial_line_timeout = \"100ms\"\nmultiline.start_pattern = \"^\\\\[\"");
    std::atomic<int> durable{0};
    relay.start();
    relay.ob->unsafe_sync().set_fault_hook([&](std::string_view stage) {
      if (stage == "append-commit-durable") ++durable;
    });
    append(relay.log("m.log"), "[1] abc");   // no newline: cut by the timer, held
    std::this_thread::sleep_for(400ms);
    CHECK(relay.rows() == 0);
    append(relay.log("m.log"), "[2] def\n");  // a start line ends record [1]
    REQUIRE(relay.wait_rows(1));
    relay.stop();
    relay.ob->unsafe_sync().set_fault_hook(nullptr);
    CHECK(durable.load() >= 1);
    auto rows = relay.all_rows();
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].payload == "[1] abc");
  }

  TEST_CASE("a stop reads a file no glob names any more to its end first") {
    // Its unread bytes exist only behind the descriptor: after the stop no
    // glob would find them again.
    Relay relay("inotify = true\npoll_interval = \"1h\"\nread_interval = \"1h\"\n"
                "recheck_interval = \"1h\"\nrotate_wait = \"30s\"\n");
    std::string first, later;
    for (int i = 0; i < 100; ++i) first += "first " + std::to_string(i) + "\n";
    for (int i = 0; i < 50; ++i) later += "later " + std::to_string(i) + "\n";
    relay.start_reading("r.log", first, 100);
    std::filesystem::rename(relay.log("r.log"), relay.log("r.old"));   // out of the glob
    std::this_thread::sleep_for(300ms);   // the rename's event: a scan marks it gone
    append(relay.log("r.old"), later);    // nothing wakes its reader (rotate_wait is 30 s)
    relay.stop();
    int64_t later_rows = 0;
    for (const auto& r : relay.all_rows())
      if (r.payload.starts_with("later")) ++later_rows;
    CHECK(later_rows == 50);
  }
}
