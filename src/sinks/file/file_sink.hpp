// FileSink (type = "file"): appends records to a local file, as NDJSON or raw lines.
//
// Exactly-once by fsync-then-record: a batch is written at the file's committed
// size and fdatasync'ed; its new size is then committed in the outbox in the
// same transaction that deletes the batch's rows (Delivery::state). At start,
// bytes past the committed size (a batch written but never confirmed, or torn
// by a crash) are cut off, and those rows are delivered again. Deliveries are
// serial. State format: "<dev>:<inode>:<size>[:<known>]".
//
// Without a committed state for the output file (a fresh or restored outbox,
// a new output path) but with records already in it, an NDJSON output is read
// once at open(): records whose idempotency key ("_id") is already there are
// not written again. Exact keys only (no hashing, so no collision can drop a
// line): about 8 bytes per existing record plus one entry per file uid, for
// the life of the process. The size read is kept in the state (<known>) and
// read again at every start, so a restart before the new outbox has delivered
// everything again still recognises those records. This finds lines read again under the *same* keys
// (an outbox restored or .recover'ed without its sink state); a new outbox
// whose uids differ (salted) gives the same lines new keys, and those are
// written again: a duplicate, never a loss. Raw output has no keys: nothing
// can be deduplicated, and open() says so loudly.
// Thread-safety: serial() is true, so deliver() is never called concurrently.
// The blocking part of a delivery (encode, write, fdatasync) runs on a thread
// of the sink's own, so a slow fsync does not hold one of the I/O threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/asio/thread_pool.hpp>

#include "config/settings.hpp"
#include "sinks/sink.hpp"

namespace tailbox::sinks {

class FileSink : public Sink {
 public:
  // Settings: path (required), format ("ndjson" | "raw"), fsync (true).
  explicit FileSink(config::Settings& settings);
  ~FileSink() override;

  const std::string& name() const override { return name_; }
  std::string guarantee() const override;
  bool serial() const override { return true; }
  std::optional<std::string> open(const std::optional<std::string>& committed_state) override;
  boost::asio::awaitable<Delivery> deliver(std::span<const Record> batch) override;

  // Records left out because the output already held their key (since open()).
  int64_t skipped() const { return skipped_; }

 private:
  std::string state_string() const;
  // deliver()'s work, on pool_.
  Delivery write_batch(std::span<const Record> batch);
  // Reads the keys of the complete NDJSON records in [0, size) of the output.
  void load_existing_keys(int64_t size, bool first_time);
  bool already_written(std::string_view key) const;

  std::string path_, name_;
  bool ndjson_ = true;
  bool fsync_ = true;
  int fd_ = -1;
  uint64_t dev_ = 0, inode_ = 0;
  int64_t committed_ = 0;
  std::string buffer_;
  // "<host>/<uid>" -> sorted offsets of records already in the output.
  std::unordered_map<std::string, std::vector<int64_t>> existing_;
  int64_t skipped_ = 0;
  int64_t known_end_ = 0;   // bytes [0, known_end_) held records tailbox had no state for
  boost::asio::thread_pool pool_{1};
};

}  // namespace tailbox::sinks
