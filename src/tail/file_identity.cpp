#include "tail/file_identity.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace tailbox::tail {



std::optional<FileIdentity> identify(int fd, int64_t fingerprint_bytes) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return std::nullopt;
  FileIdentity id;
  id.dev = static_cast<uint64_t>(st.st_dev);
  id.inode = static_cast<uint64_t>(st.st_ino);
  id.size = static_cast<int64_t>(st.st_size);
  id.mtime_ms = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000;
  int64_t want = std::min<int64_t>(fingerprint_bytes, id.size);
  std::vector<char> buf(static_cast<size_t>(want));
  int64_t got = 0;
  while (got < want) {
    ssize_t n = pread(fd, buf.data() + got, static_cast<size_t>(want - got), got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    if (n == 0) break;
    got += n;
  }
  id.fingerprint_len = got;
  id.fingerprint = fnv1a64(buf.data(), static_cast<size_t>(got));
  return id;
}

std::optional<FileIdentity> grown_identity(int fd, const FileIdentity& was,
                                           int64_t fingerprint_bytes, int64_t file_size) {
  if (was.fingerprint_len >= fingerprint_bytes || file_size <= was.fingerprint_len)
    return std::nullopt;
  std::vector<char> head(static_cast<size_t>(std::min(fingerprint_bytes, file_size)));
  size_t got = 0;
  while (got < head.size()) {
    ssize_t n = pread(fd, head.data() + got, head.size() - got, static_cast<off_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (static_cast<int64_t>(got) <= was.fingerprint_len ||
      fnv1a64(head.data(), static_cast<size_t>(was.fingerprint_len)) != was.fingerprint)
    return std::nullopt;
  FileIdentity grown = was;
  grown.fingerprint = fnv1a64(head.data(), got);
  grown.fingerprint_len = static_cast<int64_t>(got);
  return grown;
}

bool same_file(const FileIdentity& was, const FileIdentity& now, uint64_t now_prefix_hash) {
  return was.dev == now.dev && was.inode == now.inode && now.size >= was.fingerprint_len &&
         now_prefix_hash == was.fingerprint;
}


}  // namespace tailbox::tail
