#include "tail/tailer.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "core/clock.hpp"
#include "core/failure.hpp"
#include "outbox/async_outbox.hpp"
#include "tail/file_identity.hpp"
#include "tail/file_reader.hpp"
#include "tail/glob.hpp"

namespace tailbox::tail {

namespace asio = boost::asio;
using outbox::TrackedFile;
using std::chrono::milliseconds;

namespace {

using Key = std::pair<uint64_t, uint64_t>;   // (dev, inode)

// Events come in bursts (a rotation is a rename plus a create plus writes):
// one scan after the burst.
constexpr milliseconds kScanDebounce{20};

bool is_gz(const std::string& path) { return path.ends_with(".gz"); }

bool is_link(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

bool excluded(const config::SourceConfig& source, const std::string& path) {
  std::string base = path.substr(path.rfind('/') + 1);
  for (const auto& ex : source.exclude) {
    bool full = ex.find('/') != std::string::npos;
    if (glob_match(ex, full ? path : base)) return true;
  }
  return false;
}

// Whether `source` reads `path` when a glob names it.
bool wanted(const config::SourceConfig& source, const std::string& path) {
  if (is_gz(path) && !source.read_gzip) return false;   // compressed rotations: never as text
  return !excluded(source, path);
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

// Whether the open file `fd` (identity `now`) is the file recorded as `was`.
bool same_as(const FileIdentity& was, int fd, const FileIdentity& now) {
  if (was.dev != now.dev || was.inode != now.inode) return false;
  if (was.fingerprint_len == now.fingerprint_len) return was.fingerprint == now.fingerprint;
  auto prefix = identify(fd, was.fingerprint_len);
  return prefix && same_file(was, *prefix, prefix->fingerprint);
}

// Each reader keeps its file open: thousands of files need more descriptors
// than the usual soft limit of 1024. The hard limit is ours to use.
void raise_open_files_limit() {
  struct rlimit rl {};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) return;
  rlim_t was = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
    spdlog::debug("open files limit raised from {} to {}", was, rl.rlim_cur);
}

}  // namespace

struct Tailer::Impl : std::enable_shared_from_this<Tailer::Impl> {
  // A file found by a glob but not followed: ignore_older, or a .gz read and
  // released. Looked at again only when its size or mtime change.
  struct Skipped {
    enum class Why { older, released } why;
    FileIdentity identity;
    int64_t size = -1, mtime_ms = -1;   // as last looked at; -1: not yet
    int64_t resume = 0;                 // older: follow from here once written to
  };

  asio::any_io_executor executor;
  asio::strand<asio::any_io_executor> strand;
  const config::Config& cfg;
  std::shared_ptr<ReaderEnv> env;
  std::shared_ptr<Watcher> watcher;
  std::map<std::string, std::shared_ptr<const StartPattern>> patterns;   // by source name
  std::atomic<int> running_readers{0};
  std::vector<std::shared_ptr<Reader>> readers;   // changed on the strand only,
  mutable std::mutex readers_mu;                  // under this lock (files() reads it)
  // The rest is used on the strand only.
  std::map<std::string, std::shared_ptr<Reader>> by_path;   // readers by current path
  std::multimap<Key, TrackedFile> known;   // checkpoints from the outbox, until the first scan
  bool fresh_outbox = true;                 // the outbox had never tracked a file at start
  bool first_scan = true;
  std::map<Key, Skipped> skipped;
  asio::steady_timer scan_timer{strand};
  bool scan_requested = false;
  int64_t new_this_scan = 0;
  static constexpr int64_t kAnnounced = 20;

  Impl(asio::any_io_executor ex, const config::Config& c, outbox::AsyncOutbox& o)
      : executor(ex),
        strand(asio::make_strand(ex)),
        cfg(c),
        env(std::make_shared<ReaderEnv>(c, o)) {
    for (const auto& src : cfg.sources) {
      env->stats.sources[src.name] = std::make_unique<SourceStats>();
      if (src.multiline.enabled()) patterns[src.name] = StartPattern::compile(src.multiline.start_pattern);
    }
    if (cfg.tail.inotify) watcher = make_inotify_watcher(strand);
    if (!watcher) watcher = make_poll_watcher();
    env->watcher = watcher;
  }

  const config::SourceConfig* source_named(const std::string& name) const {
    for (const auto& s : cfg.sources)
      if (s.name == name) return &s;
    return nullptr;
  }

  static asio::awaitable<void> wait(asio::steady_timer& timer, milliseconds d) {
    timer.expires_after(d);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

  // ---- readers ----

  std::shared_ptr<Reader> make_reader(const config::SourceConfig& source, int fd) {
    auto r = std::make_shared<Reader>(executor);
    r->source = &source;
    r->fd = fd;
    r->source_stats = env->stats.sources.at(source.name).get();
    if (auto it = patterns.find(source.name); it != patterns.end()) r->start = it->second;
    return r;
  }

  void add_reader(std::shared_ptr<Reader> r) {
    r->offset_now = r->file.read_offset;
    r->dir = dir_of(r->file.path);
    r->gzip = is_gz(r->file.path);
    r->via_link = is_link(r->file.path);
    {
      std::lock_guard lock(readers_mu);
      readers.push_back(r);
    }
    by_path[r->file.path] = r;
    ++running_readers;
    ++env->stats.files_active;
    asio::co_spawn(r->strand, read_file(env, r),
                   [self = shared_from_this(), r](std::exception_ptr e) {
                     if (e) {
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& ex) {
                         spdlog::error("reader for {} stopped: {}", r->file.path, ex.what());
                       } catch (...) {
                       }
                       report_failure("reader for " + r->file.path + " stopped");
                     }
                     --self->env->stats.files_active;
                     --self->running_readers;
                   });
  }

  void wake_all() {
    std::lock_guard lock(readers_mu);
    for (auto& r : readers) r->wake();
  }

  // ---- events ----

  bool matches_a_glob(const std::string& path) const {
    for (const auto& source : cfg.sources)
      for (const auto& pattern : source.paths)
        if (glob_match(pattern, path) && wanted(source, path)) return true;
    return false;
  }

  void request_scan() {
    if (scan_requested) return;
    scan_requested = true;
    scan_timer.cancel();
  }

  // On the strand. A write wakes its file's reader; a name that appears or
  // goes, or a directory change, wakes discovery.
  void on_events(std::span<const Watcher::Event> events) {
    for (const auto& e : events) {
      switch (e.change) {
        case Watcher::Change::modified:
          if (auto it = by_path.find(e.path); it != by_path.end()) it->second->wake();
          else if (matches_a_glob(e.path)) request_scan();   // new, renamed, or skipped so far
          break;
        case Watcher::Change::created:
        case Watcher::Change::removed:
          if (auto it = by_path.find(e.path); it != by_path.end()) {
            it->second->wake();
            request_scan();
          } else if (matches_a_glob(e.path)) {
            request_scan();
          }
          break;
        case Watcher::Change::directory:
          request_scan();
          break;
        case Watcher::Change::overflow:
          spdlog::warn("inotify queue overflow: looking at every file");
          request_scan();
          wake_all();
          break;
      }
    }
  }

  // ---- discovery ----

  // Expands every glob once and matches what it finds against followed files.
  asio::awaitable<void> scan() {
    {
      std::lock_guard lock(readers_mu);
      for (const auto& r : readers)
        if (r->done.load() && r->gzip) {
          // Read and released, but still under its name: never again.
          Key key{r->file.identity.dev, r->file.identity.inode};
          skipped[key] = Skipped{Skipped::Why::released, r->file.identity};
        }
      std::erase_if(readers, [](const auto& r) { return r->done.load(); });
    }
    std::map<Key, std::shared_ptr<Reader>> by_inode;
    for (auto& r : readers) {
      std::lock_guard lock(r->mu);
      by_inode[{r->file.identity.dev, r->file.identity.inode}] = r;
    }
    new_this_scan = 0;
    std::set<Key> seen;
    std::set<std::string> seen_paths, dirs;
    bool every_glob_has_a_dir = true;
    const int64_t now = unix_ms();

    for (const auto& source : cfg.sources) {
      for (const auto& pattern : source.paths) {
        std::vector<std::string> pattern_dirs;
        auto found = find_files(pattern, &pattern_dirs);
        if (pattern_dirs.empty()) every_glob_has_a_dir = false;
        dirs.insert(pattern_dirs.begin(), pattern_dirs.end());
        for (const FoundFile& f : found) {
          if (!wanted(source, f.path) || !seen_paths.insert(f.path).second) continue;
          Key key{f.dev, f.inode};
          if (!seen.insert(key).second) continue;
          if (auto it = by_inode.find(key); it != by_inode.end()) {
            // A followed file: its reader keeps it open, so no other file can
            // have this inode now; truncation is the reader's to see.
            co_await follow(it->second, f);
            continue;
          }
          if (auto it = skipped.find(key);
              it != skipped.end() && it->second.size == f.size && it->second.mtime_ms == f.mtime_ms)
            continue;
          co_await discover(source, f.path, key, now);
        }
      }
    }
    for (auto& [key, r] : by_inode) {
      bool gone = !seen.count(key);
      if (gone) {
        // Only on evidence: a scan can miss a file that is still there (a
        // failed open or opendir). Released files found again would be read
        // again under a new uid.
        std::string last_path;
        {
          std::lock_guard lock(r->mu);
          last_path = r->file.path;
        }
        struct stat st {};
        if (::stat(last_path.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_dev) == key.first &&
            static_cast<uint64_t>(st.st_ino) == key.second)
          gone = false;
      }
      if (r->gone.exchange(gone) != gone) r->wake();   // a gone file is polled to its end
    }
    int64_t ignored = 0;
    for (auto it = skipped.begin(); it != skipped.end();) {
      if (it->second.why == Skipped::Why::older && !seen.count(it->first)) {
        it = skipped.erase(it);
        continue;
      }
      if (it->second.why == Skipped::Why::older) ++ignored;
      ++it;
    }
    env->stats.files_ignored = ignored;
    by_path.clear();
    for (auto& r : readers) {
      if (r->gone.load() || r->done.load()) continue;
      std::lock_guard lock(r->mu);
      by_path[r->file.path] = r;
    }
    if (new_this_scan > kAnnounced)
      spdlog::info("... and {} more new files followed", new_this_scan - kAnnounced);
    watcher->watch(dirs);
    bool evented = watcher->kind() == "inotify" && every_glob_has_a_dir;
    for (const auto& d : dirs) evented = evented && watcher->covers(d);
    if (env->stats.evented.exchange(evented) != evented || first_scan)
      spdlog::info("{} directories, {} files followed (scan: {} ms); {}", dirs.size(),
                   readers.size(), unix_ms() - now,
                   evented ? "changes are seen by inotify"
                           : "files are polled (every poll_interval for new files, "
                             "read_interval for growth)");

    if (first_scan) {
      for (const auto& [key, f] : known)
        spdlog::warn("{} (file {} of source {}) was not found under any path: it was deleted "
                     "or moved out of the globs while tailbox was stopped; anything it held past "
                     "offset {} cannot be read", f.path, f.uid, f.source, f.read_offset);
      for (const auto& [key, f] : known) {
        int64_t id = f.id;
        co_await env->outbox.run([id](outbox::Outbox& o) { return o.release_file(id); });
      }
      known.clear();
      first_scan = false;
    }
  }

  // A followed file found under `path`: renamed (rotation) or just there.
  // (Coroutine arguments and co_await operands are references or trivially
  // destructible values: GCC 12 may destroy other temporaries there twice.)
  asio::awaitable<void> follow(const std::shared_ptr<Reader>& r, const FoundFile& found) {
    const std::string& path = found.path;
    std::string old_path;
    {
      std::lock_guard lock(r->mu);
      old_path = r->file.path;
    }
    if (old_path != path) {
      ++env->stats.rotations;
      spdlog::info("{} is now {} (rotation)", old_path, path);
      int64_t fid = r->file.id;
      co_await env->outbox.run([fid, &path](outbox::Outbox& o) { return o.update_path(fid, path); });
      {
        std::lock_guard lock(r->mu);
        r->file.path = path;
        r->dir = dir_of(path);
      }
      r->via_link = is_link(path);
      r->wake();
    }
    // A change the reader has not seen (an event lost): let it look.
    // This is also how a quiet file in a watched directory is re-checked: its
    // reader does not poll (see FileReading::idle_time).
    if (found.size != r->size_seen.load() || found.mtime_ms != r->mtime_seen.load()) r->wake();
  }

  // A file no reader follows: resume its checkpoint, skip it, or follow it as new.
  asio::awaitable<void> discover(const config::SourceConfig& source, const std::string& path,
                                 Key key, int64_t now) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE)
        spdlog::error("cannot open {}: {} (each followed file needs a descriptor: raise the "
                      "open files limit, e.g. LimitNOFILE= in the systemd unit)", path,
                      std::strerror(errno));
      else
        spdlog::debug("cannot open {}: {}", path, std::strerror(errno));
      co_return;
    }
    auto id = identify(fd, cfg.tail.fingerprint_bytes);
    if (!id) {
      ::close(fd);
      co_return;
    }

    // A file with a checkpoint (the first scan after a start) is always resumed.
    auto [lo, hi] = known.equal_range(key);
    for (auto it = lo; it != hi; ++it) {
      if (it->second.source != source.name || !same_as(it->second.identity, fd, *id)) continue;
      auto r = make_reader(source, fd);
      r->file = it->second;
      known.erase(it);
      if (r->file.path != path) {
        ++env->stats.rotations;
        spdlog::info("{} was rotated to {} while tailbox was stopped; finishing it",
                     r->file.path, path);
        int64_t fid = r->file.id;
        co_await env->outbox.run([fid, &path](outbox::Outbox& o) { return o.update_path(fid, path); });
        r->file.path = path;
      }
      add_reader(r);
      co_return;
    }

    int64_t start = -1;
    if (auto it = skipped.find(key); it != skipped.end()) {
      Skipped& sk = it->second;
      if (same_as(sk.identity, fd, *id)) {
        sk.size = id->size;
        sk.mtime_ms = id->mtime_ms;
        bool still_old = source.ignore_older.count() > 0 &&
                         now - id->mtime_ms > source.ignore_older.count();
        if (sk.why == Skipped::Why::released || still_old) {
          ::close(fd);
          co_return;
        }
        // Written to since it was skipped: followed from where it was then.
        start = sk.resume <= id->size ? sk.resume : 0;
        spdlog::info("{} was written to after ignore_older skipped it: following it from byte {}",
                     path, start);
      }
      skipped.erase(it);   // followed now, or another file on a reused inode
    }
    if (start < 0 && source.ignore_older.count() > 0 &&
        now - id->mtime_ms > source.ignore_older.count()) {
      spdlog::debug("{}: not modified for {} s (ignore_older): skipped", path,
                    (now - id->mtime_ms) / 1000);
      skipped[key] = Skipped{Skipped::Why::older, *id, id->size, id->mtime_ms, id->size};
      ::close(fd);
      co_return;
    }
    if (start < 0) {
      start = 0;
      // "tail" is for a first deployment only: once the outbox has tracked any
      // file, a file new at start-up appeared while tailbox was down (e.g. a
      // rotation after a crash), and its lines must all be read.
      if (first_scan && fresh_outbox && source.read_from == config::ReadFrom::tail && !is_gz(path))
        start = tail_start(fd, id->size);
    }

    auto r = make_reader(source, fd);   // owns fd from here
    Status st;
    const std::string name = source.name;
    const FileIdentity identity = *id;
    auto added = co_await env->outbox.run(
        [&](outbox::Outbox& o) { return o.add_file(name, path, identity, start, st); });
    if (!added) {
      spdlog::error("cannot track {}: {}", path, st.message());
      co_return;   // r's destructor closes fd; the next scan tries again
    }
    r->file = *added;
    // Thousands of files at start-up: name the first few, count the rest.
    if (++new_this_scan <= kAnnounced)
      spdlog::info("following {} (source {}, from byte {})", path, source.name, start);
    add_reader(r);
  }

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    watcher->start([self](std::span<const Watcher::Event> events) { self->on_events(events); });
    while (!env->stopping.load()) {
      scan_requested = false;
      co_await scan();
      if (env->stopping.load()) break;
      milliseconds every = env->stats.evented.load() ? env->recheck() : cfg.tail.poll_interval;
      if (!scan_requested) co_await wait(scan_timer, every);
      if (scan_requested && !env->stopping.load()) co_await wait(scan_timer, kScanDebounce);
    }
    watcher->stop();
    wake_all();
    asio::steady_timer timer(strand);
    while (running_readers.load() > 0) co_await wait(timer, milliseconds(10));
  }

  void stop() {
    env->stopping = true;
    asio::post(strand, [self = shared_from_this()] {
      self->scan_timer.cancel();
      self->watcher->stop();
      self->wake_all();
    });
  }
};

Tailer::Tailer(asio::any_io_executor executor, const config::Config& config,
               outbox::AsyncOutbox& outbox)
    : impl_(std::make_shared<Impl>(executor, config, outbox)) {
  raise_open_files_limit();
  for (auto& f : outbox.unsafe_sync().tracked_files()) {
    impl_->fresh_outbox = false;
    Key key{f.identity.dev, f.identity.inode};
    if (f.released) {
      // A .gz is read once: remember it so that its name is never read again.
      if (is_gz(f.path))
        impl_->skipped[key] = Impl::Skipped{Impl::Skipped::Why::released, f.identity};
      continue;
    }
    if (!impl_->source_named(f.source)) {
      spdlog::warn("{} belongs to source \"{}\", which the configuration no longer has; "
                   "it is not read", f.path, f.source);
      continue;
    }
    impl_->known.emplace(key, std::move(f));
  }
}

Tailer::~Tailer() = default;

asio::awaitable<void> Tailer::run() {
  auto impl = impl_;
  co_await asio::co_spawn(impl->strand, impl->run(), asio::use_awaitable);
}

void Tailer::stop() { impl_->stop(); }

const TailStats& Tailer::stats() const { return impl_->env->stats; }

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
