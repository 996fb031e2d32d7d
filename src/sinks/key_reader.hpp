// KeyReader: read-only look at a destination for `tailbox audit`: how many
// copies of each idempotency key it holds. Never writes; safe while `tailbox
// run` delivers to the same destination.
//
// Thread-safety: one thread at a time.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace tailbox::sinks {

class KeyReader {
 public:
  virtual ~KeyReader() = default;
  // Copies of each key at the destination (0: missing). Throws
  // std::runtime_error when the destination cannot be read.
  virtual std::vector<int64_t> count(const std::vector<std::string>& keys) = 0;
};

// The reader for the configured sink, or nullptr with `why_not` saying why the
// destination cannot be audited (yet). Throws config::ConfigError on settings
// it cannot read.
std::unique_ptr<KeyReader> make_key_reader(const config::SinkConfig& sink, std::string& why_not);

}  // namespace tailbox::sinks
