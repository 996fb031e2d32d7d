// The outbox's checkpoints of files followed before this start: loaded once,
// resumed when a scan finds the file (scan.cpp), released only on evidence
// that the file is gone.
#include <dirent.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "outbox/async_outbox.hpp"
#include "tail/tailer_impl.hpp"

namespace tailbox::tail {

std::string Tailer::Impl::still_there(const TrackedFile& f) {
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

asio::awaitable<void> Tailer::Impl::settle_known(const std::set<Key>& seen,
                                                const std::set<int64_t>& replaced,
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

asio::awaitable<void> Tailer::Impl::load_checkpoints() {
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

}  // namespace tailbox::tail
