#include "dispatch/retry_policy.hpp"

#include <algorithm>

namespace tailbox::dispatch {

std::chrono::milliseconds RetryPolicy::ceiling(int attempt) const {
  int64_t d = min_.count();
  for (int i = 1; i < attempt && d < max_.count(); ++i) d *= 2;
  return std::chrono::milliseconds(std::min<int64_t>(d, max_.count()));
}

std::chrono::milliseconds RetryPolicy::delay(int attempt, std::mt19937_64& rng) const {
  auto top = ceiling(attempt);
  std::uniform_real_distribution<double> u(1.0 - jitter_, 1.0);
  auto d = static_cast<int64_t>(static_cast<double>(top.count()) * u(rng));
  return std::chrono::milliseconds(std::max<int64_t>(d, 1));
}

}  // namespace tailbox::dispatch
