#include "sinks/nats/ledger.hpp"

#include <algorithm>

namespace tailbox::sinks::nats {

void Ledger::restart(Seq high) {
  skip_.clear();
  unsure_.clear();
  high_ = high;
}

void Ledger::hold(const std::string& key, Seq seq) {
  Seq& held = skip_[key];
  held = std::max(held, seq);  // the last copy: a read-back finds it
}

void Ledger::attempt_failed(const std::string& key, Seq answer, Clock::time_point attempt_start) {
  if (answer == kRefused) return;
  if (answer != 0) {
    skip_[key] = answer;
    unsure_.erase(key);
  } else {
    unsure_.emplace(key, Unsure{high_ + 1, attempt_start});
  }
}

void Ledger::published(const std::string& key, Seq seq) {
  high_ = std::max(high_, seq);
  unsure_.erase(key);
}

void Ledger::delivered_held(const std::string& key) {
  auto it = skip_.find(key);
  if (it == skip_.end()) return;
  high_ = std::max(high_, it->second);
  skip_.erase(it);
  unsure_.erase(key);
}

std::optional<Ledger::Recheck> Ledger::recheck_needed(const std::vector<std::string>& batch_keys,
                                                      Clock::time_point now,
                                                      std::chrono::milliseconds window) const {
  Recheck r;
  r.after = std::numeric_limits<Seq>::max();
  r.oldest = now;
  for (const auto& key : batch_keys) {
    auto it = unsure_.find(key);
    if (it == unsure_.end() || skip_.count(key)) continue;
    r.keys.push_back(key);
    r.after = std::min(r.after, it->second.bound - 1);
    r.oldest = std::min(r.oldest, it->second.since);
  }
  if (r.keys.empty() || now - r.oldest < window / 2) return std::nullopt;
  return r;
}

size_t Ledger::recheck_done(const std::vector<std::string>& keys, Seq stream_last,
                            Clock::time_point start) {
  size_t found = 0;
  for (const auto& key : keys) {
    auto it = unsure_.find(key);
    if (skip_.count(key)) {
      ++found;
      if (it != unsure_.end()) unsure_.erase(it);
    } else if (it != unsure_.end()) {  // not stored up to stream_last
      it->second.bound = std::max(it->second.bound, stream_last + 1);
      it->second.since = start;
    }
  }
  return found;
}

Ledger::Seq Ledger::committed() const {
  Seq s = high_;
  for (const auto& [key, seq] : skip_) s = std::min(s, seq - 1);
  for (const auto& [key, u] : unsure_) s = std::min(s, u.bound - 1);
  return s;
}

}  // namespace tailbox::sinks::nats
