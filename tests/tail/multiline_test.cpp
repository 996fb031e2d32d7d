// A start pattern the regex engine cannot decide on (catastrophic
// backtracking) is "no match", counted; it never throws into the reader.
#include "tail/multiline.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <vector>

using tailbox::config::MultilineConfig;
using tailbox::tail::Line;
using tailbox::tail::Multiline;
using tailbox::tail::StartPattern;

TEST_SUITE("tail.multiline") {
  TEST_CASE("a line the pattern cannot decide on is no match, counted, and never throws") {
    std::atomic<int64_t> errors{0};
    auto pattern = StartPattern::compile("^(a+)+$", "app", &errors);
    std::string hostile(30000, 'a');
    hostile += 'b';
    bool matched = true;
    CHECK_NOTHROW(matched = pattern->matches(hostile));
    CHECK_FALSE(matched);
    CHECK(errors.load() == 1);
    CHECK(pattern->matches("aaaa"));   // ordinary lines still decide
    CHECK(errors.load() == 1);
  }

  TEST_CASE("the hostile line continues the record being built; the next start line still starts one") {
    std::atomic<int64_t> errors{0};
    MultilineConfig config;
    config.start_pattern = "^(a+)+$";
    config.max_bytes = 1 << 20;
    Multiline ml(StartPattern::compile(config.start_pattern, "app", &errors), config);
    std::string hostile(30000, 'a');
    hostile += 'b';
    std::vector<Line> out;
    ml.add({0, 4, "aaa"}, out);
    ml.add({4, static_cast<int64_t>(hostile.size() + 1), hostile}, out);
    CHECK(out.empty());
    ml.add({4 + static_cast<int64_t>(hostile.size() + 1), 3, "aa"}, out);
    REQUIRE(out.size() == 1);
    CHECK(out[0].offset == 0);
    CHECK(out[0].text == "aaa\n" + hostile);
    CHECK(errors.load() == 1);
  }
}
