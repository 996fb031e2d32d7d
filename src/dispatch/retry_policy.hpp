// RetryPolicy: how long to wait before the next attempt of a failed batch.
// Exponential from backoff_min to backoff_max, scaled down by a random factor
// in [1 - jitter, 1] so that many relays do not retry in lockstep.
// Classification (retry or not) is the sink's job; this is only the policy.
// Thread-safety: const methods are safe; the caller owns the random engine.
#pragma once

#include <chrono>
#include <random>

namespace tailbox::dispatch {

class RetryPolicy {
 public:
  RetryPolicy(std::chrono::milliseconds min, std::chrono::milliseconds max, double jitter)
      : min_(min), max_(max), jitter_(jitter) {}

  // Delay before retry number `attempt` (1 for the first retry). REQUIRES: attempt >= 1.
  std::chrono::milliseconds delay(int attempt, std::mt19937_64& rng) const;
  // The delay without jitter: min * 2^(attempt-1), capped at max.
  std::chrono::milliseconds ceiling(int attempt) const;

 private:
  std::chrono::milliseconds min_, max_;
  double jitter_;
};

}  // namespace tailbox::dispatch
