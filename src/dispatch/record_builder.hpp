// RecordBuilder: turns leased outbox rows into the Records a sink delivers:
// the idempotency key, the file's source and path, and the fields the
// source's parser finds (json: the line's object; regex: the named groups).
// A line that does not parse is still delivered, raw, with parse_error set.
//
// Deterministic: the same row always gives the same record, so a redelivery
// is byte-for-byte the first delivery. Thread-safety: build() is const and
// safe from several workers at once.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "core/record.hpp"
#include "outbox/outbox.hpp"

namespace tailbox::dispatch {

// The records of one leased batch and the memory behind them.
struct Batch {
  std::vector<outbox::LeasedRow> rows;
  std::vector<std::string> keys;
  std::vector<std::string> fields;
  std::vector<std::string> errors;
  std::vector<Record> records;
  int64_t payload_bytes() const;
};

class RecordBuilder {
 public:
  // Throws config::ConfigError when a regex pattern does not compile.
  explicit RecordBuilder(const config::Config& config);
  ~RecordBuilder();

  // Fills batch.records (and keys/fields) from batch.rows.
  void build(Batch& batch) const;

 private:
  struct Parser;
  std::string host_;
  std::vector<std::pair<std::string, std::unique_ptr<Parser>>> parsers_;  // by source name
};

}  // namespace tailbox::dispatch
