#include "sinks/file/file_sink.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "sinks/ndjson.hpp"

namespace tailbox::sinks {

FileSink::FileSink(config::Settings& s) {
  path_ = s.required_string("path");
  ndjson_ = s.choice("format", "ndjson", {"ndjson", "raw"}) == "ndjson";
  fsync_ = s.boolean("fsync", true);
  name_ = "file:" + path_;
}

FileSink::~FileSink() {
  if (fd_ >= 0) ::close(fd_);
}

std::string FileSink::guarantee() const {
  return fsync_ ? "exactly-once: fsync, then the committed size is stored with the outbox ack; "
                  "an unconfirmed tail is cut at start"
                : "exactly-once across process crashes; fsync = false can lose or repeat the "
                  "last batches on power loss";
}

std::optional<std::string> FileSink::open(const std::optional<std::string>& state) {
  if (fd_ >= 0) ::close(fd_);   // open() is retried after failures
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
  if (fd_ < 0) throw std::runtime_error("cannot open " + path_ + ": " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd_, &st) != 0) throw std::runtime_error("cannot stat " + path_ + ": " + std::strerror(errno));
  dev_ = static_cast<uint64_t>(st.st_dev);
  inode_ = static_cast<uint64_t>(st.st_ino);
  int64_t size = st.st_size;
  committed_ = size;

  unsigned long long dev = 0, ino = 0;
  long long recorded = 0;
  if (state && std::sscanf(state->c_str(), "%llu:%llu:%lld", &dev, &ino, &recorded) == 3 &&
      dev == dev_ && ino == inode_) {
    if (size > recorded) {
      // Written but never confirmed (or torn by a crash): those rows are still
      // in the outbox and will be written again.
      if (ftruncate(fd_, recorded) != 0)
        throw std::runtime_error("cannot cut the unconfirmed tail of " + path_ + ": " +
                                 std::strerror(errno));
      spdlog::info("{}: cut {} unconfirmed bytes after the committed size {}", path_,
                   size - recorded, recorded);
      committed_ = recorded;
    } else if (size < recorded) {
      spdlog::warn("{} is shorter ({} bytes) than tailbox last committed ({}): someone else "
                   "truncated it; appending after its current end", path_, size, recorded);
    }
    return std::nullopt;
  }
  if (state)
    spdlog::info("{} is a different file than the one tailbox last wrote; appending to it", path_);
  // No committed size for this file yet: record where it starts *before* the
  // first write, or a crash between that write and its ack could not be undone.
  return state_string();
}

std::string FileSink::state_string() const {
  return std::to_string(dev_) + ":" + std::to_string(inode_) + ":" + std::to_string(committed_);
}

boost::asio::awaitable<Delivery> FileSink::deliver(std::span<const Record> batch) {
  buffer_.clear();
  for (const Record& r : batch) {
    if (ndjson_) {
      append_ndjson(buffer_, r);
    } else {
      buffer_.append(r.line);
      buffer_ += '\n';
    }
  }
  size_t done = 0;
  while (done < buffer_.size()) {
    ssize_t n = pwrite(fd_, buffer_.data() + done, buffer_.size() - done,
                       committed_ + static_cast<int64_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      std::string err = std::strerror(errno);
      (void)!ftruncate(fd_, committed_);
      co_return Delivery::retry("write " + path_ + ": " + err);
    }
    done += static_cast<size_t>(n);
  }
  if (fsync_ && fdatasync(fd_) != 0) {
    std::string err = std::strerror(errno);
    (void)!ftruncate(fd_, committed_);
    co_return Delivery::retry("fsync " + path_ + ": " + err);
  }
  committed_ += static_cast<int64_t>(buffer_.size());
  if (buffer_.capacity() > (8u << 20)) std::string().swap(buffer_);
  co_return Delivery::delivered(state_string());
}

}  // namespace tailbox::sinks
