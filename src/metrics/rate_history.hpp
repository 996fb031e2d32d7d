// RateHistory: a ring buffer of the last samples of two cumulative counters
// (lines read, rows delivered), turned into per-second rates for the status
// page's chart. Pure: the caller supplies the time, so tests need no clock.
//
// Thread-safety: add() and rates() take a mutex; safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace tailbox::metrics {

class RateHistory {
 public:
  struct Rate {
    int64_t time_ms = 0;            // end of the interval
    double seconds = 0;             // its length
    double read_per_second = 0;
    double delivered_per_second = 0;
  };

  // Keeps `capacity` rates, i.e. capacity + 1 samples. REQUIRES: capacity >= 1.
  explicit RateHistory(size_t capacity);

  // Records the counters' values at `time_ms`. A sample not later than the
  // previous one is ignored; a counter that went down counts as 0 (restart of
  // a component), never as a negative rate.
  void add(int64_t time_ms, int64_t read_total, int64_t delivered_total);

  // One rate per interval between consecutive samples, oldest first.
  std::vector<Rate> rates() const;

 private:
  struct Sample {
    int64_t time_ms, read, delivered;
  };
  const size_t capacity_;            // samples kept: rates + 1
  mutable std::mutex mu_;
  std::vector<Sample> ring_;         // grows to capacity_, then wraps at next_
  size_t next_ = 0;
};

}  // namespace tailbox::metrics
