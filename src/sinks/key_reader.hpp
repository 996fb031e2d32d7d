// KeyReader: read-only look at a destination for `tailbox audit`: how many
// copies of each idempotency key it holds. Never writes; safe while `tailbox
// run` delivers to the same destination.
//
// Thread-safety: one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.hpp"

namespace tailbox::sinks {

class KeyReader {
 public:
  virtual ~KeyReader() = default;
  // Reads the destination whole, for readers that cannot look a key up (the
  // file sink's output, streams and topics); count() then answers from what
  // was read. The others read nothing here. REQUIRES: called once, before
  // count(), after the outbox's rows were read (a line delivered in between
  // is then pending in the outbox or found here, never missing). Throws
  // std::runtime_error.
  virtual void load() {}
  // Copies of each key at the destination (0: missing). Throws
  // std::runtime_error when the destination cannot be read.
  virtual std::vector<int64_t> count(const std::vector<std::string>& keys) = 0;
  // What load() read, for the report ("" when there is nothing to say).
  virtual std::string remark() const { return {}; }
};

// A destination read whole by load() (the file sink's output, streams and
// topics): the keys of this host, with their copies.
class CountedKeys : public KeyReader {
 public:
  explicit CountedKeys(const std::string& host_id) : prefix_(host_id + "/") {}
  std::vector<int64_t> count(const std::vector<std::string>& keys) override;

 protected:
  // One record (message) read; `key` empty when it carries none.
  void add(std::string_view key);
  // "<read> <what> read from <where>, <ours> of this host[, <keyless> without a key]".
  std::string summary(const std::string& what, const std::string& where) const;

 private:
  const std::string prefix_;
  std::unordered_map<std::string, int64_t> counts_;
  int64_t read_ = 0, ours_ = 0, keyless_ = 0;
};

// The reader for the configured sink of host `host_id` (its connection
// opened), or nullptr with `why_not` saying why the destination cannot be
// audited. The network sinks' readers live in their modules (module.hpp),
// loaded here. Throws config::ConfigError on settings it cannot read or a
// module it cannot load, std::runtime_error when it cannot connect.
std::unique_ptr<KeyReader> make_key_reader(const config::SinkConfig& sink,
                                           const std::string& host_id, std::string& why_not);

}  // namespace tailbox::sinks
