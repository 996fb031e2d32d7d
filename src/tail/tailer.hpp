// Tailer: finds the files the [[source]] globs name, follows each one by
// identity (not by path) across renames, and reads complete lines into the
// outbox, each chunk committed together with the file's new read offset.
//
// One coroutine per file reads it, on a strand from a pool the readers share;
// a reader with nothing to do parks (no coroutine at all, see read_file).
// Discovery runs on the tailer's own strand.
// A file's reader is the only code that moves its offset, so a restart resumes
// exactly where the last committed chunk ended.
//
// Discovery and readers are driven by a Watcher (inotify on the directories
// the globs read; [tail] inotify = false, or no inotify: polling): an event
// wakes the scan (a name appeared or went) or the reader of the file named.
// Quiet files are looked at every [tail] recheck_interval only, so thousands
// of idle files cost next to nothing; without events, files are polled every
// read_interval and globs every poll_interval.
//
// Thread-safety: construct, then co_spawn run(); stop() may be called from any
// thread. stats() is safe from any thread.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace tailbox::outbox {
class AsyncOutbox;
}

namespace tailbox::tail {

struct SourceStats {
  std::atomic<int64_t> lines_read{0};
  std::atomic<int64_t> bytes_read{0};
  std::atomic<int64_t> truncations{0};
  std::atomic<int64_t> multiline_pattern_errors{0};   // lines start_pattern could not decide on
};

struct TailStats {
  std::map<std::string, std::unique_ptr<SourceStats>> sources;   // fixed at construction
  std::atomic<int64_t> lines_read{0};
  std::atomic<int64_t> bytes_read{0};
  std::atomic<int64_t> files_active{0};
  std::atomic<int64_t> files_open{0};    // followed files holding a descriptor ([tail] close_inactive)
  std::atomic<int64_t> files_reopened{0};   // closed files reopened because they changed
  std::atomic<int64_t> readers_running{0};  // reader coroutines: followed files not parked
  std::atomic<int64_t> rotations{0};
  std::atomic<int64_t> truncations{0};   // copytruncate, "> file": see docs/rotation.md
  std::atomic<int64_t> files_ignored{0};  // skipped by ignore_older right now
  std::atomic<bool> paused{false};   // backpressure: the outbox is full
  std::atomic<bool> evented{false};  // every glob directory is watched (inotify)
  std::atomic<int64_t> readers_failed{0};   // readers that stopped on an error: not ready
};

class Tailer {
 public:
  Tailer(boost::asio::any_io_executor executor, const config::Config& config,
         outbox::AsyncOutbox& outbox);
  ~Tailer();

  // Runs until stop(); returns after every reader has finished its current chunk.
  boost::asio::awaitable<void> run();
  void stop();

  const TailStats& stats() const;

  struct FileProgress {
    std::string source, path;
    int64_t size = 0;       // as last seen by its reader
    int64_t offset = 0;     // committed read offset
  };
  // One entry per followed file. Safe from any thread.
  std::vector<FileProgress> files() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace tailbox::tail
