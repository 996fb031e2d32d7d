#include "core/log_limit.hpp"

#include <doctest/doctest.h>

#include <thread>

using namespace std::chrono_literals;

TEST_SUITE("core.log_limit") {
  TEST_CASE("one line per key per interval") {
    tailbox::LogLimiter limit(1h);
    auto first = limit.allow("disk full");
    REQUIRE(first);
    CHECK(*first == 0);
    CHECK_FALSE(limit.allow("disk full"));
    CHECK_FALSE(limit.allow("disk full"));
    CHECK(limit.allow("other condition"));   // keys are independent
  }

  TEST_CASE("after the interval the next line says how many were held back") {
    tailbox::LogLimiter limit(200ms);
    REQUIRE(limit.allow("k"));
    CHECK_FALSE(limit.allow("k"));
    std::this_thread::sleep_for(250ms);
    auto later = limit.allow("k");
    REQUIRE(later);
    CHECK(*later == 1);
  }
}
