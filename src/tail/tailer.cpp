#include "tail/tailer.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "core/clock.hpp"
#include "outbox/async_outbox.hpp"
#include "tail/file_identity.hpp"
#include "tail/glob.hpp"
#include "tail/line_splitter.hpp"

namespace tailbox::tail {

namespace asio = boost::asio;
using outbox::TrackedFile;

namespace {

// One followed file. `file` and `fd` belong to the reader coroutine; discovery
// reads `file.identity`/`file.path` under `mu` and sets `gone`.
struct Reader {
  TrackedFile file;
  const config::SourceConfig* source = nullptr;
  int fd = -1;
  std::mutex mu;
  std::atomic<int64_t> size_seen{0}, offset_now{0};   // for metrics
  std::atomic<bool> gone{false};   // no glob path names this file any more
  std::atomic<bool> done{false};   // read to the end and released
  ~Reader() {
    if (fd >= 0) ::close(fd);
  }
};

bool excluded(const config::SourceConfig& source, const std::string& path) {
  std::string base = path.substr(path.rfind('/') + 1);
  for (const auto& ex : source.exclude) {
    bool full = ex.find('/') != std::string::npos;
    if (glob_match(ex, full ? path : base)) return true;
  }
  return false;
}

// Offset just past the last newline before `size`: where "read_from = tail" starts,
// so that a line being written at start-up is read whole.
int64_t tail_start(int fd, int64_t size) {
  constexpr int64_t kWindow = 64 * 1024;
  int64_t from = size > kWindow ? size - kWindow : 0;
  std::string buf(static_cast<size_t>(size - from), '\0');
  ssize_t n = pread(fd, buf.data(), buf.size(), from);
  if (n <= 0) return size;
  size_t nl = std::string_view(buf.data(), static_cast<size_t>(n)).rfind('\n');
  return nl == std::string_view::npos ? (from == 0 ? 0 : size) : from + static_cast<int64_t>(nl) + 1;
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

}  // namespace

struct Tailer::Impl : std::enable_shared_from_this<Tailer::Impl> {
  asio::any_io_executor executor;
  asio::strand<asio::any_io_executor> strand;
  const config::Config& cfg;
  outbox::AsyncOutbox& outbox;
  TailStats stats;
  std::atomic<bool> stopping{false};
  std::atomic<int> running_readers{0};
  std::vector<std::shared_ptr<Reader>> readers;   // changed on the discovery strand only,
  mutable std::mutex readers_mu;                  // under this lock (files() reads it)
  std::vector<TrackedFile> known;                 // from the outbox, until the first scan
  bool first_scan = true;

  Impl(asio::any_io_executor ex, const config::Config& c, outbox::AsyncOutbox& o)
      : executor(ex), strand(asio::make_strand(ex)), cfg(c), outbox(o) {
    for (const auto& src : cfg.sources) stats.sources[src.name] = std::make_unique<SourceStats>();
  }

  const config::SourceConfig* source_named(const std::string& name) const {
    for (const auto& s : cfg.sources)
      if (s.name == name) return &s;
    return nullptr;
  }

  // Backpressure with hysteresis: pause at the limit, resume below 90% of it.
  bool paused() {
    outbox::Backlog b = outbox.backlog();
    const auto& oc = cfg.outbox;
    if (stats.paused.load()) {
      if (b.rows < oc.max_rows * 9 / 10 && b.bytes < oc.max_bytes / 10 * 9) {
        if (stats.paused.exchange(false))
          spdlog::info("outbox below its low-water mark ({} rows, {} bytes): reading resumes",
                       b.rows, b.bytes);
      }
    } else if (b.rows >= oc.max_rows || b.bytes >= oc.max_bytes) {
      if (!stats.paused.exchange(true))
        spdlog::warn("outbox full ({} rows, {} bytes; limits {} rows, {} bytes): reading pauses, "
                     "nothing is dropped", b.rows, b.bytes, oc.max_rows, oc.max_bytes);
    }
    return stats.paused.load();
  }

  void add_reader(std::shared_ptr<Reader> r) {
    r->offset_now = r->file.read_offset;
    {
      std::lock_guard lock(readers_mu);
      readers.push_back(r);
    }
    start_reader(r);
  }

  void start_reader(std::shared_ptr<Reader> r) {
    ++running_readers;
    ++stats.files_active;
    asio::co_spawn(asio::make_strand(executor), read_loop(shared_from_this(), r),
                   [self = shared_from_this(), r](std::exception_ptr e) {
                     if (e) {
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& ex) {
                         spdlog::error("reader for {} stopped: {}", r->file.path, ex.what());
                       }
                     }
                     --self->stats.files_active;
                     --self->running_readers;
                   });
  }

  static asio::awaitable<void> wait(asio::steady_timer& timer, std::chrono::milliseconds d) {
    timer.expires_after(d);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

  static asio::awaitable<void> read_loop(std::shared_ptr<Impl> self, std::shared_ptr<Reader> r) {
    const config::Config& cfg = self->cfg;
    const config::SourceConfig& src = *r->source;
    SourceStats& source_stats = *self->stats.sources.at(src.name);
    asio::steady_timer timer(co_await asio::this_coro::executor);
    int64_t offset = r->file.read_offset;
    int64_t last_size = -1;
    int64_t last_change_ms = unix_ms();
    bool big_read = false;          // a line longer than one chunk is pending
    std::chrono::milliseconds backoff{0};
    std::string buf;
    std::vector<Line> lines;

    while (!self->stopping.load()) {
      if (self->paused()) {
        co_await wait(timer, cfg.tail.read_interval);
        continue;
      }
      struct stat st {};
      if (fstat(r->fd, &st) != 0) {
        spdlog::error("cannot stat {}: {}", r->file.path, std::strerror(errno));
        co_await wait(timer, cfg.tail.poll_interval);
        continue;
      }
      const int64_t size = st.st_size;
      r->size_seen = size;
      int64_t now = unix_ms();
      if (size != last_size) {
        last_size = size;
        last_change_ms = now;
      }

      if (size < offset) {
        // Truncated (copytruncate, or `> file`): the bytes from here on are new
        // content, so they belong to a new tracked file with its own uid.
        ++self->stats.truncations;
        spdlog::warn("{} was truncated from {} to {} bytes: reading it again from the start",
                     r->file.path, offset, size);
        auto identity = identify(r->fd, cfg.tail.fingerprint_bytes);
        if (!identity) {
          co_await wait(timer, cfg.tail.read_interval);
          continue;
        }
        Status st2;
        auto fresh = co_await self->outbox.run([&](outbox::Outbox& o) {
          (void)o.release_file(r->file.id);
          return o.add_file(src.name, r->file.path, *identity, 0, st2);
        });
        if (!fresh) {
          spdlog::error("cannot record truncated {}: {}", r->file.path, st2.message());
          co_await wait(timer, cfg.tail.poll_interval);
          continue;
        }
        {
          std::lock_guard lock(r->mu);
          r->file = *fresh;
        }
        offset = 0;
        r->offset_now = 0;
        continue;
      }

      const bool quiet_for_rotation =
          r->gone.load() && now - last_change_ms >= cfg.tail.rotate_wait.count();

      if (size > offset) {
        int64_t avail = size - offset;
        int64_t want = big_read ? std::min<int64_t>(avail, src.max_line_bytes + 2)
                                : std::min<int64_t>(avail, cfg.tail.read_chunk_bytes);
        buf.resize(static_cast<size_t>(want));
        size_t got = 0;
        if (!pread_full(r->fd, buf, offset, got)) {
          spdlog::error("cannot read {}: {}", r->file.path, std::strerror(errno));
          co_await wait(timer, cfg.tail.poll_interval);
          continue;
        }
        buf.resize(got);
        bool at_eof = offset + static_cast<int64_t>(got) >= size;
        bool flush = at_eof && (quiet_for_rotation ||
                                (src.partial_line_timeout.count() > 0 &&
                                 now - last_change_ms >= src.partial_line_timeout.count()));
        lines.clear();
        size_t consumed = split_lines(buf, offset, static_cast<size_t>(src.max_line_bytes),
                                      flush, lines);
        if (lines.empty()) {
          if (!at_eof && !big_read) {
            big_read = true;   // a line longer than a chunk: read up to max_line_bytes
            continue;
          }
          buf.clear();
          buf.shrink_to_fit();
          co_await wait(timer, cfg.tail.read_interval);   // a partial line waits for its end
          continue;
        }
        big_read = false;

        outbox::Chunk chunk;
        chunk.file_id = r->file.id;
        chunk.inode = r->file.identity.inode;
        chunk.next_offset = offset + static_cast<int64_t>(consumed);
        chunk.ingest_ms = now;
        chunk.lines = std::move(lines);
        if (r->file.identity.fingerprint_len < cfg.tail.fingerprint_bytes &&
            size > r->file.identity.fingerprint_len) {
          auto grown = identify(r->fd, cfg.tail.fingerprint_bytes);
          if (grown && grown->fingerprint_len > r->file.identity.fingerprint_len)
            chunk.grown_fingerprint = grown;
        }
        Status st2 = co_await self->outbox.append(chunk);
        lines = std::move(chunk.lines);
        if (!st2) {
          backoff = std::min<std::chrono::milliseconds>(
              std::chrono::milliseconds(5000),
              backoff.count() == 0 ? std::chrono::milliseconds(100) : backoff * 2);
          spdlog::warn("cannot write lines of {} to the outbox ({}); retrying in {} ms",
                       r->file.path, st2.message(), backoff.count());
          co_await wait(timer, backoff);
          continue;
        }
        backoff = std::chrono::milliseconds(0);
        self->stats.lines_read += static_cast<int64_t>(lines.size());
        self->stats.bytes_read += static_cast<int64_t>(consumed);
        source_stats.lines_read += static_cast<int64_t>(lines.size());
        source_stats.bytes_read += static_cast<int64_t>(consumed);
        offset = chunk.next_offset;
        r->offset_now = offset;
        {
          std::lock_guard lock(r->mu);
          r->file.read_offset = offset;
          if (chunk.grown_fingerprint) {
            r->file.identity.fingerprint = chunk.grown_fingerprint->fingerprint;
            r->file.identity.fingerprint_len = chunk.grown_fingerprint->fingerprint_len;
          }
        }
        continue;   // more may be there already
      }

      buf.clear();
      buf.shrink_to_fit();
      if (quiet_for_rotation) {
        // Rotated away or deleted, read to its end and quiet: let it go.
        int64_t id = r->file.id;
        Status st2 = co_await self->outbox.run([id](outbox::Outbox& o) { return o.release_file(id); });
        if (st2) {
          spdlog::info("released {} after reading it to the end ({} bytes)", r->file.path, offset);
          r->done = true;
          break;
        }
      }
      co_await wait(timer, cfg.tail.read_interval);
    }
    ::close(r->fd);
    r->fd = -1;
  }

  // Expands every glob once and matches what it finds against followed files.
  asio::awaitable<void> scan() {
    std::map<std::pair<uint64_t, uint64_t>, std::shared_ptr<Reader>> by_inode;
    for (auto& r : readers)
      if (!r->done.load()) by_inode[{r->file.identity.dev, r->file.identity.inode}] = r;
    std::set<std::pair<uint64_t, uint64_t>> seen;
    std::set<std::string> seen_paths;

    for (const auto& source : cfg.sources) {
      for (const auto& pattern : source.paths) {
        for (const auto& path : expand_glob(pattern)) {
          if (excluded(source, path) || !seen_paths.insert(path).second) continue;
          int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
          if (fd < 0) {
            spdlog::debug("cannot open {}: {}", path, std::strerror(errno));
            continue;
          }
          auto id = identify(fd, cfg.tail.fingerprint_bytes);
          if (!id || !seen.insert({id->dev, id->inode}).second) {
            ::close(fd);
            continue;
          }
          co_await match(source, path, fd, *id, by_inode);
        }
      }
    }
    for (auto& [key, r] : by_inode) r->gone = !seen.count(key);

    if (first_scan) {
      for (const auto& f : known)
        spdlog::warn("{} (file {} of source {}) was not found under any path: it was deleted "
                     "or moved out of the globs while tailbox was stopped; anything it held past "
                     "offset {} cannot be read", f.path, f.uid, f.source, f.read_offset);
      for (const auto& f : known) {
        int64_t id = f.id;
        co_await outbox.run([id](outbox::Outbox& o) { return o.release_file(id); });
      }
      known.clear();
      first_scan = false;
    }
    std::lock_guard lock(readers_mu);
    std::erase_if(readers, [](const auto& r) { return r->done.load(); });
  }

  // Matches one found path; takes ownership of fd.
  asio::awaitable<void> match(
      const config::SourceConfig& source, const std::string& path, int fd, const FileIdentity& id,
      std::map<std::pair<uint64_t, uint64_t>, std::shared_ptr<Reader>>& by_inode) {
    auto same_as = [&](const FileIdentity& was) {
      if (was.dev != id.dev || was.inode != id.inode) return false;
      if (was.fingerprint_len == id.fingerprint_len) return was.fingerprint == id.fingerprint;
      auto prefix = identify(fd, was.fingerprint_len);
      return prefix && same_file(was, *prefix, prefix->fingerprint);
    };

    if (auto it = by_inode.find({id.dev, id.inode}); it != by_inode.end()) {
      std::shared_ptr<Reader> r = it->second;
      FileIdentity was;
      std::string old_path;
      {
        std::lock_guard lock(r->mu);
        was = r->file.identity;
        old_path = r->file.path;
      }
      if (same_as(was)) {
        ::close(fd);
        if (old_path != path) {
          ++stats.rotations;
          spdlog::info("{} is now {} (rotation)", old_path, path);
          int64_t fid = r->file.id;
          co_await outbox.run([fid, path](outbox::Outbox& o) { return o.update_path(fid, path); });
          std::lock_guard lock(r->mu);
          r->file.path = path;
        }
        co_return;
      }
      // Same inode, other first bytes: the old file is gone and its inode reused.
      r->gone = true;
      by_inode.erase(it);
    }

    auto r = std::make_shared<Reader>();
    r->source = &source;
    r->fd = fd;
    for (auto it = known.begin(); it != known.end(); ++it) {
      if (it->source == source.name && same_as(it->identity)) {
        r->file = *it;
        known.erase(it);
        if (r->file.path != path) {
          ++stats.rotations;
          spdlog::info("{} was rotated to {} while tailbox was stopped; finishing it",
                       r->file.path, path);
          int64_t fid = r->file.id;
          co_await outbox.run([fid, path](outbox::Outbox& o) { return o.update_path(fid, path); });
          r->file.path = path;
        }
        add_reader(r);
        co_return;
      }
    }

    int64_t start = 0;
    if (first_scan && source.read_from == config::ReadFrom::tail) start = tail_start(fd, id.size);
    Status st;
    auto added = co_await outbox.run(
        [&](outbox::Outbox& o) { return o.add_file(source.name, path, id, start, st); });
    if (!added) {
      spdlog::error("cannot track {}: {}", path, st.message());
      co_return;   // r's destructor closes fd; the next scan tries again
    }
    r->file = *added;
    spdlog::info("following {} (source {}, from byte {})", path, source.name, start);
    add_reader(r);
  }

  asio::awaitable<void> run() {
    asio::steady_timer timer(strand);
    while (!stopping.load()) {
      co_await scan();
      co_await wait(timer, cfg.tail.poll_interval);
    }
    while (running_readers.load() > 0) co_await wait(timer, std::chrono::milliseconds(10));
  }
};

Tailer::Tailer(asio::any_io_executor executor, const config::Config& config,
               outbox::AsyncOutbox& outbox)
    : impl_(std::make_shared<Impl>(executor, config, outbox)) {
  for (auto& f : outbox.unsafe_sync().tracked_files()) {
    if (f.released) continue;
    if (!impl_->source_named(f.source)) {
      spdlog::warn("{} belongs to source \"{}\", which the configuration no longer has; "
                   "it is not read", f.path, f.source);
      continue;
    }
    impl_->known.push_back(std::move(f));
  }
}

Tailer::~Tailer() = default;

asio::awaitable<void> Tailer::run() {
  auto impl = impl_;
  co_await asio::co_spawn(impl->strand, impl->run(), asio::use_awaitable);
}

void Tailer::stop() { impl_->stopping = true; }

const TailStats& Tailer::stats() const { return impl_->stats; }

std::vector<Tailer::FileProgress> Tailer::files() const {
  std::vector<FileProgress> out;
  std::lock_guard lock(impl_->readers_mu);
  for (const auto& r : impl_->readers) {
    if (r->done.load()) continue;
    FileProgress p;
    {
      std::lock_guard rl(r->mu);
      p.source = r->file.source;
      p.path = r->file.path;
    }
    p.size = r->size_seen.load();
    p.offset = r->offset_now.load();
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace tailbox::tail
