// The tail tests' fixture: a Relay without delivery (the Tailer on real files
// in a temporary directory, writing into a real outbox), and helpers to write
// files and wait for rows. Waits are bounded by generous deadlines; where an
// event must do the work, the polling intervals are set to an hour
// (kEventsOnly), so that passing proves the event did it.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "outbox/async_outbox.hpp"
#include "support/result.hpp"
#include "support/gzip.hpp"
#include "support/temp_dir.hpp"
#include "tail/tailer.hpp"

namespace tailbox::testing {

inline void append(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::app) << bytes;
}

inline void set_age(const std::string& path, std::chrono::seconds age) {
  struct timespec times[2];
  clock_gettime(CLOCK_REALTIME, &times[0]);
  times[0].tv_sec -= age.count();
  times[1] = times[0];
  REQUIRE(utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
}

template <typename F>
bool eventually(F done, std::chrono::milliseconds within = std::chrono::milliseconds(5000)) {
  auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

// One relay without delivery: the tailer writing into an outbox, run on two
// threads until stop(). Can be started again on the same outbox (a restart).
struct Relay {
  TempDir dir;
  std::string logs = dir / "logs";
  std::string tail_settings;
  std::string source_settings;
  std::string source_name = "app";
  std::string outbox_settings;
  // Called on the outbox before the tailer starts (e.g. to set a fault hook).
  std::function<void(outbox::Outbox&)> on_outbox;
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
    if (on_outbox) on_outbox(ob->unsafe_sync());
    tailer = std::make_unique<tail::Tailer>(ioc.get_executor(), cfg, *ob);
    ioc.restart();
    boost::asio::co_spawn(ioc, tailer->run(), [](std::exception_ptr) {});
    for (int i = 0; i < 2; ++i) threads.emplace_back([this] { ioc.run(); });
  }

  // Writes `bytes` to the log `name`, starts, and waits until the outbox
  // holds `n` rows (the usual first step of a test).
  void start_reading(const std::string& name, const std::string& bytes, int64_t n,
                     const std::string& glob = "*.log") {
    append(log(name), bytes);
    start(glob);
    REQUIRE(wait_rows(n));
  }

  void stop() {
    tailer->stop();
    for (auto& t : threads) t.join();
    threads.clear();
    tailer.reset();
  }

  int64_t rows() const { return ob->backlog().rows; }
  // Whether the outbox holds `n` rows within `within`.
  bool wait_rows(int64_t n, std::chrono::milliseconds within = std::chrono::milliseconds(5000)) {
    return eventually([&] { return rows() == n; }, within);
  }

  // REQUIRES: stopped.
  std::vector<outbox::LeasedRow> all_rows() {
    outbox::LeaseCursor cursor;
    return ok(ob->unsafe_sync().lease(cursor, 0, 1, 1'000'000, 1LL << 40));
  }
  std::vector<outbox::TrackedFile> files() { return ok(ob->unsafe_sync().tracked_files()); }
  std::vector<outbox::LeasedRow> stop_and_read() {
    stop();
    return all_rows();
  }
};

// Polling so slow that only events can explain prompt reading.
inline constexpr const char* kEventsOnly = "inotify = true\npoll_interval = \"1h\"\nread_interval = \"1h\"\n"
                          "recheck_interval = \"1h\"\n";
inline constexpr const char* kFastPoll = "inotify = false\npoll_interval = \"20ms\"\nread_interval = \"10ms\"\n";

}  // namespace tailbox::testing
