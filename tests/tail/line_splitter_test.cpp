#include "tail/line_splitter.hpp"

#include <doctest/doctest.h>

#include <string>

using tailbox::tail::Line;
using tailbox::tail::split_lines;

TEST_SUITE("tail.line_splitter") {
  TEST_CASE("complete lines keep exact offsets and lengths") {
    std::vector<Line> out;
    size_t used = split_lines("a\nbb\nccc\n", 100, 1024, false, out);
    CHECK(used == 9);
    REQUIRE(out.size() == 3);
    CHECK(out[0].offset == 100);
    CHECK(out[0].text == "a");
    CHECK(out[1].offset == 102);
    CHECK(out[1].length == 3);
    CHECK(out[2].text == "ccc");
    CHECK(out[2].offset == 105);
  }

  TEST_CASE("a partial last line waits for its newline") {
    std::vector<Line> out;
    size_t used = split_lines("one\ntw", 0, 1024, false, out);
    CHECK(used == 4);
    REQUIRE(out.size() == 1);
    CHECK(out[0].text == "one");
    out.clear();
    CHECK(split_lines("partial", 0, 1024, false, out) == 0);
    CHECK(out.empty());
  }

  TEST_CASE("a partial last line is returned when flushing") {
    std::vector<Line> out;
    size_t used = split_lines("one\ntw", 0, 1024, true, out);
    CHECK(used == 6);
    REQUIRE(out.size() == 2);
    CHECK(out[1].text == "tw");
    CHECK_FALSE(out[1].terminated());
    CHECK(out[0].terminated());
  }

  TEST_CASE("CRLF is stripped but counted") {
    std::vector<Line> out;
    size_t used = split_lines("a\r\nb\r\n\r\n", 0, 1024, false, out);
    CHECK(used == 8);
    REQUIRE(out.size() == 3);
    CHECK(out[0].text == "a");
    CHECK(out[0].length == 3);
    CHECK(out[1].offset == 3);
    CHECK(out[2].text == "");
    CHECK(out[2].length == 2);
  }

  TEST_CASE("a lone carriage return inside a line is kept") {
    std::vector<Line> out;
    split_lines("a\rb\n", 0, 1024, false, out);
    REQUIRE(out.size() == 1);
    CHECK(out[0].text == "a\rb");
  }

  TEST_CASE("empty lines are records of their own") {
    std::vector<Line> out;
    split_lines("\n\nx\n", 0, 1024, false, out);
    REQUIRE(out.size() == 3);
    CHECK(out[0].text.empty());
    CHECK(out[1].offset == 1);
    CHECK(out[2].offset == 2);
  }

  TEST_CASE("a 1 MiB line arrives whole when max_line allows it") {
    std::string big(1 << 20, 'x');
    std::string buf = "head\n" + big + "\ntail\n";
    std::vector<Line> out;
    size_t used = split_lines(buf, 0, 2 << 20, false, out);
    CHECK(used == buf.size());
    REQUIRE(out.size() == 3);
    CHECK(out[1].text.size() == big.size());
    CHECK(out[1].offset == 5);
    CHECK(out[2].offset == static_cast<int64_t>(5 + big.size() + 1));
  }

  TEST_CASE("an overlong line is cut into pieces whose offsets add up") {
    std::string buf = std::string(10, 'a') + "\n";
    std::vector<Line> out;
    size_t used = split_lines(buf, 0, 4, false, out);
    CHECK(used == buf.size());
    REQUIRE(out.size() == 3);
    CHECK(out[0].text == "aaaa");
    CHECK_FALSE(out[0].terminated());
    CHECK(out[1].offset == 4);
    CHECK(out[2].text == "aa");
    CHECK(out[2].terminated());
    int64_t total = 0;
    for (const auto& l : out) total += l.length;
    CHECK(total == static_cast<int64_t>(buf.size()));
  }

  TEST_CASE("a line of exactly max_line bytes with CRLF is one record") {
    std::vector<Line> out;
    split_lines("abcd\r\n", 0, 4, false, out);
    REQUIRE(out.size() == 1);
    CHECK(out[0].text == "abcd");
    CHECK(out[0].length == 6);
  }

  TEST_CASE("a max_line line whose CR is the last byte read waits for its LF") {
    std::vector<Line> out;
    CHECK(split_lines("abcd\r", 0, 4, false, out) == 0);
    CHECK(out.empty());
    CHECK(split_lines("abcd\r\n", 0, 4, false, out) == 6);
    REQUIRE(out.size() == 1);
    CHECK(out[0].text == "abcd");
  }
}
