// Reader::Reading: the state one reader coroutine keeps between chunks, and
// its steps. Internal to tail/ (file_reader.cpp: the steps; read_loop.cpp: the
// text and gzip loops). Used on the reader's strand only.
#pragma once

#include <sys/stat.h>

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/clock.hpp"
#include "outbox/async_outbox.hpp"
#include "tail/file_reader.hpp"
#include "tail/record_assembler.hpp"

namespace tailbox::tail {

namespace asio = boost::asio;

// How long a reader in a watched directory waits when nothing wakes it: a
// backstop only.
constexpr std::chrono::milliseconds kWokenOnly{3'600'000};

// A reader that read a file to its end twice within this interval (the file
// is written in pieces faster than that) waits out the interval before it
// looks again, and goes on so while each wait finds more written: an application that writes line by line would otherwise cost a
// wake-up, a read and an outbox transaction per write. It adds at most this
// much to a line's latency; a file written less often, or read in full chunks
// (a backlog), never waits.
constexpr std::chrono::milliseconds kReadCoalesce{10};

int64_t mtime_ms(const struct stat& st);
// Reads buf.size() bytes at `offset` (fewer at the end of the file): false on
// an I/O error.
bool pread_full(int fd, std::string& buf, int64_t offset, size_t& got);

// One reader's loop and the state it keeps between chunks. Two offsets: the
// bytes consumed so far end at read_pos_; the committed checkpoint may be
// behind it while a record is incomplete (see RecordAssembler).
class Reader::Reading {
 public:
  Reading(std::shared_ptr<ReaderEnv> env, std::shared_ptr<Reader> r)
      : env_(std::move(env)),
        r_(std::move(r)),
        cfg_(env_->cfg),
        src_(r_->source_),
        assembler_(src_, r_->start_),
        read_pos_(r_->file_.read_offset),
        committed_(read_pos_),
        last_size_(r_->size_seen_.load()),
        last_mtime_(r_->mtime_seen_.load()),
        last_change_ms_(r_->last_change_ms_.load() > 0 ? r_->last_change_ms_.load() : unix_ms()),
        timer_(r_->strand_),
        coalesce_timer_(r_->strand_) {
    r_->timer_ = &timer_;
  }
  ~Reading() { r_->timer_ = nullptr; }
  Reading(const Reading&) = delete;
  Reading& operator=(const Reading&) = delete;

  // Both return true when the reader parks (see parkable()), false when done.
  asio::awaitable<bool> run_text();
  asio::awaitable<void> run_gzip();

 private:
  // Looks at the file; false when it cannot be stat'ed (waited already).
  asio::awaitable<bool> look(struct stat& st);
  // Stores out_ and moves the checkpoint to `next`; on failure waits (backoff)
  // and returns false: the caller starts over from the checkpoint.
  asio::awaitable<bool> commit(int64_t next, int64_t file_size);
  asio::awaitable<void> sleep(std::chrono::milliseconds d);
  // Waits for an event or `d`.
  asio::awaitable<void> idle(std::chrono::milliseconds d);
  // Waits out the rest of kReadCoalesce since the last read that reached the
  // end of the file, when that read came rapid_ly after the one before
  // (returns at once otherwise, or when stopping).
  asio::awaitable<void> coalesce();
  std::chrono::milliseconds idle_time(bool partial_waits, int64_t now) const;
  // The file shrank below what was read, or its first bytes changed.
  asio::awaitable<void> restart_truncated(int64_t size);
  asio::awaitable<bool> release(const char* what);
  // Whether the file may be closed now ([tail] close_inactive): read to its
  // end, nothing pending, named by a glob, quiet long enough.
  bool closable(int64_t size, int64_t now) const;
  // Nothing pending, read to its end: the reader's whole state is in *r_.
  bool settled(int64_t size) const {
    return !r_->gzip_ && !r_->gone_.load() && read_pos_ >= size && committed_ == read_pos_ &&
           out_.empty() && !assembler_.has_pending() && !big_read_;
  }
  // Whether the reader may end its coroutine until wake() starts another:
  // settled, and something other than its own timer will wake it (an event,
  // the scan). A parked file costs its Reader and, unless closed, a descriptor.
  bool parkable(int64_t size) const;
  void close_file();
  enum class Reopen { reopened, unchanged, released };
  // A closed file: reopened if it changed (same dev and inode); released if no
  // glob names it any more.
  asio::awaitable<Reopen> reopen();
  // Whether the first bytes recorded in the identity are still the file's.
  bool prefix_changed() const;
  // Whether reading pauses for backpressure. A file that no glob names any
  // more (rotated away, deleted) is read on: its unread bytes exist only
  // behind its descriptor, and a stop or a crash would lose them.
  // The disk's headroom is kept for them too: acks need it.
  bool paused() const {
    return env_->paused() && (!r_->gone_.load() || env_->outbox.backlog().disk_low);
  }
  void start_over() {
    assembler_.reset();
    out_.clear();
    timer_cut_ = false;
    timer_held_ = false;
    read_pos_ = committed_;
    big_read_ = false;
  }
  bool quiet_for(std::chrono::milliseconds d, int64_t now) const { return now - last_change_ms_ >= d.count(); }

  std::shared_ptr<ReaderEnv> env_;
  std::shared_ptr<Reader> r_;
  const config::Config& cfg_;
  const config::SourceConfig& src_;
  RecordAssembler assembler_;
  std::vector<Line> out_;
  std::string buf_;
  int64_t read_pos_;
  int64_t committed_;
  int64_t last_size_, last_mtime_, last_change_ms_;   // kept in *r_ while parked
  bool big_read_ = false;   // a line longer than one chunk is being read
  // out_ holds a record whose end a timer decided (see outbox::Chunk::durable).
  bool timer_cut_ = false;
  // The assembler holds an incomplete record with a line a timer cut (a
  // multiline record being built): the commit that emits it must be durable
  // too, whatever ends it later (a start line, multiline.max_bytes).
  bool timer_held_ = false;
  std::chrono::milliseconds backoff_{0};
  bool rapid_ = false;       // the last two reads reached the end within kReadCoalesce
  bool coalesced_ = false;   // coalesce() waited before the last read
  ReaderTimer timer_;            // sleep(): cut short by Reader::wake()
  ReaderTimer coalesce_timer_;   // coalesce(): not cut short by events
};

}  // namespace tailbox::tail
