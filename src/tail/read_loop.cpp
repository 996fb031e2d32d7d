// The two loops of a reader coroutine: a text file followed as it grows, and
// a .gz file read once. Their steps are in file_reader.cpp (tail/reading.hpp).
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "tail/gzip_stream.hpp"
#include "tail/reading.hpp"

namespace tailbox::tail {

using std::chrono::milliseconds;

asio::awaitable<bool> Reader::Reading::run_text() {
  const auto rotate_wait = cfg_.tail.rotate_wait;
  for (;;) {
    // A stop (or a reload) ends reading at a committed chunk, except for a
    // file no glob names any more: its unread bytes exist only behind this
    // descriptor, so it is read to its end first (within shutdown_timeout).
    const bool draining = env_->stopping.load();
    if (draining && !r_->gone_.load()) break;
    r_->woken_ = false;
    if (r_->closed_.load()) {
      Reopen what = co_await reopen();
      if (what == Reopen::released) break;
      if (what == Reopen::unchanged) {
        if (parkable(read_pos_)) co_return true;
        co_await idle(kWokenOnly);
        continue;
      }
      // Same dev and inode; the same file only if its first bytes are the
      // same too (copytruncate, or the inode freed and reused: a new file).
      struct stat again {};
      if (co_await look(again) && (again.st_size < read_pos_ || prefix_changed()))
        co_await restart_truncated(again.st_size);
      continue;
    }
    if (paused()) {
      if (draining) break;
      co_await sleep(std::max(cfg_.tail.read_interval, cfg_.tail.poll_interval));
      continue;
    }
    struct stat st {};
    if (!co_await look(st)) {
      if (draining) break;
      continue;
    }
    const int64_t size = st.st_size;
    const int64_t now = unix_ms();
    if (size < read_pos_) {
      co_await restart_truncated(size);
      continue;
    }
    const bool quiet_for_rotation = r_->gone_.load() && (draining || quiet_for(rotate_wait, now));

    bool at_end = size <= read_pos_;   // nothing left but, maybe, a partial line
    bool progressed = false;
    if (size > read_pos_) {
      int64_t avail = size - read_pos_;
      int64_t want = big_read_ ? std::min<int64_t>(avail, src_.max_line_bytes + 2)
                               : std::min<int64_t>(avail, cfg_.tail.read_chunk_bytes);
      buf_.resize(static_cast<size_t>(want));
      size_t got = 0;
      if (!pread_full(r_->fd_, buf_, read_pos_, got)) {
        spdlog::error("cannot read {}: {}", r_->path(), std::strerror(errno));
        co_await sleep(cfg_.tail.poll_interval);
        continue;
      }
      buf_.resize(got);
      if (read_pos_ + static_cast<int64_t>(got) >= size) {
        const auto t = std::chrono::steady_clock::now();
        const auto gap = t - r_->last_read_end_;
        rapid_ = gap < kReadCoalesce || (coalesced_ && gap < 2 * kReadCoalesce);
        coalesced_ = false;
        r_->last_read_end_ = t;
      }
      // Checked after reading: a truncation followed by new writes (size back
      // above read_pos_) must not pass the new bytes off as the old file's.
      if (got == 0) continue;   // it shrank since fstat: the next look sees it
      if (prefix_changed()) {
        co_await restart_truncated(size);
        continue;
      }
      const bool at_eof = read_pos_ + static_cast<int64_t>(got) >= size;
      const bool flush = at_eof && (quiet_for_rotation ||
                                    (src_.partial_line_timeout.count() > 0 &&
                                     quiet_for(src_.partial_line_timeout, now)));
      const size_t before = out_.size();
      size_t used = assembler_.consume(buf_, read_pos_, flush, out_);
      if (flush && out_.size() > before) timer_cut_ = true;
      if (flush && assembler_.checkpoint(read_pos_ + static_cast<int64_t>(used)) <
                       read_pos_ + static_cast<int64_t>(used))
        timer_held_ = true;
      if (used == 0 && !at_eof && !big_read_) {
        big_read_ = true;   // a line longer than a chunk: read up to max_line_bytes
        continue;
      }
      if (used > 0) {
        big_read_ = false;
        read_pos_ += static_cast<int64_t>(used);
        progressed = true;
      }
      at_end = at_eof;
    }
    if (at_end && assembler_.has_pending() &&
        (quiet_for_rotation ||
         (src_.multiline.timeout.count() > 0 && quiet_for(src_.multiline.timeout, now)))) {
      assembler_.flush_pending(out_);
      timer_cut_ = true;
    }
    if (at_end && quiet_for_rotation) {
      const size_t before = out_.size();
      assembler_.finish(out_);
      if (out_.size() > before) timer_cut_ = true;
    }

    const int64_t next = assembler_.checkpoint(read_pos_);
    if (!out_.empty() || next != committed_) {
      if (!co_await commit(next, size)) {
        start_over();
        if (draining) break;   // the outbox fails: what is left is read after a restart, if it can be
        continue;
      }
      // More may be there already: read on at once after a full chunk (a
      // backlog); after a read to the end, let the writer add more first.
      if (at_end && !draining) co_await coalesce();
      continue;
    }
    if (progressed) continue;

    buf_.clear();
    buf_.shrink_to_fit();   // a quiet file keeps no buffer
    if (quiet_for_rotation && read_pos_ >= size) {
      // Rotated away or deleted, read to its end and quiet: let it go.
      if (co_await release("to the end")) break;
    }
    if (draining) break;
    if (closable(size, now)) {
      close_file();
      continue;
    }
    if (parkable(size)) co_return true;
    co_await idle(idle_time(size > read_pos_, now));
  }
  co_return false;
}

// A .gz file: decompressed once from the start (or from its checkpoint after a
// restart) and released at the end of the stream. A stream that stops inside
// a member waits for more bytes (gzip may still be writing it) until the file
// has been quiet for rotate_wait.
asio::awaitable<void> Reader::Reading::run_gzip() {
  auto gz = std::make_unique<GzipStream>(r_->fd_);
  std::string pending;   // decompressed bytes from read_pos_ on, not consumed yet
  size_t want = static_cast<size_t>(cfg_.tail.read_chunk_bytes);
  bool warned = false, warned_stall = false;
  while (!env_->stopping.load()) {
    r_->woken_ = false;
    if (paused()) {
      co_await sleep(std::max(cfg_.tail.read_interval, cfg_.tail.poll_interval));
      continue;
    }
    struct stat st {};
    if (!co_await look(st)) continue;
    const int64_t now = unix_ms();

    GzipStream::State state = GzipStream::State::more;
    if (gz->position() < read_pos_) state = gz->skip(read_pos_ - gz->position());
    if (gz->position() >= read_pos_ && state == GzipStream::State::more &&
        pending.size() < want)
      state = gz->read(pending, want - pending.size());
    const bool caught_up = gz->position() >= read_pos_;
    // A stream that stops inside a member for rotate_wait is waited for as
    // long as a glob names the file (gzip may be slow, or the disk full):
    // released, anything written to it later would never be read.
    const bool stalled =
        state == GzipStream::State::truncated && quiet_for(cfg_.tail.rotate_wait, now);
    const bool last = state == GzipStream::State::end || state == GzipStream::State::error ||
                      (stalled && r_->gone_.load());
    if (stalled && !last && !warned_stall) {
      warned_stall = true;
      spdlog::warn("{}: ends inside a gzip member and stayed so for rotate_wait; waiting for "
                   "the rest while a glob names it ({} bytes decompressed so far)",
                   r_->path(), gz->position());
    }
    if (!stalled) warned_stall = false;
    if (last && state != GzipStream::State::end && !warned) {
      warned = true;
      spdlog::warn("{}: {}; delivering the {} bytes it decompressed to", r_->path(),
                   state == GzipStream::State::error
                       ? gz->message()
                       : std::string("ends inside a gzip member and stayed so for rotate_wait"),
                   gz->position());
    }
    size_t used = 0;
    if (caught_up) {
      used = assembler_.consume(pending, read_pos_, last, out_);
      read_pos_ += static_cast<int64_t>(used);
      pending.erase(0, used);
      if (last) {
        assembler_.finish(out_);
        timer_cut_ = true;   // the stream's end decided the last record's end
      }
    }
    const int64_t next = assembler_.checkpoint(read_pos_);
    if (!out_.empty() || next != committed_) {
      if (!co_await commit(next, st.st_size)) {
        start_over();
        pending.clear();
        gz = std::make_unique<GzipStream>(r_->fd_);   // decompress again up to the checkpoint
      }
      continue;
    }
    if (used > 0) {
      want = static_cast<size_t>(cfg_.tail.read_chunk_bytes);
      continue;
    }
    if (state == GzipStream::State::more) {
      want = pending.size() + static_cast<size_t>(cfg_.tail.read_chunk_bytes);   // a long line
      continue;
    }
    if (last) {
      if (state == GzipStream::State::end && !gz->message().empty())
        spdlog::warn("{}: {}", r_->path(), gz->message());
      if (co_await release("once, decompressed")) break;
    }
    co_await idle(stalled ? cfg_.tail.read_interval : idle_time(false, now));
  }
}

}  // namespace tailbox::tail
