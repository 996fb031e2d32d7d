// FileSink (type = "file"): appends records to a local file, as NDJSON or raw lines.
//
// Exactly-once by fsync-then-record: a batch is written at the file's committed
// size and fdatasync'ed; its new size is then committed in the outbox in the
// same transaction that deletes the batch's rows (Delivery::state). At start,
// bytes past the committed size (a batch written but never confirmed, or torn
// by a crash) are cut off, and those rows are delivered again. Deliveries are
// serial. State format: "<dev>:<inode>:<size>".
// Thread-safety: serial() is true, so deliver() is never called concurrently.
#pragma once

#include <string>

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

 private:
  std::string state_string() const;

  std::string path_, name_;
  bool ndjson_ = true;
  bool fsync_ = true;
  int fd_ = -1;
  uint64_t dev_ = 0, inode_ = 0;
  int64_t committed_ = 0;
  std::string buffer_;
};

}  // namespace tailbox::sinks
