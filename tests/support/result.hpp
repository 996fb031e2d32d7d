// ok(r): the value of a Result that must have succeeded (the test fails
// otherwise, with the Status's message).
#pragma once

#include <doctest/doctest.h>

#include <utility>

#include "core/status.hpp"

namespace tailbox::testing {

template <typename T>
T ok(Result<T> r) {
  REQUIRE_MESSAGE(r.has_value(), (r ? std::string() : r.error().message()));
  return std::move(*r);
}

}  // namespace tailbox::testing
