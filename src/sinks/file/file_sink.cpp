#include "sinks/file/file_sink.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "core/blocking.hpp"
#include "core/record_key.hpp"
#include "sinks/ndjson.hpp"

namespace tailbox::sinks {

FileSink::FileSink(config::Settings& s) {
  path_ = s.required_string("path");
  ndjson_ = s.choice("format", "ndjson", {"ndjson", "raw"}) == "ndjson";
  fsync_ = s.boolean("fsync", true);
  name_ = "file:" + path_;
}

FileSink::~FileSink() {
  pool_.join();
  if (fd_ >= 0) ::close(fd_);
}

std::string FileSink::guarantee() const {
  return fsync_ ? "exactly-once: fsync, then the committed size is stored with the outbox ack; "
                  "an unconfirmed tail is cut at start"
                : "exactly-once across process crashes; fsync = false can lose or repeat the "
                  "last batches on power loss";
}

std::optional<std::string> FileSink::open(const OpenContext& context) {
  const std::optional<std::string>& state = context.committed_state;
  if (fd_ >= 0) ::close(fd_);   // open() is retried after failures
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);   // read: existing keys
  if (fd_ < 0) throw std::runtime_error("cannot open " + path_ + ": " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd_, &st) != 0) throw std::runtime_error("cannot stat " + path_ + ": " + std::strerror(errno));
  dev_ = static_cast<uint64_t>(st.st_dev);
  inode_ = static_cast<uint64_t>(st.st_ino);
  int64_t size = st.st_size;
  committed_ = size;

  unsigned long long dev = 0, ino = 0;
  long long recorded = 0, known = 0;
  existing_.clear();
  skipped_ = 0;
  known_end_ = 0;
  int fields = state ? std::sscanf(state->c_str(), "%llu:%llu:%lld:%lld", &dev, &ino, &recorded, &known)
                     : 0;
  if (fields >= 3 && dev == dev_ && ino == inode_) {
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
    // Records found in the file when this outbox first met it: still to be
    // recognised after a restart (lines of a new outbox may not all have
    // been delivered again yet).
    if (fields == 4 && known > 0 && ndjson_) {
      known_end_ = std::min<int64_t>(known, committed_);
      load_existing_keys(known_end_, false);
    }
    return std::nullopt;
  }
  if (state)
    spdlog::info("{} is a different file than the one tailbox last wrote; appending to it", path_);
  if (size > 0) {
    if (ndjson_) {
      known_end_ = size;
      load_existing_keys(size, true);
    } else {
      spdlog::warn("{} already holds {} bytes and tailbox has no record of writing them (a new or "
                   "restored outbox, or a new output file). Raw output carries no idempotency keys: "
                   "lines that the outbox delivers again WILL BE WRITTEN TWICE. Use format = "
                   "\"ndjson\", or move the output aside before starting with a new outbox",
                   path_, size);
    }
  }
  // No committed size for this file yet: record where it starts *before* the
  // first write, or a crash between that write and its ack could not be undone.
  return state_string();
}

namespace {

// "<host>/<uid>/<offset>" -> ("<host>/<uid>", offset); false if it does not parse.
bool split_key(std::string_view key, std::string_view& file, int64_t& offset) {
  const std::optional<RecordKey> k = parse_record_key(key);
  if (!k) return false;
  file = key.substr(0, k->host.size() + 1 + k->uid.size());
  offset = k->offset;
  return true;
}

}  // namespace

void FileSink::load_existing_keys(int64_t size, bool first_time) {
  std::string chunk;
  std::string carry;
  int64_t pos = 0, records = 0;
  const size_t kChunk = 4 << 20;
  while (pos < size) {
    chunk.resize(static_cast<size_t>(std::min<int64_t>(kChunk, size - pos)));
    ssize_t n = pread(fd_, chunk.data(), chunk.size(), pos);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      throw std::runtime_error("cannot read " + path_ + " to find the records it holds: " +
                               std::strerror(errno));
    if (n == 0) break;
    pos += n;
    carry.append(chunk.data(), static_cast<size_t>(n));
    size_t start = 0;
    for (size_t nl; (nl = carry.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string key = ndjson_record_key(std::string_view(carry).substr(start, nl - start));
      std::string_view file;
      int64_t offset = 0;
      if (!key.empty() && split_key(key, file, offset)) {
        existing_[std::string(file)].push_back(offset);
        ++records;
      }
    }
    carry.erase(0, start);
  }
  // A last line without its newline is not a complete record: not counted.
  for (auto& [file, offsets] : existing_) {
    std::sort(offsets.begin(), offsets.end());
    offsets.shrink_to_fit();
  }
  if (!first_time) {
    spdlog::info("{}: {} records in its first {} bytes predate this outbox; records with their "
                 "keys are left out", path_, records, size);
    return;
  }
  spdlog::warn("{} already holds {} records ({} bytes) that tailbox has no record of writing (a new "
               "or restored outbox, or a new output file): lines delivered again under the same "
               "keys are skipped; lines read again by a new outbox get new keys and are written "
               "again (see README, a damaged outbox)", path_, records, size);
}

bool FileSink::already_written(std::string_view key) const {
  std::string_view file;
  int64_t offset = 0;
  if (!split_key(key, file, offset)) return false;
  auto it = existing_.find(std::string(file));
  return it != existing_.end() && std::binary_search(it->second.begin(), it->second.end(), offset);
}

std::string FileSink::state_string() const {
  std::string s = std::to_string(dev_) + ":" + std::to_string(inode_) + ":" + std::to_string(committed_);
  if (known_end_ > 0) s += ":" + std::to_string(known_end_);
  return s;
}

boost::asio::awaitable<Delivery> FileSink::deliver(std::span<const Record> batch) {
  auto work = [this, batch] { return write_batch(batch); };
  co_return co_await run_blocking(pool_, work);
}

Delivery FileSink::write_batch(std::span<const Record> batch) {
  buffer_.clear();
  int64_t skipped = 0;
  for (const Record& r : batch) {
    if (!existing_.empty() && already_written(r.key)) {
      ++skipped;
      continue;
    }
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
      return Delivery::retry("write " + path_ + ": " + err);
    }
    done += static_cast<size_t>(n);
  }
  if (fsync_ && fdatasync(fd_) != 0) {
    std::string err = std::strerror(errno);
    (void)!ftruncate(fd_, committed_);
    return Delivery::retry("fsync " + path_ + ": " + err);
  }
  committed_ += static_cast<int64_t>(buffer_.size());
  if (skipped > 0) {
    if (skipped_ == 0)
      spdlog::info("{}: leaving out records whose keys it already holds (first batch: {} of {})",
                   path_, skipped, batch.size());
    skipped_ += skipped;
  }
  if (buffer_.capacity() > (8u << 20)) std::string().swap(buffer_);
  return Delivery::delivered(state_string());
}

}  // namespace tailbox::sinks
