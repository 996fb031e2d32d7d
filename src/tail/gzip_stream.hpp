// GzipStream: the decompressed bytes of a gzip file (every member of it), read
// forward from an open file descriptor with zlib. Offsets of a .gz source are
// offsets in this decompressed stream.
//
// A file that ends inside a member (gzip still writing it, or cut) reports
// `truncated`; reading again later continues where it stopped, with the bytes
// added since. Bytes after the last complete member that are not a gzip
// member are ignored, as gzip(1) does.
//
// Thread-safety: one per reader; not thread-safe. Does not own the descriptor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace tailbox::tail {

class GzipStream {
 public:
  enum class State {
    more,        // more output may follow: call read() again
    end,         // the whole file is decompressed and complete
    truncated,   // the file ends inside a member; more bytes may come
    error,       // not gzip, or damaged: message() says why
  };

  explicit GzipStream(int fd);
  ~GzipStream();
  GzipStream(const GzipStream&) = delete;
  GzipStream& operator=(const GzipStream&) = delete;

  // Appends up to `max` decompressed bytes to `out`.
  State read(std::string& out, size_t max);
  // Decompresses and drops `n` bytes (resuming at a checkpoint).
  State skip(int64_t n);

  int64_t position() const;   // decompressed bytes produced so far
  const std::string& message() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tailbox::tail
