// Discovery: the globs expanded, what they list matched against followed
// files by identity (dev, inode, first bytes), new files added to the outbox.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>
#include <unordered_set>

#include "core/clock.hpp"
#include "outbox/async_outbox.hpp"
#include "tail/file_identity.hpp"
#include "tail/tailer_impl.hpp"

namespace tailbox::tail {

bool is_gz(const std::string& path) { return path.ends_with(".gz"); }

namespace {

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

// Whether the open file `fd` (identity `now`) is the file recorded as `was`.
bool same_as(const FileIdentity& was, int fd, const FileIdentity& now) {
  if (was.dev != now.dev || was.inode != now.inode) return false;
  if (was.fingerprint_len == now.fingerprint_len) return was.fingerprint == now.fingerprint;
  auto prefix = identify(fd, was.fingerprint_len);
  return prefix && same_file(was, *prefix, prefix->fingerprint);
}

}  // namespace

bool wanted(const config::SourceConfig& source, const std::string& path) {
  if (is_gz(path) && !source.read_gzip) return false;   // compressed rotations: never as text
  return !excluded(source, path);
}

asio::awaitable<void> Tailer::Impl::scan() {
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
  // found is followed: a reader can then park at once (see Reader::run), and
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

asio::awaitable<void> Tailer::Impl::record_path(int64_t fid, const std::string& path) {
  if (Status st = co_await env->outbox.run(
          [fid, &path](outbox::Outbox& o) { return o.update_path(fid, path); });
      !st)
    spdlog::warn("cannot record the new path {} of file {}: {}", path, fid, st.message());
}

asio::awaitable<void> Tailer::Impl::follow(const std::shared_ptr<Reader>& r, const FoundFile& found) {
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
  // reader does not poll (see Reader::Reading::idle_time).
  if (found.size != r->size_seen() || found.mtime_ms != r->mtime_seen()) r->wake();
}

asio::awaitable<void> Tailer::Impl::discover(const config::SourceConfig& source,
                                            const std::string& path, int64_t now,
                                            std::set<int64_t>& replaced) {
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

asio::awaitable<void> Tailer::Impl::add_new_files() {
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

}  // namespace tailbox::tail
