// Expands path globs the way shells do, plus "**" for any number of directories
// (zero included). Matching per path segment uses fnmatch(3). Thread-safe.
#pragma once

#include <string>
#include <vector>

namespace tailbox::tail {

// Regular files matching `pattern` (absolute or relative), sorted. Unreadable
// directories are skipped. Symbolic links to files are followed; to directories not.
std::vector<std::string> expand_glob(const std::string& pattern);

// Whether `path` matches `pattern` (with "**" support).
bool glob_match(const std::string& pattern, const std::string& path);

}  // namespace tailbox::tail
