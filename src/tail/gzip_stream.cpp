#include "tail/gzip_stream.hpp"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace tailbox::tail {

struct GzipStream::Impl {
  int fd = -1;
  z_stream zs{};
  bool ready = false;
  std::vector<unsigned char> in = std::vector<unsigned char>(64 * 1024);
  int64_t in_offset = 0;        // file offset of the next compressed byte to read
  int64_t produced = 0;         // decompressed bytes so far
  int64_t members_done = 0;
  bool in_member = false;       // input of the current member was fed to zlib
  int64_t member_out = 0;       // bytes the current member produced
  bool finished = false;        // end or error: sticky
  State final_state = State::end;
  std::string message;

  State fail(std::string why) {
    finished = true;
    final_state = State::error;
    message = std::move(why);
    return State::error;
  }
};

GzipStream::GzipStream(int fd) : impl_(std::make_unique<Impl>()) {
  impl_->fd = fd;
  // 16 + MAX_WBITS: gzip format only (header and CRC-32 trailer checked).
  if (inflateInit2(&impl_->zs, 16 + MAX_WBITS) == Z_OK) impl_->ready = true;
  else impl_->fail("zlib cannot be initialised");
}

GzipStream::~GzipStream() {
  if (impl_->ready) inflateEnd(&impl_->zs);
}

GzipStream::State GzipStream::read(std::string& out, size_t max) {
  Impl& m = *impl_;
  if (m.finished) return m.final_state;
  size_t start = out.size();
  out.resize(start + max);
  m.zs.next_out = reinterpret_cast<Bytef*>(out.data() + start);
  m.zs.avail_out = static_cast<uInt>(max);
  State state = State::more;
  while (m.zs.avail_out > 0) {
    if (m.zs.avail_in == 0) {
      ssize_t n = pread(m.fd, m.in.data(), m.in.size(), m.in_offset);
      if (n < 0) {
        if (errno == EINTR) continue;
        state = m.fail(std::string("cannot read: ") + std::strerror(errno));
        break;
      }
      if (n == 0) {
        // End of the file as it is now: complete only between members.
        if (!m.in_member && m.members_done > 0) {
          m.finished = true;
          m.final_state = state = State::end;
        } else {
          state = State::truncated;
        }
        break;
      }
      m.in_offset += n;
      m.zs.next_in = m.in.data();
      m.zs.avail_in = static_cast<uInt>(n);
    }
    m.in_member = true;
    uInt before = m.zs.avail_out;
    int rc = inflate(&m.zs, Z_NO_FLUSH);
    m.member_out += before - m.zs.avail_out;
    if (rc == Z_STREAM_END) {
      ++m.members_done;
      m.in_member = false;
      m.member_out = 0;
      inflateReset(&m.zs);   // another member may follow; next_in/avail_in are kept
      continue;
    }
    if (rc == Z_OK || rc == Z_BUF_ERROR) continue;   // Z_BUF_ERROR: needs more input
    if (m.members_done > 0 && m.member_out == 0) {
      // Bytes after the last member that are not gzip (padding): ignored.
      m.finished = true;
      m.final_state = state = State::end;
      m.message = "bytes after the last gzip member were ignored";
      break;
    }
    state = m.fail(std::string("not a valid gzip stream: ") + (m.zs.msg ? m.zs.msg : "error"));
    break;
  }
  size_t got = max - m.zs.avail_out;
  out.resize(start + got);
  m.produced += static_cast<int64_t>(got);
  return state;
}

GzipStream::State GzipStream::skip(int64_t n) {
  std::string scratch;
  State state = State::more;
  while (n > 0) {
    scratch.clear();
    state = read(scratch, static_cast<size_t>(std::min<int64_t>(n, 256 * 1024)));
    n -= static_cast<int64_t>(scratch.size());
    if (state != State::more) break;
  }
  return state;
}

int64_t GzipStream::position() const { return impl_->produced; }
const std::string& GzipStream::message() const { return impl_->message; }

}  // namespace tailbox::tail
