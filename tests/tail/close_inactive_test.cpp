// [tail] close_inactive: idle files cost nothing (no descriptor, no
// coroutine) and lose nothing when they are written to, renamed or truncated
// while closed. Real files, a real outbox.
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

// ---- issue 11: idle files cost nothing ([tail] close_inactive) ----

TEST_SUITE("tail.close_inactive") {
  // Events only, and files closed after 200 ms of quiet.
  const std::string kClosing = std::string(kEventsOnly) + "close_inactive = \"200ms\"\n";

  int64_t open_files(Relay& relay) { return relay.tailer->stats().files_open.load(); }
  int64_t followed(Relay& relay) { return relay.tailer->stats().files_active.load(); }

  int count_fds_on(const std::string& dir) {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      auto target = std::filesystem::read_symlink(e.path(), ec);
      if (!ec && target.string().rfind(dir, 0) == 0) ++n;
    }
    return n;
  }

  TEST_CASE("quiet files are closed after close_inactive; their descriptors are released") {
    Relay relay(kClosing);
    for (int i = 0; i < 20; ++i) append(relay.log("f" + std::to_string(i) + ".log"), "x\n");
    relay.start();
    REQUIRE(relay.wait_rows(20));
    CHECK(followed(relay) == 20);
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));
    CHECK(count_fds_on(relay.logs) == 0);
    CHECK(followed(relay) == 20);   // still followed: state kept
  }

  TEST_CASE("an idle file in a watched directory keeps no coroutine; a write starts one") {
    Relay relay(std::string(kEventsOnly) + "close_inactive = \"0\"\n");
    for (int i = 0; i < 20; ++i) append(relay.log("f" + std::to_string(i) + ".log"), "x\n");
    relay.start();
    REQUIRE(relay.wait_rows(20));
    REQUIRE(eventually([&] { return relay.tailer->stats().readers_running.load() == 0; }));
    CHECK(followed(relay) == 20);
    CHECK(open_files(relay) == 20);
    append(relay.log("f7.log"), "y\n");
    CHECK(relay.wait_rows(21, 2000ms));
    CHECK(eventually([&] { return relay.tailer->stats().readers_running.load() == 0; }));
  }

  TEST_CASE("polled files are closed after close_inactive too, and reopened when they grow") {
    Relay relay(std::string(kFastPoll) + "close_inactive = \"200ms\"\n");
    relay.start_reading("p.log", "one\n", 1);
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));
    append(relay.log("p.log"), "two\n");
    REQUIRE(relay.wait_rows(2));
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));
    auto rows = relay.stop_and_read();
    REQUIRE(rows.size() == 2);
    CHECK(rows[1].offset == 4);
    CHECK(rows[1].file == rows[0].file);
  }

  TEST_CASE("files stay open with close_inactive = 0") {
    Relay relay(std::string(kEventsOnly) + "close_inactive = \"0\"\n");
    relay.start_reading("a.log", "x\n", 1);
    std::this_thread::sleep_for(400ms);
    CHECK(open_files(relay) == 1);
    CHECK(count_fds_on(relay.logs) == 1);
  }

  TEST_CASE("a write to a closed file reopens it and is read promptly (events only)") {
    Relay relay(kClosing);
    relay.start_reading("a.log", "one\n", 1);
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));
    append(relay.log("a.log"), "two\n");
    REQUIRE(relay.wait_rows(2, 2000ms));
    CHECK(relay.tailer->stats().files_reopened.load() == 1);
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));   // and closed again
    auto rows = relay.stop_and_read();
    REQUIRE(rows.size() == 2);
    CHECK(rows[1].payload == "two");
    CHECK(rows[1].offset == 4);
    CHECK(rows[1].file == rows[0].file);
  }

  TEST_CASE("a closed file renamed by rotation, then written to, is read once: nothing lost or doubled") {
    Relay relay(kClosing);
    relay.start_reading("app.log", "one\n", 1, "app.log*");
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));
    std::filesystem::rename(relay.log("app.log"), relay.log("app.log.1"));
    append(relay.log("app.log.1"), "two\n");   // the writer still has the old file open
    append(relay.log("app.log"), "new\n");
    REQUIRE(relay.wait_rows(3));
    std::this_thread::sleep_for(300ms);
    auto rows = relay.stop_and_read();
    REQUIRE(rows.size() == 3);
    std::map<std::string, std::pair<int64_t, int64_t>> by_payload;
    for (const auto& r : rows) by_payload[r.payload] = {r.file, r.offset};
    CHECK(by_payload["one"].first == by_payload["two"].first);
    CHECK(by_payload["two"].second == 4);
    CHECK(by_payload["new"].first != by_payload["one"].first);
    CHECK(by_payload["new"].second == 0);
  }

  TEST_CASE("a closed file truncated (copytruncate) is seen as truncated on reopen") {
    Relay relay(kClosing);
    relay.start_reading("t.log", "one\ntwo\nthree\n", 3);
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));
    std::filesystem::resize_file(relay.log("t.log"), 0);
    append(relay.log("t.log"), "after\n");
    REQUIRE(relay.wait_rows(4));
    CHECK(relay.tailer->stats().truncations.load() == 1);
    auto rows = relay.stop_and_read();
    REQUIRE(rows.size() == 4);
    CHECK(rows[3].payload == "after");
    CHECK(rows[3].offset == 0);
    CHECK(rows[3].file != rows[0].file);
  }

  TEST_CASE("a closed file rewritten to the same size with other first bytes is a new file") {
    Relay relay(kClosing);
    relay.start_reading("s.log", "aaaa\n", 1);
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));
    {
      std::ofstream f(relay.log("s.log"), std::ios::binary | std::ios::in | std::ios::out);
      f << "bbbb\n";   // same inode, same size, another file as far as anyone can tell
    }
    REQUIRE(relay.wait_rows(2));
    auto rows = relay.stop_and_read();
    REQUIRE(rows.size() == 2);
    CHECK(rows[1].payload == "bbbb");
    CHECK(rows[1].file != rows[0].file);
  }

  TEST_CASE("the loss is bounded: only what a closed file got between its close and its deletion") {
    // A closed file deleted: lines written to it after the close and before
    // the deletion are not read (nothing held it open). The same file deleted
    // while open is read to its end.
    for (bool closing : {true, false}) {
      CAPTURE(closing);
      Relay relay(closing ? kClosing : std::string(kEventsOnly) + "close_inactive = \"0\"\n"
                                                              "rotate_wait = \"100ms\"\n");
      relay.start_reading("d.log", "one\n", 1);
      if (closing) REQUIRE(eventually([&] { return open_files(relay) == 0; }));
      else std::this_thread::sleep_for(300ms);
      // Written and deleted at once, before anything can reopen it.
      {
        int fd = ::open(relay.log("d.log").c_str(), O_WRONLY | O_APPEND);
        REQUIRE(fd >= 0);
        REQUIRE(::unlink(relay.log("d.log").c_str()) == 0);
        REQUIRE(::write(fd, "lost\n", 5) == 5);
        ::close(fd);
      }
      REQUIRE(eventually([&] { return followed(relay) == 0; }));
      std::this_thread::sleep_for(100ms);
      CHECK(relay.rows() == (closing ? 1 : 2));
    }
  }
}
