#include "metrics/rate_history.hpp"

#include <algorithm>

namespace tailbox::metrics {

RateHistory::RateHistory(size_t capacity) : capacity_(std::max<size_t>(capacity, 1) + 1) {
  ring_.reserve(capacity_);
}

void RateHistory::add(int64_t time_ms, int64_t read_total, int64_t delivered_total) {
  std::lock_guard lock(mu_);
  if (!ring_.empty()) {
    const Sample& last = ring_[(next_ + ring_.size() - 1) % ring_.size()];
    if (time_ms <= last.time_ms) return;
  }
  Sample s{time_ms, read_total, delivered_total};
  if (ring_.size() < capacity_) {
    ring_.push_back(s);
    next_ = ring_.size() % capacity_;
  } else {
    ring_[next_] = s;
    next_ = (next_ + 1) % capacity_;
  }
}

std::vector<RateHistory::Rate> RateHistory::rates() const {
  std::lock_guard lock(mu_);
  std::vector<Rate> out;
  if (ring_.size() < 2) return out;
  // The oldest sample is at next_ once the ring is full, at 0 before.
  size_t first = ring_.size() < capacity_ ? 0 : next_;
  out.reserve(ring_.size() - 1);
  for (size_t k = 1; k < ring_.size(); ++k) {
    const Sample& a = ring_[(first + k - 1) % ring_.size()];
    const Sample& b = ring_[(first + k) % ring_.size()];
    double seconds = double(b.time_ms - a.time_ms) / 1000.0;
    out.push_back({b.time_ms, seconds, double(std::max<int64_t>(0, b.read - a.read)) / seconds,
                   double(std::max<int64_t>(0, b.delivered - a.delivered)) / seconds});
  }
  return out;
}

}  // namespace tailbox::metrics
