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
#include "tail/reading.hpp"

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

Reader::Reader(ReaderStrand strand, const config::SourceConfig& source,
               std::shared_ptr<const StartPattern> start, SourceStats& source_stats, int fd)
    : source_(source),
      start_(std::move(start)),
      source_stats_(source_stats),
      strand_(std::move(strand)),
      fd_(fd) {}

Reader::~Reader() {
  if (fd_ >= 0) ::close(fd_);
}

void Reader::track(outbox::TrackedFile file) {
  std::lock_guard lock(mu_);
  file_ = std::move(file);
}

void Reader::attach(const std::shared_ptr<ReaderEnv>& env) {
  std::string path;
  {
    std::lock_guard lock(mu_);
    offset_now_ = file_.read_offset;
    path = file_.path;
  }
  gzip_ = path.ends_with(".gz");
  via_link_ = is_link(path);
  env_ = env;
  ++env->stats.files_open;
}

void Reader::wake() {
  if (woken_.exchange(true)) return;   // already woken: the reader will look anyway
  asio::post(strand_, [self = shared_from_this()] {
    // Parking and this run on the strand: a reader parks only if not woken.
    if (!self->parked_.exchange(false)) {
      if (self->timer_) self->timer_->cancel();
      return;
    }
    if (auto env = self->env_.lock(); env && env->spawn) env->spawn(self);
  });
}

void Reader::renamed(const std::string& path) {
  {
    std::lock_guard lock(mu_);
    file_.path = path;
  }
  via_link_ = is_link(path);
  wake();
}

void Reader::close_unread(TailStats& stats) {
  if (fd_ < 0) return;
  ::close(fd_);
  fd_ = -1;
  --stats.files_open;
}

void Reader::close_if_parked() {
  asio::post(strand_, [self = shared_from_this()] {
    auto env = self->env_.lock();
    if (!env || !self->parked_.load() || self->closed_.load() || self->fd_ < 0)
      return;   // woken meanwhile
    spdlog::debug("{}: quiet for close_inactive, closed at offset {}", self->path(),
                  self->offset_now_.load());
    self->close_unread(env->stats);
    self->closed_ = true;
  });
}

outbox::TrackedFile Reader::file() const {
  std::lock_guard lock(mu_);
  return file_;
}

std::string Reader::path() const {
  std::lock_guard lock(mu_);
  return file_.path;
}

std::pair<uint64_t, uint64_t> Reader::key() const {
  std::lock_guard lock(mu_);
  return {file_.identity.dev, file_.identity.inode};
}

asio::awaitable<bool> Reader::run(std::shared_ptr<ReaderEnv> env, std::shared_ptr<Reader> r) {
  Reading reading(env, r);
  if (r->gzip_) co_await reading.run_gzip();
  else if (co_await reading.run_text()) {
    r->parked_ = true;   // wake() starts another coroutine
    co_return true;
  }
  r->close_unread(env->stats);
  co_return false;
}

std::string dir_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

bool is_link(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

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

asio::awaitable<void> Reader::Reading::sleep(milliseconds d) {
  timer_.expires_after(d);
  boost::system::error_code ec;
  co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

asio::awaitable<void> Reader::Reading::idle(milliseconds d) {
  if (r_->woken_.load()) co_return;   // an event arrived while we were reading
  co_await sleep(d);
}

asio::awaitable<void> Reader::Reading::coalesce() {
  const auto since = std::chrono::steady_clock::now() - r_->last_read_end_;
  if (!rapid_ || since >= kReadCoalesce || env_->stopping.load()) co_return;
  coalesced_ = true;
  coalesce_timer_.expires_after(kReadCoalesce - since);
  boost::system::error_code ec;
  co_await coalesce_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

milliseconds Reader::Reading::idle_time(bool partial_waits, int64_t now) const {
  const std::string dir = dir_of(r_->path());
  // In a watched directory an event (or the tailer's scan, which compares every
  // file's size and mtime with what its reader saw, every recheck_interval)
  // wakes the reader: it need not look by itself. Elsewhere it polls.
  const bool gone = r_->gone_.load();
  milliseconds d = !gone && !r_->via_link_.load() && env_->watcher->covers(dir)
                       ? kWokenOnly
                       : cfg_.tail.read_interval;
  auto until = [&](milliseconds timeout) {
    int64_t left = timeout.count() - (now - last_change_ms_);
    d = std::min(d, milliseconds(std::max<int64_t>(left, 1)));
  };
  if (partial_waits && src_.partial_line_timeout.count() > 0) until(src_.partial_line_timeout);
  if (assembler_.has_pending() && src_.multiline.timeout.count() > 0) until(src_.multiline.timeout);
  if (gone || r_->gzip_) until(cfg_.tail.rotate_wait);
  if (!gone && !r_->gzip_ && cfg_.tail.close_inactive.count() > 0) until(cfg_.tail.close_inactive);
  return d;
}

asio::awaitable<bool> Reader::Reading::look(struct stat& st) {
  if (fstat(r_->fd_, &st) != 0) {
    spdlog::error("cannot stat {}: {}", r_->path(), std::strerror(errno));
    co_await sleep(cfg_.tail.poll_interval);
    co_return false;
  }
  int64_t size = st.st_size, mtime = mtime_ms(st);
  r_->size_seen_ = size;
  r_->mtime_seen_ = mtime;
  if (size != last_size_ || mtime != last_mtime_) {
    last_size_ = size;
    last_mtime_ = mtime;
    last_change_ms_ = unix_ms();
    r_->last_change_ms_ = last_change_ms_;
  }
  co_return true;
}

bool Reader::Reading::prefix_changed() const {
  const FileIdentity& id = r_->file_.identity;
  if (id.fingerprint_len <= 0) return false;
  std::string head(static_cast<size_t>(id.fingerprint_len), '\0');
  size_t got = 0;
  if (!pread_full(r_->fd_, head, 0, got)) return false;   // an I/O error is not a truncation
  return got < head.size() || fnv1a64(head.data(), got) != id.fingerprint;
}

asio::awaitable<bool> Reader::Reading::commit(int64_t next, int64_t file_size) {
  outbox::Chunk chunk;
  chunk.file_id = r_->file_.id;
  chunk.inode = r_->file_.identity.inode;
  chunk.next_offset = next;
  chunk.ingest_ms = unix_ms();
  chunk.lines = std::move(out_);
  chunk.durable = timer_cut_ || timer_held_;
  chunk.grown_fingerprint =
      grown_identity(r_->fd_, r_->file_.identity, cfg_.tail.fingerprint_bytes, file_size);
  Status st = co_await env_->outbox.append(chunk);
  out_ = std::move(chunk.lines);
  if (!st) {
    backoff_ = std::min<milliseconds>(milliseconds(5000),
                                      backoff_.count() == 0 ? milliseconds(100) : backoff_ * 2);
    spdlog::warn("cannot write lines of {} to the outbox ({}); retrying in {} ms",
                 r_->path(), st.message(), backoff_.count());
    co_await sleep(backoff_);
    co_return false;
  }
  backoff_ = milliseconds(0);
  auto lines = static_cast<int64_t>(out_.size());
  int64_t bytes = next - committed_;
  env_->stats.lines_read += lines;
  env_->stats.bytes_read += bytes;
  r_->source_stats_.lines_read += lines;
  r_->source_stats_.bytes_read += bytes;
  committed_ = next;
  r_->offset_now_ = next;
  {
    std::lock_guard lock(r_->mu_);
    r_->file_.read_offset = next;
    if (chunk.grown_fingerprint) {
      r_->file_.identity.fingerprint = chunk.grown_fingerprint->fingerprint;
      r_->file_.identity.fingerprint_len = chunk.grown_fingerprint->fingerprint_len;
    }
  }
  out_.clear();
  timer_cut_ = false;
  if (next >= read_pos_) timer_held_ = false;   // nothing incomplete is held any more
  assembler_.release();
  co_return true;
}

asio::awaitable<bool> Reader::Reading::release(const char* what) {
  int64_t id = r_->file_.id;
  Status st = co_await env_->outbox.run([id](outbox::Outbox& o) { return o.release_file(id); });
  if (!st) {
    spdlog::warn("cannot release {}: {}; retrying", r_->path(), st.message());
    co_return false;
  }
  spdlog::info("released {} after reading it {} ({} bytes)", r_->path(), what, committed_);
  r_->done_ = true;
  co_return true;
}

bool Reader::Reading::closable(int64_t size, int64_t now) const {
  const auto after = cfg_.tail.close_inactive;
  return after.count() > 0 && !r_->via_link_.load() && settled(size) && quiet_for(after, now);
}

bool Reader::Reading::parkable(int64_t size) const {
  if (!settled(size) || r_->woken_.load()) return false;
  if (r_->closed_.load()) return true;   // the scan compares its size and mtime
  const std::string dir = dir_of(r_->path());
  return !r_->via_link_.load() && env_->watcher->covers(dir);
}

void Reader::Reading::close_file() {
  spdlog::debug("{}: quiet for close_inactive, closed at offset {}", r_->path(), committed_);
  r_->close_unread(env_->stats);
  r_->closed_ = true;
}

asio::awaitable<Reader::Reading::Reopen> Reader::Reading::reopen() {
  const std::string path = r_->path();   // the scan renames it (found by dev and inode)
  if (r_->gone_.load()) {
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
  const FileIdentity& id = r_->file_.identity;
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
  r_->fd_ = fd;
  r_->closed_ = false;
  ++env_->stats.files_open;
  ++env_->stats.files_reopened;
  spdlog::debug("{}: changed, reopened at offset {}", path, committed_);
  co_return Reopen::reopened;
}

asio::awaitable<void> Reader::Reading::restart_truncated(int64_t size) {
  auto identity = identify(r_->fd_, cfg_.tail.fingerprint_bytes);
  if (!identity) {
    co_await sleep(cfg_.tail.read_interval);
    co_return;
  }
  ++env_->stats.truncations;
  ++r_->source_stats_.truncations;
  spdlog::warn("{} was truncated ({} bytes now, {} read{}; copytruncate or \"> file\"): reading "
               "it again from the start as a new file. Lines written to it and not read before "
               "the truncation are lost", r_->path(), size, read_pos_,
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
                    "outbox keeps failing): they are lost", r_->path(), out_.size());
      co_return;
    }
  }
  const std::string name = src_.name, path = r_->path();
  const int64_t old_id = r_->file_.id;
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
    std::lock_guard lock(r_->mu_);
    r_->file_ = *fresh;
  }
  assembler_.reset();
  out_.clear();
  read_pos_ = committed_ = 0;
  r_->offset_now_ = 0;
  big_read_ = false;
  last_size_ = -1;
}

}  // namespace tailbox::tail
