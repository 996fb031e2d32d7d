#include "core/record_key.hpp"

#include <doctest/doctest.h>

using namespace tailbox;

TEST_SUITE("core.record_key") {
  TEST_CASE("a key is host, uid and offset, and parses back") {
    const std::string key = make_record_key("edge1", "0767751fa7fe1f07-2", 1234567);
    CHECK(key == "edge1/0767751fa7fe1f07-2/1234567");
    auto parts = parse_record_key(key);
    REQUIRE(parts);
    CHECK(parts->host == "edge1");
    CHECK(parts->uid == "0767751fa7fe1f07-2");
    CHECK(parts->offset == 1234567);
    std::string appended = "x:";
    append_record_key(appended, "h", "u", 0);
    CHECK(appended == "x:h/u/0");
    CHECK(parse_record_key(make_record_key("h", "u", 999999999999999999))->offset ==
          999999999999999999);
  }

  TEST_CASE("malformed keys are refused") {
    for (const char* bad : {"", "garbage", "/uid/0", "h//0", "h/uid/", "h/uid/x", "h/uid/-4",
                            "h/uid/1234567890123456789", "h/0", "h/uid/1 "})
      CHECK_MESSAGE(!parse_record_key(bad), bad);
  }
}
