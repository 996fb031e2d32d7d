#include <doctest/doctest.h>

#include "metrics/rate_history.hpp"

using tailbox::metrics::RateHistory;

TEST_SUITE("rate_history") {
  TEST_CASE("one sample gives no rate; two give the counters' difference per second") {
    RateHistory h(10);
    CHECK(h.rates().empty());
    h.add(1000, 0, 0);
    CHECK(h.rates().empty());
    h.add(6000, 500, 250);
    auto r = h.rates();
    REQUIRE(r.size() == 1);
    CHECK(r[0].time_ms == 6000);
    CHECK(r[0].seconds == doctest::Approx(5.0));
    CHECK(r[0].read_per_second == doctest::Approx(100.0));
    CHECK(r[0].delivered_per_second == doctest::Approx(50.0));
  }

  TEST_CASE("the ring keeps the newest `capacity` rates, oldest first") {
    RateHistory h(3);
    for (int i = 0; i <= 10; ++i) h.add(1000 * i, 10 * i * i, i);
    auto r = h.rates();
    REQUIRE(r.size() == 3);
    CHECK(r[0].time_ms == 8000);
    CHECK(r[1].time_ms == 9000);
    CHECK(r[2].time_ms == 10000);
    CHECK(r[2].read_per_second == doctest::Approx(10.0 * (100 - 81)));
    CHECK(r[0].delivered_per_second == doctest::Approx(1.0));
  }

  TEST_CASE("a sample not later than the last is ignored; a counter going down is a zero rate") {
    RateHistory h(5);
    h.add(2000, 100, 100);
    h.add(2000, 900, 900);
    h.add(1000, 900, 900);
    h.add(4000, 50, 300);
    auto r = h.rates();
    REQUIRE(r.size() == 1);
    CHECK(r[0].read_per_second == 0.0);
    CHECK(r[0].delivered_per_second == doctest::Approx(100.0));
  }
}
