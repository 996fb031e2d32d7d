// The reader of one followed file, internal to the Tailer: a coroutine on its
// strand (from a pool readers share) that reads complete records into the outbox, each chunk
// committed together with the file's new checkpoint. It is the only code that
// moves the file's offset, so a restart resumes exactly where the last
// committed chunk ended.
//
// A reader waits for its file to change. In a watched directory it is woken
// by the tailer: on a watcher event, or when the tailer's scan (every [tail]
// recheck_interval) sees a size or mtime the reader has not seen. Elsewhere
// (poll mode, a rotated-away file) it looks by itself every read_interval.
//
// A text file quiet for [tail] close_inactive, read to its end with nothing
// pending, is closed: the reader keeps its state (identity, offset, path) and
// waits to be woken (an event on its path, or the scan seeing its size or
// mtime change, or its name gone), then reopens it by path, identity checked.
//
// Life: constructed by the tailer's discovery holding an open descriptor;
// track() gives it its outbox row, attach() starts following (once); run() is
// its coroutine, started again by wake() each time it parked.
//
// Thread-safety: the reader coroutine (Reading, on strand()) owns the
// descriptor, the timer and the offsets; the accessors below are safe from any
// thread. track() and attach() on the tailer's strand, before the first run().
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "config/config.hpp"
#include "outbox/outbox.hpp"
#include "tail/multiline.hpp"
#include "tail/tailer.hpp"
#include "tail/watcher.hpp"

namespace tailbox::outbox {
class AsyncOutbox;
}

namespace tailbox::tail {

class Reader;
using ReaderStrand = boost::asio::strand<boost::asio::any_io_executor>;
// Typed on the strand: a timer on an any_io_executor keeps a heap copy of it.
using ReaderTimer =
    boost::asio::basic_waitable_timer<std::chrono::steady_clock,
                                      boost::asio::wait_traits<std::chrono::steady_clock>,
                                      ReaderStrand>;

// What the tailer and every reader share. Outlives the readers (shared_ptr).
struct ReaderEnv {
  ReaderEnv(const config::Config& c, outbox::AsyncOutbox& o) : cfg(c), outbox(o) {}
  const config::Config& cfg;
  outbox::AsyncOutbox& outbox;
  TailStats stats;
  std::shared_ptr<Watcher> watcher;   // set before the first reader starts
  std::atomic<bool> stopping{false};
  // Starts a reader's coroutine again after it parked (see Reader::run). Set
  // by the tailer before the first reader starts.
  std::function<void(std::shared_ptr<Reader>)> spawn;

  // Backpressure with hysteresis: pause at the outbox's limits, resume below 90%.
  bool paused();
  // How often the globs are expanded and every file looked at when all their
  // directories are watched.
  std::chrono::milliseconds recheck() const {
    return std::max(cfg.tail.recheck_interval, cfg.tail.poll_interval);
  }
};

class Reader : public std::enable_shared_from_this<Reader> {
 public:
  // Owns `fd` (an open descriptor of the file) from now on. `strand` may be
  // shared with other readers; `start` is the source's multiline pattern, or null.
  Reader(ReaderStrand strand, const config::SourceConfig& source,
         std::shared_ptr<const StartPattern> start, SourceStats& source_stats, int fd);
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // The file's outbox row. REQUIRES: not attached yet.
  void track(outbox::TrackedFile file);
  // Starts following: counted open in env's stats, woken through env->spawn.
  // REQUIRES: tracked, not attached yet.
  void attach(const std::shared_ptr<ReaderEnv>& env);

  // Reads the reader until it is released or env->stopping (false), or until
  // it parks (true): read to its end, nothing pending, and an event or the scan
  // will wake it. A parked reader has no coroutine, no timer wait, no buffers:
  // its state is the Reader; wake() starts run() again through env->spawn.
  // Run on r->strand().
  static boost::asio::awaitable<bool> run(std::shared_ptr<ReaderEnv> env, std::shared_ptr<Reader> r);

  // Wakes the reader if it waits; from any thread. Cheap when called often.
  void wake();
  // The file was found under `path` (a rotation): reads go on under it.
  void renamed(const std::string& path);
  // Whether a glob still names the file. Returns true when that changed.
  bool set_gone(bool gone) { return gone_.exchange(gone) != gone; }
  // Closes the file if the reader is still parked (close_inactive). From any thread.
  void close_if_parked();
  // Closes the descriptor of a reader no coroutine runs for (stopping).
  void close_unread(TailStats& stats);

  // A copy of the file's row as the reader has it now (path and identity
  // change while it reads).
  outbox::TrackedFile file() const;
  std::string path() const;
  std::pair<uint64_t, uint64_t> key() const;   // (dev, inode)
  const ReaderStrand& strand() const { return strand_; }
  bool gzip() const { return gzip_; }   // a .gz file: read once, decompressed
  bool gone() const { return gone_.load(); }
  bool parked() const { return parked_.load(); }
  bool closed() const { return closed_.load(); }
  bool done() const { return done_.load(); }   // read to the end and released
  int64_t size_seen() const { return size_seen_.load(); }
  int64_t mtime_seen() const { return mtime_seen_.load(); }
  int64_t offset() const { return offset_now_.load(); }   // committed read offset
  int64_t last_change_ms() const { return last_change_ms_.load(); }

 private:
  class Reading;   // the coroutine's state: tail/reading.hpp

  const config::SourceConfig& source_;
  const std::shared_ptr<const StartPattern> start_;
  SourceStats& source_stats_;
  ReaderStrand strand_;
  std::weak_ptr<ReaderEnv> env_;
  bool gzip_ = false;
  int fd_ = -1;                       // -1 while closed for close_inactive
  mutable std::mutex mu_;             // guards file_
  outbox::TrackedFile file_;
  std::atomic<int64_t> size_seen_{-1}, mtime_seen_{-1}, offset_now_{0};
  std::atomic<int64_t> last_change_ms_{0};   // when its size or mtime last changed
  // When a read last reached the end of the file (the reader's strand only;
  // kept while parked: see kReadCoalesce).
  std::chrono::steady_clock::time_point last_read_end_{};
  std::atomic<bool> gone_{false};     // no glob path names this file any more
  std::atomic<bool> closed_{false};   // fd closed for close_inactive: reopened when it changes
  std::atomic<bool> parked_{false};   // no coroutine: wake() starts one (on the strand only)
  std::atomic<bool> done_{false};
  std::atomic<bool> woken_{false};    // an event came since the reader last looked
  std::atomic<bool> via_link_{false};   // named through a symbolic link: writes show up in
                                        // the target's directory, unwatched: polled
  // The running coroutine's timer (its waits), null while parked; on the
  // strand only. Owned by the coroutine: a parked reader holds none.
  ReaderTimer* timer_ = nullptr;
};

// "dir" of "dir/name"; "." for a bare name; "/" for "/name".
std::string dir_of(const std::string& path);
// Whether `path` is a symbolic link.
bool is_link(const std::string& path);

}  // namespace tailbox::tail
