#include "tail/file_reader.hpp"

#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>

#include "core/clock.hpp"
#include "outbox/async_outbox.hpp"
#include "tail/file_identity.hpp"
#include "tail/gzip_stream.hpp"
#include "tail/record_assembler.hpp"

namespace tailbox::tail {

namespace asio = boost::asio;
using std::chrono::milliseconds;

bool ReaderEnv::paused() {
  outbox::Backlog b = outbox.backlog();
  const auto& oc = cfg.outbox;
  if (stats.paused.load()) {
    if (b.rows < oc.max_rows * 9 / 10 && b.bytes < oc.max_bytes / 10 * 9 && !b.disk_low) {
      if (stats.paused.exchange(false))
        spdlog::info("outbox below its low-water mark ({} rows, {} bytes, {} bytes free on its "
                     "disk): reading resumes", b.rows, b.bytes, b.free_bytes);
    }
  } else if (b.disk_low) {
    // Headroom for acks: delivered rows must always be deletable.
    if (!stats.paused.exchange(true))
      spdlog::warn("outbox disk has {} bytes free ([outbox] min_free_bytes = {}): reading pauses "
                   "until delivery frees space, nothing is dropped", b.free_bytes,
                   oc.min_free_bytes);
  } else if (b.rows >= oc.max_rows || b.bytes >= oc.max_bytes) {
    if (!stats.paused.exchange(true))
      spdlog::warn("outbox full ({} rows, {} bytes; limits {} rows, {} bytes): reading pauses, "
                   "nothing is dropped", b.rows, b.bytes, oc.max_rows, oc.max_bytes);
  }
  return stats.paused.load();
}

Reader::~Reader() {
  if (fd >= 0) ::close(fd);
}

void Reader::wake() {
  if (woken.exchange(true)) return;   // already woken: the reader will look anyway
  asio::post(strand, [self = shared_from_this()] {
    // Parking and this run on the strand: a reader parks only if not woken.
    if (!self->parked.exchange(false)) {
      if (self->timer) self->timer->cancel();
      return;
    }
    if (auto env = self->env.lock(); env && env->spawn) env->spawn(self);
  });
}

std::string dir_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

namespace {

// How long a reader in a watched directory waits when nothing wakes it: a
// backstop only.
constexpr milliseconds kWokenOnly{3'600'000};

int64_t mtime_ms(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000;
}

bool pread_full(int fd, std::string& buf, int64_t offset, size_t& got) {
  got = 0;
  while (got < buf.size()) {
    ssize_t n = pread(fd, buf.data() + got, buf.size() - got, offset + static_cast<int64_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return true;
}

// One reader's loop and the state it keeps between chunks. Two offsets: the
// bytes consumed so far end at read_pos_; the committed checkpoint may be
// behind it while a record is incomplete (see RecordAssembler).
class FileReading {
 public:
  FileReading(std::shared_ptr<ReaderEnv> env, std::shared_ptr<Reader> r)
      : env_(std::move(env)),
        r_(std::move(r)),
        cfg_(env_->cfg),
        src_(*r_->source),
        assembler_(src_, r_->start),
        read_pos_(r_->file.read_offset),
        committed_(read_pos_),
        last_size_(r_->size_seen.load()),
        last_mtime_(r_->mtime_seen.load()),
        last_change_ms_(r_->last_change_ms.load() > 0 ? r_->last_change_ms.load() : unix_ms()),
        timer_(r_->strand) {
    r_->timer = &timer_;
  }
  ~FileReading() { r_->timer = nullptr; }
  FileReading(const FileReading&) = delete;
  FileReading& operator=(const FileReading&) = delete;

  // Both return true when the reader parks (see parkable()), false when done.
  asio::awaitable<bool> run_text();
  asio::awaitable<void> run_gzip();

 private:
  // Looks at the file; false when it cannot be stat'ed (waited already).
  asio::awaitable<bool> look(struct stat& st);
  // Stores out_ and moves the checkpoint to `next`; on failure waits (backoff)
  // and returns false: the caller starts over from the checkpoint.
  asio::awaitable<bool> commit(int64_t next, int64_t file_size);
  asio::awaitable<void> sleep(milliseconds d);
  // Waits for an event or `d`.
  asio::awaitable<void> idle(milliseconds d);
  milliseconds idle_time(bool partial_waits, int64_t now) const;
  // The file shrank below what was read, or its first bytes changed.
  asio::awaitable<void> restart_truncated(int64_t size);
  asio::awaitable<bool> release(const char* what);
  // Whether the file may be closed now ([tail] close_inactive): read to its
  // end, nothing pending, named by a glob, quiet long enough.
  bool closable(int64_t size, int64_t now) const;
  // Nothing pending, read to its end: the reader's whole state is in *r_.
  bool settled(int64_t size) const {
    return !r_->gzip && !r_->gone.load() && read_pos_ >= size && committed_ == read_pos_ &&
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
    return env_->paused() && (!r_->gone.load() || env_->outbox.backlog().disk_low);
  }
  void start_over() {
    assembler_.reset();
    out_.clear();
    timer_cut_ = false;
    timer_held_ = false;
    read_pos_ = committed_;
    big_read_ = false;
  }
  bool quiet_for(milliseconds d, int64_t now) const { return now - last_change_ms_ >= d.count(); }

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
  milliseconds backoff_{0};
  ReaderTimer timer_;
};

asio::awaitable<void> FileReading::sleep(milliseconds d) {
  timer_.expires_after(d);
  boost::system::error_code ec;
  co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

asio::awaitable<void> FileReading::idle(milliseconds d) {
  if (r_->woken.load()) co_return;   // an event arrived while we were reading
  co_await sleep(d);
}

milliseconds FileReading::idle_time(bool partial_waits, int64_t now) const {
  std::string dir;
  {
    std::lock_guard lock(r_->mu);
    dir = dir_of(r_->file.path);
  }
  // In a watched directory an event (or the tailer's scan, which compares every
  // file's size and mtime with what its reader saw, every recheck_interval)
  // wakes the reader: it need not look by itself. Elsewhere it polls.
  const bool gone = r_->gone.load();
  milliseconds d = !gone && !r_->via_link.load() && env_->watcher->covers(dir)
                       ? kWokenOnly
                       : cfg_.tail.read_interval;
  auto until = [&](milliseconds timeout) {
    int64_t left = timeout.count() - (now - last_change_ms_);
    d = std::min(d, milliseconds(std::max<int64_t>(left, 1)));
  };
  if (partial_waits && src_.partial_line_timeout.count() > 0) until(src_.partial_line_timeout);
  if (assembler_.has_pending() && src_.multiline.timeout.count() > 0) until(src_.multiline.timeout);
  if (gone || r_->gzip) until(cfg_.tail.rotate_wait);
  if (!gone && !r_->gzip && cfg_.tail.close_inactive.count() > 0) until(cfg_.tail.close_inactive);
  return d;
}

asio::awaitable<bool> FileReading::look(struct stat& st) {
  if (fstat(r_->fd, &st) != 0) {
    spdlog::error("cannot stat {}: {}", r_->file.path, std::strerror(errno));
    co_await sleep(cfg_.tail.poll_interval);
    co_return false;
  }
  int64_t size = st.st_size, mtime = mtime_ms(st);
  r_->size_seen = size;
  r_->mtime_seen = mtime;
  if (size != last_size_ || mtime != last_mtime_) {
    last_size_ = size;
    last_mtime_ = mtime;
    last_change_ms_ = unix_ms();
    r_->last_change_ms = last_change_ms_;
  }
  co_return true;
}

bool FileReading::prefix_changed() const {
  const FileIdentity& id = r_->file.identity;
  if (id.fingerprint_len <= 0) return false;
  std::string head(static_cast<size_t>(id.fingerprint_len), '\0');
  size_t got = 0;
  if (!pread_full(r_->fd, head, 0, got)) return false;   // an I/O error is not a truncation
  return got < head.size() || fnv1a64(head.data(), got) != id.fingerprint;
}

asio::awaitable<bool> FileReading::commit(int64_t next, int64_t file_size) {
  outbox::Chunk chunk;
  chunk.file_id = r_->file.id;
  chunk.inode = r_->file.identity.inode;
  chunk.next_offset = next;
  chunk.ingest_ms = unix_ms();
  chunk.lines = std::move(out_);
  chunk.durable = timer_cut_ || timer_held_;
  chunk.grown_fingerprint =
      grown_identity(r_->fd, r_->file.identity, cfg_.tail.fingerprint_bytes, file_size);
  Status st = co_await env_->outbox.append(chunk);
  out_ = std::move(chunk.lines);
  if (!st) {
    backoff_ = std::min<milliseconds>(milliseconds(5000),
                                      backoff_.count() == 0 ? milliseconds(100) : backoff_ * 2);
    spdlog::warn("cannot write lines of {} to the outbox ({}); retrying in {} ms",
                 r_->file.path, st.message(), backoff_.count());
    co_await sleep(backoff_);
    co_return false;
  }
  backoff_ = milliseconds(0);
  auto lines = static_cast<int64_t>(out_.size());
  int64_t bytes = next - committed_;
  env_->stats.lines_read += lines;
  env_->stats.bytes_read += bytes;
  r_->source_stats->lines_read += lines;
  r_->source_stats->bytes_read += bytes;
  committed_ = next;
  r_->offset_now = next;
  {
    std::lock_guard lock(r_->mu);
    r_->file.read_offset = next;
    if (chunk.grown_fingerprint) {
      r_->file.identity.fingerprint = chunk.grown_fingerprint->fingerprint;
      r_->file.identity.fingerprint_len = chunk.grown_fingerprint->fingerprint_len;
    }
  }
  out_.clear();
  timer_cut_ = false;
  if (next >= read_pos_) timer_held_ = false;   // nothing incomplete is held any more
  assembler_.release();
  co_return true;
}



asio::awaitable<bool> FileReading::release(const char* what) {
  int64_t id = r_->file.id;
  Status st = co_await env_->outbox.run([id](outbox::Outbox& o) { return o.release_file(id); });
  if (!st) {
    spdlog::warn("cannot release {}: {}; retrying", r_->file.path, st.message());
    co_return false;
  }
  spdlog::info("released {} after reading it {} ({} bytes)", r_->file.path, what, committed_);
  r_->done = true;
  co_return true;
}

bool FileReading::closable(int64_t size, int64_t now) const {
  const auto after = cfg_.tail.close_inactive;
  return after.count() > 0 && !r_->via_link.load() && settled(size) && quiet_for(after, now);
}

bool FileReading::parkable(int64_t size) const {
  if (!settled(size) || r_->woken.load()) return false;
  if (r_->closed.load()) return true;   // the scan compares its size and mtime
  std::string dir;
  {
    std::lock_guard lock(r_->mu);
    dir = dir_of(r_->file.path);
  }
  return !r_->via_link.load() && env_->watcher->covers(dir);
}

void FileReading::close_file() {
  spdlog::debug("{}: quiet for close_inactive, closed at offset {}", r_->file.path, committed_);
  ::close(r_->fd);
  r_->fd = -1;
  r_->closed = true;
  --env_->stats.files_open;
}

asio::awaitable<FileReading::Reopen> FileReading::reopen() {
  std::string path;
  {
    std::lock_guard lock(r_->mu);
    path = r_->file.path;   // the scan renames it (found by dev and inode)
  }
  if (r_->gone.load()) {
    // No glob names it any more and nothing holds it open: deleted, or
    // renamed out of the globs. What was written to it after it was closed
    // cannot be read.
    spdlog::warn("{} went (deleted, or renamed out of the globs) while closed for "
                 "close_inactive; anything written to it after offset {} is not read",
                 path, committed_);
    if (co_await release("up to when it was closed")) co_return Reopen::released;
    co_await sleep(cfg_.tail.poll_interval);
    co_return Reopen::unchanged;
  }
  const FileIdentity& id = r_->file.identity;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_dev) != id.dev ||
      static_cast<uint64_t>(st.st_ino) != id.inode ||
      (st.st_size == last_size_ && mtime_ms(st) == last_mtime_))
    co_return Reopen::unchanged;   // or renamed: the scan finds it by dev and inode, or sets gone
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat fst {};
  if (fd < 0 || fstat(fd, &fst) != 0 || static_cast<uint64_t>(fst.st_dev) != id.dev ||
      static_cast<uint64_t>(fst.st_ino) != id.inode) {
    if (fd >= 0) ::close(fd);   // renamed in between: the next scan finds it
    co_return Reopen::unchanged;
  }
  r_->fd = fd;
  r_->closed = false;
  ++env_->stats.files_open;
  ++env_->stats.files_reopened;
  spdlog::debug("{}: changed, reopened at offset {}", path, committed_);
  co_return Reopen::reopened;
}

asio::awaitable<void> FileReading::restart_truncated(int64_t size) {
  auto identity = identify(r_->fd, cfg_.tail.fingerprint_bytes);
  if (!identity) {
    co_await sleep(cfg_.tail.read_interval);
    co_return;
  }
  ++env_->stats.truncations;
  ++r_->source_stats->truncations;
  spdlog::warn("{} was truncated ({} bytes now, {} read{}; copytruncate or \"> file\"): reading "
               "it again from the start as a new file. Lines written to it and not read before "
               "the truncation are lost", r_->file.path, size, read_pos_,
               size >= read_pos_ ? ", and its first bytes changed" : "");
  // A record already complete in memory (a multiline record being built, the
  // head of a truncated line) was read before the truncation: it belongs to
  // the old file.
  out_.clear();
  assembler_.finish(out_);
  timer_cut_ = timer_cut_ || !out_.empty();
  // These records exist nowhere else any more: store them even while the
  // relay stops, and never release the old file without them.
  for (int failed = 0; !out_.empty();) {
    if (co_await commit(read_pos_, size)) break;   // on failure out_ is kept: try again
    if (env_->stopping.load() && ++failed >= 5) {
      spdlog::error("{}: stopping with {} records read before its truncation not stored (the "
                    "outbox keeps failing): they are lost", r_->file.path, out_.size());
      co_return;
    }
  }
  const std::string name = src_.name, path = r_->file.path;
  const int64_t old_id = r_->file.id;
  auto fresh = co_await env_->outbox.run([&](outbox::Outbox& o) -> Result<outbox::TrackedFile> {
    if (Status released = o.release_file(old_id); !released) return failed(std::move(released));
    return o.add_file(name, path, *identity, 0);
  });
  if (!fresh) {
    spdlog::error("cannot record truncated {}: {}", path, fresh.error().message());
    co_await sleep(cfg_.tail.poll_interval);
    co_return;
  }
  {
    std::lock_guard lock(r_->mu);
    r_->file = *fresh;
  }
  assembler_.reset();
  out_.clear();
  read_pos_ = committed_ = 0;
  r_->offset_now = 0;
  big_read_ = false;
  last_size_ = -1;
}

asio::awaitable<bool> FileReading::run_text() {
  const auto rotate_wait = cfg_.tail.rotate_wait;
  for (;;) {
    // A stop (or a reload) ends reading at a committed chunk, except for a
    // file no glob names any more: its unread bytes exist only behind this
    // descriptor, so it is read to its end first (within shutdown_timeout).
    const bool draining = env_->stopping.load();
    if (draining && !r_->gone.load()) break;
    r_->woken = false;
    if (r_->closed.load()) {
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
    const bool quiet_for_rotation = r_->gone.load() && (draining || quiet_for(rotate_wait, now));

    bool at_end = size <= read_pos_;   // nothing left but, maybe, a partial line
    bool progressed = false;
    if (size > read_pos_) {
      int64_t avail = size - read_pos_;
      int64_t want = big_read_ ? std::min<int64_t>(avail, src_.max_line_bytes + 2)
                               : std::min<int64_t>(avail, cfg_.tail.read_chunk_bytes);
      buf_.resize(static_cast<size_t>(want));
      size_t got = 0;
      if (!pread_full(r_->fd, buf_, read_pos_, got)) {
        spdlog::error("cannot read {}: {}", r_->file.path, std::strerror(errno));
        co_await sleep(cfg_.tail.poll_interval);
        continue;
      }
      buf_.resize(got);
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
      }
      continue;   // more may be there already
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
asio::awaitable<void> FileReading::run_gzip() {
  auto gz = std::make_unique<GzipStream>(r_->fd);
  std::string pending;   // decompressed bytes from read_pos_ on, not consumed yet
  size_t want = static_cast<size_t>(cfg_.tail.read_chunk_bytes);
  bool warned = false, warned_stall = false;
  while (!env_->stopping.load()) {
    r_->woken = false;
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
                      (stalled && r_->gone.load());
    if (stalled && !last && !warned_stall) {
      warned_stall = true;
      spdlog::warn("{}: ends inside a gzip member and stayed so for rotate_wait; waiting for "
                   "the rest while a glob names it ({} bytes decompressed so far)",
                   r_->file.path, gz->position());
    }
    if (!stalled) warned_stall = false;
    if (last && state != GzipStream::State::end && !warned) {
      warned = true;
      spdlog::warn("{}: {}; delivering the {} bytes it decompressed to", r_->file.path,
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
        gz = std::make_unique<GzipStream>(r_->fd);   // decompress again up to the checkpoint
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
        spdlog::warn("{}: {}", r_->file.path, gz->message());
      if (co_await release("once, decompressed")) break;
    }
    co_await idle(stalled ? cfg_.tail.read_interval : idle_time(false, now));
  }
}

}  // namespace

asio::awaitable<bool> read_file(std::shared_ptr<ReaderEnv> env, std::shared_ptr<Reader> r) {
  FileReading reading(env, r);
  if (r->gzip) co_await reading.run_gzip();
  else if (co_await reading.run_text()) {
    r->parked = true;   // wake() starts another coroutine
    co_return true;
  }
  if (r->fd >= 0) {
    ::close(r->fd);
    r->fd = -1;
    --env->stats.files_open;
  }
  co_return false;
}

void close_if_parked(const std::shared_ptr<ReaderEnv>& env, const std::shared_ptr<Reader>& r) {
  asio::post(r->strand, [env, r] {
    if (!r->parked.load() || r->closed.load() || r->fd < 0) return;   // woken meanwhile
    spdlog::debug("{}: quiet for close_inactive, closed at offset {}", r->file.path,
                  r->offset_now.load());
    ::close(r->fd);
    r->fd = -1;
    r->closed = true;
    --env->stats.files_open;
  });
}

}  // namespace tailbox::tail
