// The Tailer on real files in a temporary directory, with a real outbox and
// no dispatcher: what was read is what the outbox holds. Waits are bounded by
// generous deadlines; where an event must do the work, the polling intervals
// are set to an hour, so that passing proves the event did it.
#include "tail/tailer.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <fstream>
#include <thread>

#include "config/config.hpp"
#include "outbox/async_outbox.hpp"
#include "support/result.hpp"
#include "support/temp_dir.hpp"
#include "tail/watcher.hpp"

using namespace tailbox;
using namespace std::chrono_literals;

namespace {

void append(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::app) << bytes;
}

void set_age(const std::string& path, std::chrono::seconds age) {
  struct timespec times[2];
  clock_gettime(CLOCK_REALTIME, &times[0]);
  times[0].tv_sec -= age.count();
  times[1] = times[0];
  REQUIRE(utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
}

std::string gzip(const std::string& data) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&zs, data.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

template <typename F>
bool eventually(F done, std::chrono::milliseconds within = 5000ms) {
  auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return done();
}

// One relay without delivery: the tailer writing into an outbox, run on two
// threads until stop(). Can be started again on the same outbox (a restart).
struct Relay {
  testing::TempDir dir;
  std::string logs = dir / "logs";
  std::string tail_settings;
  std::string source_settings;
  std::string source_name = "app";
  std::string outbox_settings;
  config::Config cfg;
  boost::asio::io_context ioc;
  std::unique_ptr<outbox::AsyncOutbox> ob;
  std::unique_ptr<tail::Tailer> tailer;
  std::vector<std::thread> threads;

  explicit Relay(std::string tail_extra = "", std::string source_extra = "")
      : tail_settings(std::move(tail_extra)), source_settings(std::move(source_extra)) {
    std::filesystem::create_directories(logs);
  }
  ~Relay() {
    if (tailer) stop();
  }

  std::string log(const std::string& name) const { return logs + "/" + name; }

  void start(const std::string& glob = "*.log") {
    cfg = config::load_string("[[source]]\nname = \"" + source_name + "\"\npaths = \"" + logs +
                              "/" + glob + "\"\n" + source_settings + "\n[tail]\n" +
                              tail_settings + "\n[outbox]\n" + outbox_settings +
                              "\n[sink]\ntype = \"sqlite\"\n");
    ob.reset();   // a restart: the previous run's outbox lets go of its lock first
    ob = std::make_unique<outbox::AsyncOutbox>(
        ioc.get_executor(), outbox::Outbox::open({dir / "outbox.db", config::Synchronous::off, false}));
    tailer = std::make_unique<tail::Tailer>(ioc.get_executor(), cfg, *ob);
    ioc.restart();
    boost::asio::co_spawn(ioc, tailer->run(), [](std::exception_ptr) {});
    for (int i = 0; i < 2; ++i) threads.emplace_back([this] { ioc.run(); });
  }

  void stop() {
    tailer->stop();
    for (auto& t : threads) t.join();
    threads.clear();
    tailer.reset();
  }

  int64_t rows() const { return ob->backlog().rows; }

  // REQUIRES: stopped.
  std::vector<outbox::LeasedRow> all_rows() {
    outbox::LeaseCursor cursor;
    return testing::ok(ob->unsafe_sync().lease(cursor, 0, 1, 1'000'000, 1LL << 40));
  }
  std::vector<outbox::TrackedFile> files() { return testing::ok(ob->unsafe_sync().tracked_files()); }
};

// Polling so slow that only events can explain prompt reading.
const char* kEventsOnly = "inotify = true\npoll_interval = \"1h\"\nread_interval = \"1h\"\n"
                          "recheck_interval = \"1h\"\n";
const char* kFastPoll = "inotify = false\npoll_interval = \"20ms\"\nread_interval = \"10ms\"\n";

}  // namespace

TEST_SUITE("tail.tailer") {
  TEST_CASE("inotify wakes the reader of a file that grows") {
    Relay relay(kEventsOnly);
    append(relay.log("a.log"), "one\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
    append(relay.log("a.log"), "two\n");
    CHECK(eventually([&] { return relay.rows() == 2; }));
    append(relay.log("a.log"), "thr");
    append(relay.log("a.log"), "ee\n");
    CHECK(eventually([&] { return relay.rows() == 3; }));
    CHECK(relay.tailer->stats().evented.load());
  }

  TEST_CASE("inotify wakes discovery: new and renamed files are followed at once") {
    Relay relay(kEventsOnly);
    relay.start("*.log*");
    append(relay.log("b.log"), "first\n");
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
    // Rotation by rename: the old file is followed under its new name, the new
    // file at the old name is picked up.
    std::filesystem::rename(relay.log("b.log"), relay.log("b.log.1"));
    append(relay.log("b.log.1"), "late write to the rotated file\n");
    append(relay.log("b.log"), "new file\n");
    CHECK(eventually([&] { return relay.rows() == 3; }));
    relay.stop();
    std::set<std::string> lines;
    for (const auto& r : relay.all_rows()) lines.insert(r.payload);
    CHECK(lines == std::set<std::string>{"first", "late write to the rotated file", "new file"});
  }

  TEST_CASE("without inotify, files are polled as before") {
    Relay relay(kFastPoll);
    relay.start();
    append(relay.log("c.log"), "x\n");
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
    append(relay.log("c.log"), "y\n");
    CHECK(eventually([&] { return relay.rows() == 2; }));
    CHECK_FALSE(relay.tailer->stats().evented.load());
  }

  TEST_CASE("a file named through a symbolic link is polled (its writes are not in a watched directory)") {
    Relay relay("inotify = true\npoll_interval = \"1h\"\nrecheck_interval = \"1h\"\n"
                "read_interval = \"20ms\"\n");
    std::filesystem::create_directories(relay.dir / "elsewhere");
    append(relay.dir / "elsewhere/target.log", "one\n");
    std::filesystem::create_symlink(relay.dir / "elsewhere/target.log", relay.log("link.log"));
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
    append(relay.dir / "elsewhere/target.log", "two\n");
    CHECK(eventually([&] { return relay.rows() == 2; }));
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
    REQUIRE(eventually([&] { return relay.rows() == 3; }));
    CHECK(eventually([&] { return relay.tailer->files().empty(); }));   // released
    relay.stop();
    auto rows = relay.all_rows();
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
    append(relay.log("app.log"), "plain\n");
    relay.start("app.log*");
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
    std::this_thread::sleep_for(200ms);
    CHECK(relay.rows() == 1);
  }

  TEST_CASE("ignore_older skips old files, but never a file with a checkpoint") {
    Relay relay(kFastPoll, "ignore_older = \"1h\"");
    append(relay.log("kept.log"), "kept 1\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
    relay.stop();

    // While stopped: the followed file gets a line and looks old; another old
    // file appears.
    append(relay.log("kept.log"), "kept 2\n");
    set_age(relay.log("kept.log"), std::chrono::hours(48));
    append(relay.log("old.log"), "old 1\nold 2\n");
    set_age(relay.log("old.log"), std::chrono::hours(48));
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 2; }));   // kept 2: resumed
    std::this_thread::sleep_for(200ms);
    CHECK(relay.rows() == 2);                                 // old.log: skipped
    CHECK(relay.tailer->stats().files_ignored.load() == 1);
    // Written to again: followed from where it was when skipped.
    append(relay.log("old.log"), "old 3\n");
    CHECK(eventually([&] { return relay.rows() == 3; }));
    relay.stop();
    auto rows = relay.all_rows();
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

    append(relay.log("j.log"), "2024-01-01 next\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
    relay.stop();
    auto rows = relay.all_rows();
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].payload == "2024-01-01 boom\n  at a\n  at b");
    CHECK(rows[0].offset == 0);
    CHECK(rows[0].length == 30);
    CHECK(relay.files()[0].read_offset == 30);
  }

  TEST_CASE("multiline.timeout flushes the last record after quiet") {
    Relay relay(kFastPoll, "multiline.start_pattern = '^\\S'\nmultiline.timeout = \"100ms\"");
    append(relay.log("t.log"), "head\n  cont\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
    relay.stop();
    CHECK(relay.all_rows()[0].payload == "head\n  cont");
    CHECK(relay.files()[0].read_offset == 12);
  }

  TEST_CASE("max_line_mode = truncate delivers the head, counts the whole line") {
    Relay relay(kFastPoll, "max_line_bytes = 256\nmax_line_mode = \"truncate\"");
    append(relay.log("l.log"), std::string(100'000, 'x') + "\nshort\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 2; }));
    relay.stop();
    auto rows = relay.all_rows();
    REQUIRE(rows.size() == 2);
    CHECK(rows[0].payload == std::string(256, 'x'));
    CHECK(rows[0].length == 100'001);
    CHECK(rows[1].offset == 100'001);
    CHECK(relay.files()[0].read_offset == 100'007);
  }

  TEST_CASE("a truncated file is counted and read again from 0 as a new file") {
    Relay relay(kEventsOnly);
    append(relay.log("t.log"), "one\ntwo\nthree\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 3; }));
    std::filesystem::resize_file(relay.log("t.log"), 0);
    append(relay.log("t.log"), "after\n");
    REQUIRE(eventually([&] { return relay.rows() == 4; }));
    CHECK(relay.tailer->stats().truncations.load() == 1);
    relay.stop();
    auto rows = relay.all_rows();
    CHECK(rows[3].payload == "after");
    CHECK(rows[3].offset == 0);
    CHECK(rows[3].file != rows[0].file);
  }

  TEST_CASE("a truncation refilled past the old offset is seen by the first bytes") {
    // Polled slowly, so that truncate + refill happen between two looks.
    Relay relay("inotify = false\npoll_interval = \"300ms\"\nread_interval = \"300ms\"");
    append(relay.log("r.log"), "aaaa\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
    std::this_thread::sleep_for(20ms);
    std::filesystem::resize_file(relay.log("r.log"), 0);
    append(relay.log("r.log"), "bbbbbbbbbb\ncc\n");
    REQUIRE(eventually([&] { return relay.rows() == 3; }));
    relay.stop();
    auto rows = relay.all_rows();
    REQUIRE(rows.size() == 3);
    CHECK(rows[1].payload == "bbbbbbbbbb");
    CHECK(rows[1].offset == 0);
    CHECK(rows[2].payload == "cc");
  }

  // ---- issue 10: positions survive start-up races and configuration changes ----

  TEST_CASE("a renamed source resumes its files at their offsets, under the new name") {
    Relay relay(kFastPoll);
    append(relay.log("a.log"), "one\ntwo\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 2; }));
    relay.stop();
    const auto before = relay.files();
    REQUIRE(before.size() == 1);

    relay.source_name = "web";
    append(relay.log("a.log"), "three\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 3; }));
    std::this_thread::sleep_for(200ms);   // several scans: nothing read twice
    relay.stop();
    auto rows = relay.all_rows();
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
    append(relay.log("m.log"), "one\ntwo\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 2; }));
    relay.stop();
    std::filesystem::rename(relay.logs, relay.dir / "unmounted");
    relay.start();
    std::this_thread::sleep_for(300ms);   // several scans without the directory
    std::filesystem::rename(relay.dir / "unmounted", relay.logs);
    append(relay.log("m.log"), "three\n");
    REQUIRE(eventually([&] { return relay.rows() == 3; }));
    std::this_thread::sleep_for(300ms);
    relay.stop();
    auto rows = relay.all_rows();
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
    append(relay.log("d.log"), "one\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
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
    CHECK(eventually([&] { return relay.rows() == 2000; }));
    relay.stop();
    auto rows = relay.all_rows();
    REQUIRE(rows.size() == 2000);
    CHECK(rows.back().payload == "gz line 1999");
  }

  TEST_CASE("records read before a truncation are stored even when a stop arrives meanwhile") {
    Relay relay(kFastPoll, "multiline.start_pattern = \"^\\\\S\"");
    append(relay.log("t.log"), "first\n  cont\nsecond\n  more\n");
    relay.start();
    // "first" is complete (a start line follows); "second" waits for its end.
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
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
    append(relay.log("p.log"), "whole\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
    relay.ob->unsafe_sync().set_fault_hook([&](std::string_view stage) {
      if (stage == "append-commit-durable") ++durable;
      if (stage == "append-commit") ++plain;
    });
    append(relay.log("p.log"), "abc");   // no newline: flushed by the timer
    REQUIRE(eventually([&] { return relay.rows() == 2; }));
    CHECK(durable.load() == 1);
    append(relay.log("p.log"), "def\n");
    REQUIRE(eventually([&] { return relay.rows() == 3; }));
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
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
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
    append(relay.log("r.log"), first);
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 100; }));
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
    REQUIRE(eventually([&] { return relay.rows() == 20; }));
    CHECK(followed(relay) == 20);
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));
    CHECK(count_fds_on(relay.logs) == 0);
    CHECK(followed(relay) == 20);   // still followed: state kept
  }

  TEST_CASE("an idle file in a watched directory keeps no coroutine; a write starts one") {
    Relay relay(std::string(kEventsOnly) + "close_inactive = \"0\"\n");
    for (int i = 0; i < 20; ++i) append(relay.log("f" + std::to_string(i) + ".log"), "x\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 20; }));
    REQUIRE(eventually([&] { return relay.tailer->stats().readers_running.load() == 0; }));
    CHECK(followed(relay) == 20);
    CHECK(open_files(relay) == 20);
    append(relay.log("f7.log"), "y\n");
    CHECK(eventually([&] { return relay.rows() == 21; }, 2000ms));
    CHECK(eventually([&] { return relay.tailer->stats().readers_running.load() == 0; }));
  }

  TEST_CASE("polled files are closed after close_inactive too, and reopened when they grow") {
    Relay relay(std::string(kFastPoll) + "close_inactive = \"200ms\"\n");
    append(relay.log("p.log"), "one\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));
    append(relay.log("p.log"), "two\n");
    REQUIRE(eventually([&] { return relay.rows() == 2; }));
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));
    relay.stop();
    auto rows = relay.all_rows();
    REQUIRE(rows.size() == 2);
    CHECK(rows[1].offset == 4);
    CHECK(rows[1].file == rows[0].file);
  }

  TEST_CASE("files stay open with close_inactive = 0") {
    Relay relay(std::string(kEventsOnly) + "close_inactive = \"0\"\n");
    append(relay.log("a.log"), "x\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
    std::this_thread::sleep_for(400ms);
    CHECK(open_files(relay) == 1);
    CHECK(count_fds_on(relay.logs) == 1);
  }

  TEST_CASE("a write to a closed file reopens it and is read promptly (events only)") {
    Relay relay(kClosing);
    append(relay.log("a.log"), "one\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));
    append(relay.log("a.log"), "two\n");
    REQUIRE(eventually([&] { return relay.rows() == 2; }, 2000ms));
    CHECK(relay.tailer->stats().files_reopened.load() == 1);
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));   // and closed again
    relay.stop();
    auto rows = relay.all_rows();
    REQUIRE(rows.size() == 2);
    CHECK(rows[1].payload == "two");
    CHECK(rows[1].offset == 4);
    CHECK(rows[1].file == rows[0].file);
  }

  TEST_CASE("a closed file renamed by rotation, then written to, is read once: nothing lost or doubled") {
    Relay relay(kClosing);
    append(relay.log("app.log"), "one\n");
    relay.start("app.log*");
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));
    std::filesystem::rename(relay.log("app.log"), relay.log("app.log.1"));
    append(relay.log("app.log.1"), "two\n");   // the writer still has the old file open
    append(relay.log("app.log"), "new\n");
    REQUIRE(eventually([&] { return relay.rows() == 3; }));
    std::this_thread::sleep_for(300ms);
    relay.stop();
    auto rows = relay.all_rows();
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
    append(relay.log("t.log"), "one\ntwo\nthree\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 3; }));
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));
    std::filesystem::resize_file(relay.log("t.log"), 0);
    append(relay.log("t.log"), "after\n");
    REQUIRE(eventually([&] { return relay.rows() == 4; }));
    CHECK(relay.tailer->stats().truncations.load() == 1);
    relay.stop();
    auto rows = relay.all_rows();
    REQUIRE(rows.size() == 4);
    CHECK(rows[3].payload == "after");
    CHECK(rows[3].offset == 0);
    CHECK(rows[3].file != rows[0].file);
  }

  TEST_CASE("a closed file rewritten to the same size with other first bytes is a new file") {
    Relay relay(kClosing);
    append(relay.log("s.log"), "aaaa\n");
    relay.start();
    REQUIRE(eventually([&] { return relay.rows() == 1; }));
    REQUIRE(eventually([&] { return open_files(relay) == 0; }));
    {
      std::ofstream f(relay.log("s.log"), std::ios::binary | std::ios::in | std::ios::out);
      f << "bbbb\n";   // same inode, same size, another file as far as anyone can tell
    }
    REQUIRE(eventually([&] { return relay.rows() == 2; }));
    relay.stop();
    auto rows = relay.all_rows();
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
      append(relay.log("d.log"), "one\n");
      relay.start();
      REQUIRE(eventually([&] { return relay.rows() == 1; }));
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
