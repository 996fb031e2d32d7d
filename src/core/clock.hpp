// Wall-clock helpers. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>

namespace tailbox {

inline int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace tailbox
