// The idempotency key every record carries: "<host_id>/<file uid>/<offset>".
//
// host_id never contains '/' (config validation) and a uid is hex digits with
// an optional "-<generation>"; offset is the byte offset of the record's first
// byte in its file (decimal). The key names one line of one file of one host
// for ever: sinks that can dedup on it give exactly-once. This is the only
// place that builds or takes a key apart. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tailbox {

struct RecordKey {
  std::string_view host;
  std::string_view uid;
  int64_t offset = 0;
};

// Appends the key to `out` (no allocation when `out` has room).
void append_record_key(std::string& out, std::string_view host, std::string_view uid,
                       int64_t offset);
std::string make_record_key(std::string_view host, std::string_view uid, int64_t offset);

// The parts of `key`, viewing into it; nullopt unless it has a non-empty host,
// a non-empty uid and an offset of 1 to 18 decimal digits.
std::optional<RecordKey> parse_record_key(std::string_view key);

}  // namespace tailbox
