#include <cerrno>
#include "tail/glob.hpp"

#include <dirent.h>
#include <fnmatch.h>
#include <sys/stat.h>

#include <algorithm>
#include <functional>

namespace tailbox::tail {
namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= s.size()) {
    size_t slash = s.find('/', start);
    if (slash == std::string::npos) slash = s.size();
    if (slash > start) parts.push_back(s.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

bool has_magic(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

bool match_segments(const std::vector<std::string>& pat, size_t pi,
                    const std::vector<std::string>& path, size_t si) {
  if (pi == pat.size()) return si == path.size();
  if (pat[pi] == "**") {
    for (size_t k = si; k <= path.size(); ++k)
      if (match_segments(pat, pi + 1, path, k)) return true;
    return false;
  }
  if (si == path.size()) return false;
  if (fnmatch(pat[pi].c_str(), path[si].c_str(), FNM_PERIOD) != 0) return false;
  return match_segments(pat, pi + 1, path, si + 1);
}

void walk(const std::string& dir, const std::vector<std::string>& pat, size_t pi,
          std::vector<FoundFile>& out, std::vector<std::string>* dirs, bool* incomplete) {
  auto join = [&](const std::string& name) {
    if (dir.empty()) return name;
    if (dir == "/") return "/" + name;
    return dir + "/" + name;
  };
  if (pi == pat.size()) {
    struct stat st {};
    if (!dir.empty() && stat(dir.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      out.push_back({dir, static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
                     static_cast<int64_t>(st.st_size),
                     static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000});
    }
    return;
  }
  const std::string& seg = pat[pi];
  if (seg != "**" && !has_magic(seg)) {
    if (dirs && pi + 1 == pat.size()) {
      // A literal file name: its directory decides whether it exists.
      struct stat st {};
      if (stat(dir.empty() ? "." : dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
        dirs->push_back(dir.empty() ? "." : dir);
    }
    walk(join(seg), pat, pi + 1, out, dirs, incomplete);
    return;
  }
  DIR* d = opendir(dir.empty() ? "." : dir.c_str());
  if (!d) {
    // Out of descriptors, or not listable for now: the result misses what this
    // directory holds. Keep watching it (inotify needs no descriptor per
    // directory), so that the files followed there are still woken by events.
    if (errno != ENOENT && errno != ENOTDIR) {
      if (incomplete) *incomplete = true;
      if (dirs) dirs->push_back(dir.empty() ? "." : dir);
    }
    return;
  }
  if (dirs) dirs->push_back(dir.empty() ? "." : dir);
  std::vector<std::pair<std::string, bool>> entries;  // name, is_dir
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    bool is_dir = e->d_type == DT_DIR;
    if (e->d_type == DT_UNKNOWN) {
      struct stat st {};
      is_dir = lstat(join(name).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    }
    entries.emplace_back(std::move(name), is_dir);
  }
  closedir(d);
  if (seg == "**") {
    walk(dir, pat, pi + 1, out, dirs, incomplete);  // zero directories
    for (const auto& [name, is_dir] : entries)
      if (is_dir && name[0] != '.') walk(join(name), pat, pi, out, dirs, incomplete);
    return;
  }
  for (const auto& [name, is_dir] : entries) {
    if (fnmatch(seg.c_str(), name.c_str(), FNM_PERIOD) != 0) continue;
    if (pi + 1 < pat.size() && !is_dir) continue;
    walk(join(name), pat, pi + 1, out, dirs, incomplete);
  }
}

}  // namespace

std::vector<FoundFile> find_files(const std::string& pattern, std::vector<std::string>* dirs,
                                  bool* incomplete) {
  std::vector<FoundFile> out;
  std::vector<std::string> pat = split(pattern);
  walk(pattern.starts_with("/") ? "/" : "", pat, 0, out, dirs, incomplete);
  auto by_path = [](const FoundFile& a, const FoundFile& b) { return a.path < b.path; };
  std::sort(out.begin(), out.end(), by_path);
  out.erase(std::unique(out.begin(), out.end(),
                        [](const FoundFile& a, const FoundFile& b) { return a.path == b.path; }),
            out.end());
  return out;
}

std::vector<std::string> expand_glob(const std::string& pattern, std::vector<std::string>* dirs) {
  std::vector<std::string> out;
  for (auto& f : find_files(pattern, dirs)) out.push_back(std::move(f.path));
  return out;
}

bool glob_match(const std::string& pattern, const std::string& path) {
  return match_segments(split(pattern), 0, split(path), 0);
}

}  // namespace tailbox::tail
