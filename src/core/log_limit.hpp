// LogLimiter: one log line per condition per interval, so that a condition that
// repeats (a destination rejecting rows, a full disk) is reported, not flooded.
// Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace tailbox {

class LogLimiter {
 public:
  explicit LogLimiter(std::chrono::milliseconds every) : every_(every) {}

  // When a line for `key` may be written now, returns how many were held back
  // since the last one; otherwise nullopt (and counts this one).
  std::optional<int64_t> allow(const std::string& key) {
    auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(mu_);
    Entry& e = entries_[key];
    if (e.last.time_since_epoch().count() != 0 && now - e.last < every_) {
      ++e.held;
      return std::nullopt;
    }
    int64_t held = e.held;
    e.held = 0;
    e.last = now;
    return held;
  }

 private:
  struct Entry {
    std::chrono::steady_clock::time_point last{};
    int64_t held = 0;
  };
  std::chrono::milliseconds every_;
  std::mutex mu_;
  std::map<std::string, Entry> entries_;
};

}  // namespace tailbox
