// Expands path globs the way shells do, plus "**" for any number of directories
// (zero included). Matching per path segment uses fnmatch(3). Thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tailbox::tail {

// Regular files matching `pattern` (absolute or relative), sorted. Unreadable
// directories are skipped. Symbolic links to files are followed; to directories not.
// With `dirs`, appends the directories whose entries decided the result (those
// read, and the directory of a literal file name): watching them for created,
// moved and deleted entries sees every change of the result.
std::vector<std::string> expand_glob(const std::string& pattern,
                                     std::vector<std::string>* dirs = nullptr);

// A regular file found by a glob, with what stat(2) said when it was found.
struct FoundFile {
  std::string path;
  uint64_t dev = 0, inode = 0;
  int64_t size = 0, mtime_ms = 0;
};
// expand_glob() with each file's stat: one stat(2) per file, not two.
// `incomplete` (if given) is set when a directory could not be listed for
// another reason than not existing (EMFILE, EACCES, ...): files may be missing
// from the result; that directory is still named in `dirs`.
std::vector<FoundFile> find_files(const std::string& pattern, std::vector<std::string>* dirs,
                                  bool* incomplete = nullptr);

// Whether `path` matches `pattern` (with "**" support).
bool glob_match(const std::string& pattern, const std::string& path);

}  // namespace tailbox::tail
