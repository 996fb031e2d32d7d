// FileSink (type = "file"): appends records to a local file, as NDJSON or raw lines.
//
// Exactly-once by fsync-then-record (the committed size is stored with the outbox
// ack; an unconfirmed tail is cut at open()); an NDJSON output without committed
// state is read once for the keys it holds. The argument: docs/sinks/file.md.
// Deliveries are serial. State format: "<dev>:<inode>:<size>[:<known>]".
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
  std::optional<std::string> open(const OpenContext& context) override;
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
