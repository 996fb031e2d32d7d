// RecordBuilder: turns leased outbox rows into the Records a sink delivers:
// the idempotency key, the file's source and path, and the fields the
// source's parser finds (json: the line's object; regex: the named groups).
// A line that does not parse is still delivered, raw, with parse_error set.
// json: a number beyond a double's range (1e999) would be written as a
// non-JSON Infinity; it is delivered as a string of its exact text instead.
//
// Deterministic: the same row always gives the same record, so a redelivery
// is byte-for-byte the first delivery. Thread-safety: build() is const and
// safe from several workers at once.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
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

// `json` (valid JSON) with each number too large for a double (it would
// parse as infinity) made a string of its exact text: 1e999 -> "1e999".
std::string quote_huge_numbers(std::string_view json);

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
