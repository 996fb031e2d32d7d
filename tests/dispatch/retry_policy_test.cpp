#include "dispatch/retry_policy.hpp"

#include <doctest/doctest.h>

using namespace std::chrono_literals;
using tailbox::dispatch::RetryPolicy;

TEST_SUITE("dispatch.retry_policy") {
  TEST_CASE("delays double from min and stop at max") {
    RetryPolicy p(100ms, 1000ms, 0.0);
    CHECK(p.ceiling(1) == 100ms);
    CHECK(p.ceiling(2) == 200ms);
    CHECK(p.ceiling(4) == 800ms);
    CHECK(p.ceiling(5) == 1000ms);
    CHECK(p.ceiling(60) == 1000ms);
  }

  TEST_CASE("jitter scales each delay into [1 - jitter, 1] of the ceiling") {
    RetryPolicy p(1000ms, 1000ms, 0.5);
    std::mt19937_64 rng(42);
    bool varied = false;
    auto first = p.delay(1, rng);
    for (int i = 0; i < 200; ++i) {
      auto d = p.delay(1, rng);
      CHECK(d >= 500ms);
      CHECK(d <= 1000ms);
      varied = varied || d != first;
    }
    CHECK(varied);
  }
}
