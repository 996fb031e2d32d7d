#include "tail/tailer.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string_view>
#include <unordered_set>

#include "core/clock.hpp"
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
  // Checkpointed files not followed yet: from the outbox at start, until a
  // scan finds them (resumed) or there is evidence that they are gone
  // (released). A file that merely could not be opened, or whose file system
  // is not mounted yet, stays here and is looked for again.
  std::multimap<Key, TrackedFile> known;
  std::set<int64_t> known_warned;          // ids told about as not found
  bool fresh_outbox = true;                 // the outbox had never tracked a file at start
  bool retry_soon = false;                  // a file could not be opened: scan again soon
  milliseconds retry_every{1000};           // how soon, backing off
  std::set<std::string> open_warned;        // paths whose open failure was logged
  int64_t out_of_fds = 0, out_of_fds_told = 0;   // EMFILE/ENFILE opens this scan, last told
  std::string out_of_fds_example;
  bool listing_incomplete = false;          // a directory could not be listed this scan
  std::map<Key, std::shared_ptr<Reader>> by_inode;   // followed files, during a scan
  bool first_scan = true;
  std::map<Key, Skipped> skipped;
  asio::steady_timer scan_timer{strand};
  asio::steady_timer close_timer{strand};
  static constexpr size_t kStrands = 64;
  static constexpr int64_t kFdReserve = 24;
  int64_t fd_budget = INT64_MAX;   // followed files open at most (the open files limit less kFdReserve)
  std::vector<asio::strand<asio::any_io_executor>> strands;
  size_t next_strand = 0;
  // Starting thousands of readers at once would hold all their first reads and
  // outbox appends in memory together (the RSS peak at start-up): a reader
  // starts once fewer than kStartingMax run, waiting at most kStartBudget per
  // scan in all (busy files never park).
  static constexpr int64_t kStartingMax = 64;
  static constexpr milliseconds kStartBudget{2000};
  milliseconds start_budget = kStartBudget;
  asio::steady_timer start_timer{strand};
  bool scan_requested = false;
  int64_t new_this_scan = 0;
  // New files found by this scan, opened, waiting to be added to the outbox
  // in one transaction (one sync for many files, not one each).
  struct NewFile {
    std::shared_ptr<Reader> reader;   // owns the descriptor
    outbox::Outbox::NewFile row;
  };
  std::vector<NewFile> new_files;
  std::set<Key> new_keys;
  static constexpr size_t kNewBatch = 1000;
  static constexpr int64_t kAnnounced = 20;
  std::set<std::string> globs_seen;          // "source\nglob" expanded once: an empty one was warned

  Impl(asio::any_io_executor ex, const config::Config& c, outbox::AsyncOutbox& o)
      : executor(ex),
        strand(asio::make_strand(ex)),
        cfg(c),
        env(std::make_shared<ReaderEnv>(c, o)) {
    for (const auto& src : cfg.sources) {
      auto& st = env->stats.sources[src.name] = std::make_unique<SourceStats>();
      if (src.multiline.enabled())
        patterns[src.name] = StartPattern::compile(src.multiline.start_pattern, src.name,
                                                   &st->multiline_pattern_errors);
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
    // Readers share a pool of strands: one strand each would cost ~100 bytes
    // per followed file, and a strand only has to keep one reader's coroutine
    // and wake-ups apart, which a shared one does too.
    if (strands.empty())
      for (size_t i = 0; i < kStrands; ++i) strands.push_back(asio::make_strand(executor));
    std::shared_ptr<const StartPattern> start;
    if (auto it = patterns.find(source.name); it != patterns.end()) start = it->second;
    return std::make_shared<Reader>(strands[next_strand++ % kStrands], source, std::move(start),
                                    *env->stats.sources.at(source.name), fd);
  }

  void add_reader(std::shared_ptr<Reader> r) {
    r->attach(env);
    {
      std::lock_guard lock(readers_mu);
      readers.push_back(r);
    }
    by_path[r->path()] = r;
    // Followed from now on, also for the rest of this scan: a rename between
    // the listing and open() can show the same file under a second name.
    by_inode[r->key()] = r;
    ++running_readers;
    ++env->stats.files_active;
    spawn(r);
  }

  // Starts r's coroutine: when it is added, and again each time it is woken
  // after it parked. Counted once, from add_reader until it is done.
  void spawn(const std::shared_ptr<Reader>& r) {
    if (env->stopping.load()) {
      // No coroutine runs for r (a parked reader woken, or one just added):
      // nothing to finish but its descriptor. Thousands of parked readers
      // stop without a coroutine each.
      r->close_unread(env->stats);
      --env->stats.files_active;
      --running_readers;
      return;
    }
    ++env->stats.readers_running;
    asio::co_spawn(r->strand(), Reader::run(env, r),
                   [self = shared_from_this(), r](std::exception_ptr e, bool parked) {
                     --self->env->stats.readers_running;
                     if (!e && parked) return;   // followed still: wake() starts it again
                     if (e) {
                       // The file is no longer read: /readyz must say so.
                       ++self->env->stats.readers_failed;
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& ex) {
                         spdlog::error("reader for {} stopped: {}", r->path(), ex.what());
                       } catch (...) {
                         spdlog::error("reader for {} stopped: unknown error", r->path());
                       }
                       // Not the relay's end: the other files are read on,
                       // and /readyz names the failure (README: a relay that
                       // fails stops; one file's reader is the exception).
                     }
                     --self->env->stats.files_active;
                     --self->running_readers;
                   });
  }

  asio::awaitable<void> throttle_start() {
    while (env->stats.readers_running.load() >= kStartingMax && start_budget.count() > 0 &&
           !env->stopping.load()) {
      co_await wait(start_timer, milliseconds(2));
      start_budget -= milliseconds(2);
    }
  }

  // Closes the files of parked readers quiet for close_inactive. Readers that
  // do not park (polling) close their files themselves.
  asio::awaitable<void> close_inactive() {
    const milliseconds after = cfg.tail.close_inactive;
    if (after.count() <= 0) co_return;
    const milliseconds every = std::clamp(after / 4, milliseconds(10), milliseconds(30'000));
    while (!env->stopping.load()) {
      co_await wait(close_timer, every);
      const int64_t now = unix_ms();
      std::lock_guard lock(readers_mu);
      for (const auto& r : readers)
        if (r->parked() && !r->closed() && now - r->last_change_ms() >= after.count())
          r->close_if_parked();
    }
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
        if (r->done() && r->gzip()) {
          // Read and released, but still under its name: never again.
          skipped[r->key()] = Skipped{Skipped::Why::released, r->file().identity};
        }
      std::erase_if(readers, [](const auto& r) { return r->done(); });
    }
    by_inode.clear();
    retry_soon = false;
    out_of_fds = 0;
    listing_incomplete = false;
    for (auto& r : readers) by_inode[r->key()] = r;
    new_this_scan = 0;
    start_budget = kStartBudget;
    std::set<Key> seen;      // (dev, inode) of every file a glob listed
    std::set<int64_t> replaced;   // known files whose inode now holds another file
    std::set<std::string> dirs;
    std::unordered_set<std::string_view> seen_paths;   // into `listings`, which outlives it
    bool every_glob_has_a_dir = true;
    const int64_t now = unix_ms();

    // Every glob expanded first, and its directories watched before any file
    // found is followed: a reader can then park at once (see read_file), and
    // no event is missed between the listing and the watch.
    std::vector<std::pair<const config::SourceConfig*, std::vector<FoundFile>>> listings;
    for (const auto& source : cfg.sources) {
      for (const auto& pattern : source.paths) {
        std::vector<std::string> pattern_dirs;
        bool incomplete = false;
        auto found = find_files(pattern, &pattern_dirs, &incomplete);
        if (incomplete) retry_soon = listing_incomplete = true;
        if (!incomplete && globs_seen.insert(source.name + "\n" + pattern).second && found.empty())
          spdlog::warn("source {}: the glob {} matches no file (yet); files that appear later "
                       "are followed", source.name, pattern);
        if (pattern_dirs.empty()) every_glob_has_a_dir = false;
        dirs.insert(pattern_dirs.begin(), pattern_dirs.end());
        listings.emplace_back(&source, std::move(found));
      }
    }
    watcher->watch(dirs);
    for (const auto& [source_ptr, found] : listings) {
      const config::SourceConfig& source = *source_ptr;
      {
        for (const FoundFile& f : found) {
          if (!wanted(source, f.path) || !seen_paths.insert(f.path).second) continue;
          Key key{f.dev, f.inode};
          if (!seen.insert(key).second) continue;
          if (auto it = by_inode.find(key); it != by_inode.end()) {
            // A followed file: its reader keeps it open, so no other file can
            // have this inode now; truncation is the reader's to see. A reader
            // closed for close_inactive checks the first bytes when it reopens
            // (the inode may have been freed and reused by another file).
            co_await follow(it->second, f);
            continue;
          }
          if (auto it = skipped.find(key);
              it != skipped.end() && it->second.size == f.size && it->second.mtime_ms == f.mtime_ms)
            continue;
          co_await discover(source, f.path, now, replaced);
          if (new_files.size() >= kNewBatch) co_await add_new_files();
        }
      }
    }
    co_await add_new_files();
    for (auto& [key, r] : by_inode) {
      bool gone = !seen.count(key);
      if (gone) {
        // Only on evidence: a scan can miss a file that is still there (a
        // failed open or opendir). Released files found again would be read
        // again under a new uid.
        const std::string last_path = r->path();
        struct stat st {};
        if (::stat(last_path.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_dev) == key.first &&
            static_cast<uint64_t>(st.st_ino) == key.second)
          gone = false;
      }
      if (r->set_gone(gone)) r->wake();   // a gone file is polled to its end
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
      if (r->gone() || r->done()) continue;
      by_path[r->path()] = r;
    }
    if (new_this_scan > kAnnounced)
      spdlog::info("... and {} more new files followed", new_this_scan - kAnnounced);
    bool evented = watcher->kind() == "inotify" && every_glob_has_a_dir;
    for (const auto& d : dirs) evented = evented && watcher->covers(d);
    if (env->stats.evented.exchange(evented) != evented || first_scan)
      spdlog::info("{} directories, {} files followed (scan: {} ms); {}", dirs.size(),
                   readers.size(), unix_ms() - now,
                   evented ? "changes are seen by inotify"
                           : "files are polled (every poll_interval for new files, "
                             "read_interval for growth)");

    if (listing_incomplete && out_of_fds == 0) {
      // Nothing learnt about the files this scan (even opendir failed).
    } else if (out_of_fds != out_of_fds_told) {
      if (out_of_fds > 0)
        spdlog::error("cannot open {} files ({} and others): out of descriptors (each followed "
                      "file needs one: raise the open files limit, e.g. LimitNOFILE= in the "
                      "systemd unit); the files followed are read on, the others tried again",
                      out_of_fds, out_of_fds_example);
      else
        spdlog::info("every file the globs name could be opened again");
      out_of_fds_told = out_of_fds;
    }
    // A listing that failed somewhere is no evidence that a file is gone.
    co_await settle_known(seen, replaced, !listing_incomplete);
    first_scan = false;
  }

  // Why a checkpointed file that no scan found may still be there: "" when
  // there is evidence that it is gone (deleted, or moved out of the globs).
  static std::string still_there(const TrackedFile& f) {
    const std::string dir = dir_of(f.path);
    struct stat ds {};
    if (::stat(dir.c_str(), &ds) != 0)
      return "its directory " + dir + " is missing (" + std::strerror(errno) +
             "): a file system not mounted yet?";
    if (static_cast<uint64_t>(ds.st_dev) != f.identity.dev)
      return "its directory " + dir + " is on another file system than the file was: a file "
             "system not mounted yet?";
    struct stat fs {};
    if (::stat(f.path.c_str(), &fs) == 0 && static_cast<uint64_t>(fs.st_dev) == f.identity.dev &&
        static_cast<uint64_t>(fs.st_ino) == f.identity.inode)
      return "it is still there but could not be opened";
    if (DIR* d = ::opendir(dir.c_str())) {
      ::closedir(d);
      return "";
    }
    return "its directory " + dir + " cannot be listed (" + std::strerror(errno) + ")";
  }

  // After each scan: releases the checkpointed files that are gone for sure;
  // the others wait for a later scan (their positions are kept).
  asio::awaitable<void> settle_known(const std::set<Key>& seen, const std::set<int64_t>& replaced,
                                     bool may_release) {
    std::vector<TrackedFile> gone;
    for (auto it = known.begin(); it != known.end();) {
      const TrackedFile& f = it->second;
      std::string why;
      if (!replaced.count(f.id)) {
        if (seen.count(it->first)) why = "a glob lists it but it could not be opened";
        else if (!may_release) why = "a directory the globs read could not be listed";
        else why = still_there(f);
      }
      if (why.empty()) {
        gone.push_back(f);
        it = known.erase(it);
        continue;
      }
      if (known_warned.insert(f.id).second)
        spdlog::warn("{} (file {} of source {}) was not found to resume at offset {}: {}; its "
                     "position is kept and it is looked for again", f.path, f.uid, f.source,
                     f.read_offset, why);
      retry_soon = true;
      ++it;
    }
    for (const TrackedFile& f : gone) {
      spdlog::warn("{} (file {} of source {}) is gone: it was deleted or moved out of the globs "
                   "while tailbox was not following it; anything it held past offset {} cannot "
                   "be read", f.path, f.uid, f.source, f.read_offset);
      int64_t id = f.id;
      Status st = co_await env->outbox.run([id](outbox::Outbox& o) { return o.release_file(id); });
      if (!st) spdlog::warn("cannot release {}: {}", f.path, st.message());
    }
  }

  // Records a followed file's new name in the outbox (a failure is logged: the
  // next start finds the file by its identity).
  asio::awaitable<void> record_path(int64_t fid, const std::string& path) {
    if (Status st = co_await env->outbox.run(
            [fid, &path](outbox::Outbox& o) { return o.update_path(fid, path); });
        !st)
      spdlog::warn("cannot record the new path {} of file {}: {}", path, fid, st.message());
  }

  // A followed file found under `path`: renamed (rotation) or just there.
  // (Coroutine arguments and co_await operands are references or trivially
  // destructible values: GCC 12 may destroy other temporaries there twice.)
  asio::awaitable<void> follow(const std::shared_ptr<Reader>& r, const FoundFile& found) {
    const std::string& path = found.path;
    const outbox::TrackedFile was = r->file();
    if (was.path != path) {
      ++env->stats.rotations;
      spdlog::info("{} is now {} (rotation)", was.path, path);
      co_await record_path(was.id, path);
      r->renamed(path);
    }
    // A change the reader has not seen (an event lost): let it look.
    // This is also how a quiet file in a watched directory is re-checked: its
    // reader does not poll (see FileReading::idle_time).
    if (found.size != r->size_seen() || found.mtime_ms != r->mtime_seen()) r->wake();
  }

  // A file no reader follows: resume its checkpoint, skip it, or follow it as new.
  // What is matched is the identity of the descriptor opened, never the
  // listing's (logrotate may rename between the two).
  asio::awaitable<void> discover(const config::SourceConfig& source, const std::string& path,
                                 int64_t now, std::set<int64_t>& replaced) {
    // Descriptors are left for the rest of the relay (the outbox, the sink):
    // followed files never take the last kFdReserve of the limit.
    const bool over_budget =
        env->stats.files_open.load() + static_cast<int64_t>(new_files.size()) >= fd_budget;
    int fd = over_budget ? -1 : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const int err = over_budget ? EMFILE : errno;
      retry_soon = true;
      if (err == ENOENT) co_return;   // renamed or deleted since the listing: the next scan sees
      if (err == EMFILE || err == ENFILE) {
        if (out_of_fds++ == 0) out_of_fds_example = path;   // one line per scan, below
      } else if (open_warned.insert(path).second) {
        spdlog::warn("cannot open {} (source {}): {}; tried again at every scan (warned once per "
                     "file)", path, source.name, std::strerror(err));
      }
      co_return;
    }
    open_warned.erase(path);
    auto id = identify(fd, cfg.tail.fingerprint_bytes);
    if (!id) {
      ::close(fd);
      retry_soon = true;
      co_return;
    }
    // What was opened decides, not what the listing said: logrotate may have
    // renamed another file to this name in between.
    const Key key{id->dev, id->inode};
    if (by_inode.count(key)) {
      ::close(fd);   // a followed file, renamed under this name: the next scan follows it
      retry_soon = true;
      co_return;
    }

    // A file with a checkpoint is always resumed, whichever source finds it
    // now: a source renamed, or a file moved to another source's globs, keeps
    // the file's uid and offset.
    auto [lo, hi] = known.equal_range(key);
    for (auto it = lo; it != hi; ++it) {
      if (!same_as(it->second.identity, fd, *id)) {
        replaced.insert(it->second.id);   // the inode holds another file now: that one is gone
        continue;
      }
      auto r = make_reader(source, fd);   // owns fd from here on
      TrackedFile file = it->second;
      known.erase(it);
      known_warned.erase(file.id);
      if (file.source != source.name) {
        spdlog::info("{} (source \"{}\" before) is now read by source \"{}\" from offset {}",
                     path, file.source, source.name, file.read_offset);
        int64_t fid = file.id;
        const std::string name = source.name;
        Status st = co_await env->outbox.run(
            [fid, &name](outbox::Outbox& o) { return o.update_source(fid, name); });
        if (!st) {
          spdlog::warn("cannot record the new source of {}: {}; tried again", path, st.message());
          known.emplace(key, file);
          retry_soon = true;
          co_return;   // r's destructor closes fd
        }
        file.source = source.name;
      }
      if (file.path != path) {
        ++env->stats.rotations;
        spdlog::info("{} was rotated to {} while tailbox was stopped; finishing it",
                     file.path, path);
        co_await record_path(file.id, path);
        file.path = path;
      }
      r->track(std::move(file));
      co_await throttle_start();
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

    if (!new_keys.insert(key).second) {
      ::close(fd);   // renamed since another name of this scan found it: one reader
      retry_soon = true;
      co_return;
    }
    new_files.push_back(
        NewFile{make_reader(source, fd), outbox::Outbox::NewFile{source.name, path, *id, start}});
  }

  // Adds the new files found so far to the outbox, then starts their readers:
  // a file's row is durable before any of its lines can be stored.
  asio::awaitable<void> add_new_files() {
    if (new_files.empty()) co_return;
    std::vector<outbox::Outbox::NewFile> rows;
    rows.reserve(new_files.size());
    for (const NewFile& n : new_files) rows.push_back(n.row);
    auto added = co_await env->outbox.run(
        [&](outbox::Outbox& o) { return o.add_files(rows); });
    std::vector<NewFile> batch = std::move(new_files);
    new_files.clear();
    new_keys.clear();
    if (!added) {
      spdlog::error("cannot track {} new files ({} and others): {}; tried again", batch.size(),
                    batch.front().row.path, added.error().message());
      retry_soon = true;
      co_return;   // the readers' destructors close the descriptors
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      auto& r = batch[i].reader;
      const TrackedFile& file = (*added)[i];
      // Thousands of files at start-up: name the first few, count the rest.
      if (++new_this_scan <= kAnnounced)
        spdlog::info("following {} (source {}, from byte {})", file.path, file.source,
                     file.read_offset);
      r->track(file);
      co_await throttle_start();
      add_reader(r);
    }
  }

  // The checkpoints of files tracked before this start. Throws when the
  // outbox cannot be read (the relay then stops: reading without them would
  // read every file again under new uids).
  asio::awaitable<void> load_checkpoints() {
    auto files = co_await env->outbox.run([](outbox::Outbox& o) { return o.tracked_files(); });
    if (!files)
      throw std::runtime_error("cannot read the tracked files from the outbox: " +
                               files.error().message());
    for (auto& f : *files) {
      fresh_outbox = false;
      Key key{f.identity.dev, f.identity.inode};
      if (f.released) {
        // A .gz is read once: remember it so that its name is never read again.
        if (is_gz(f.path)) skipped[key] = Skipped{Skipped::Why::released, f.identity};
        continue;
      }
      // Kept whether or not its source is still configured: a source renamed,
      // or a file moved to another source's globs, resumes at its offset.
      if (!source_named(f.source))
        spdlog::info("{} was read by source \"{}\", which the configuration no longer has; its "
                     "position is kept for whichever source finds it", f.path, f.source);
      known.emplace(key, std::move(f));
    }
  }

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    co_await load_checkpoints();
    env->spawn = [weak = weak_from_this()](std::shared_ptr<Reader> r) {
      if (auto impl = weak.lock()) impl->spawn(r);
    };
    asio::co_spawn(strand, close_inactive(), [self](std::exception_ptr) {});
    watcher->start([self](std::span<const Watcher::Event> events) { self->on_events(events); });
    while (!env->stopping.load()) {
      scan_requested = false;
      co_await scan();
      if (env->stopping.load()) break;
      milliseconds every = env->stats.evented.load() ? env->recheck() : cfg.tail.poll_interval;
      // A file that could not be opened, or a checkpointed file not found yet
      // (a file system mounted late): look again soon, not only at the next recheck.
      // Backs off (1 s, 2 s, ... up to the usual interval) while it lasts.
      if (retry_soon) {
        every = std::min(every, retry_every);
        retry_every = std::min(retry_every * 2, std::max(every, env->recheck()));
      } else {
        retry_every = std::max(cfg.tail.poll_interval, milliseconds(1000));
      }
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
      self->close_timer.cancel();
      self->watcher->stop();
      self->wake_all();
    });
  }
};

Tailer::Tailer(asio::any_io_executor executor, const config::Config& config,
               outbox::AsyncOutbox& outbox)
    : impl_(std::make_shared<Impl>(executor, config, outbox)) {
  raise_open_files_limit();
  struct rlimit rl {};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    impl_->fd_budget = std::max<int64_t>(static_cast<int64_t>(rl.rlim_cur) - Impl::kFdReserve, 8);
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
    if (r->done()) continue;
    FileProgress p;
    {
      TrackedFile file = r->file();
      p.source = std::move(file.source);
      p.path = std::move(file.path);
    }
    p.size = r->size_seen();
    p.offset = r->offset();
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace tailbox::tail
