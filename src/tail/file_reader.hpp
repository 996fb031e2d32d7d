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
// Thread-safety: the reader coroutine owns `file`, `fd` and `timer`; the
// tailer reads `file.path`/`file.identity` under `mu`, sets `gone`, and calls
// wake() from any thread.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <atomic>
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

struct Reader;
// Typed on the strand: a timer on an any_io_executor keeps a heap copy of it.
using ReaderTimer =
    boost::asio::basic_waitable_timer<std::chrono::steady_clock,
                                      boost::asio::wait_traits<std::chrono::steady_clock>,
                                      boost::asio::strand<boost::asio::any_io_executor>>;

// What the tailer and every reader share. Outlives the readers (shared_ptr).
struct ReaderEnv {
  ReaderEnv(const config::Config& c, outbox::AsyncOutbox& o) : cfg(c), outbox(o) {}
  const config::Config& cfg;
  outbox::AsyncOutbox& outbox;
  TailStats stats;
  std::shared_ptr<Watcher> watcher;   // set before the first reader starts
  std::atomic<bool> stopping{false};
  // Starts a reader's coroutine again after it parked (see read_file). Set
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

struct Reader : std::enable_shared_from_this<Reader> {
  // `strand` may be shared with other readers.
  explicit Reader(boost::asio::strand<boost::asio::any_io_executor> s) : strand(std::move(s)) {}
  ~Reader();

  // Wakes the reader if it waits; from any thread. Cheap when called often.
  void wake();

  outbox::TrackedFile file;
  const config::SourceConfig* source = nullptr;
  std::shared_ptr<const StartPattern> start;      // the source's multiline pattern, or null
  SourceStats* source_stats = nullptr;
  bool gzip = false;                              // a .gz file: read once, decompressed
  int fd = -1;
  std::mutex mu;
  std::atomic<int64_t> size_seen{-1}, mtime_seen{-1}, offset_now{0};
  std::atomic<bool> gone{false};    // no glob path names this file any more
  std::atomic<bool> closed{false};  // fd closed for close_inactive: reopened when it changes
  std::atomic<bool> parked{false};  // no coroutine: wake() starts one (on `strand` only)
  std::atomic<int64_t> last_change_ms{0};   // when its size or mtime last changed
  std::weak_ptr<ReaderEnv> env;
  std::atomic<bool> done{false};    // read to the end and released
  std::atomic<bool> woken{false};   // an event came since the reader last looked
  std::atomic<bool> via_link{false};  // named through a symbolic link: writes show up in
                                      // the target's directory, unwatched: polled
  boost::asio::strand<boost::asio::any_io_executor> strand;
  // The running coroutine's timer (its waits), null while parked; on `strand`
  // only. Owned by the coroutine: a parked reader holds none.
  ReaderTimer* timer = nullptr;
};

// "dir" of "dir/name"; "." for a bare name; "/" for "/name".
std::string dir_of(const std::string& path);

// Reads `r` until it is released or env->stopping (false), or until it parks
// (true): read to its end, nothing pending, and an event or the scan will wake
// it. A parked reader has no coroutine, no timer wait, no buffers: its state
// is *r; wake() starts read_file again through env->spawn. Run on r->strand.
boost::asio::awaitable<bool> read_file(std::shared_ptr<ReaderEnv> env, std::shared_ptr<Reader> r);

// Closes a parked reader's file if it is still parked (close_inactive). From
// any thread.
void close_if_parked(const std::shared_ptr<ReaderEnv>& env, const std::shared_ptr<Reader>& r);

}  // namespace tailbox::tail
