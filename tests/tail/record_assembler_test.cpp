#include "tail/record_assembler.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using tailbox::config::LongLines;
using tailbox::config::SourceConfig;
using tailbox::tail::Line;
using tailbox::tail::RecordAssembler;
using tailbox::tail::StartPattern;

namespace {

struct Rec {
  int64_t offset, length;
  std::string text;
  bool operator==(const Rec&) const = default;
};

std::vector<Rec> own(const std::vector<Line>& lines) {
  std::vector<Rec> out;
  for (const auto& l : lines) out.push_back({l.offset, l.length, std::string(l.text)});
  return out;
}

SourceConfig multiline_source(const char* pattern = "^\\d{4}-") {
  SourceConfig s;
  s.multiline.start_pattern = pattern;
  return s;
}

// Feeds `file` to `a` in pieces of `step` bytes the way a reader does: bytes not
// consumed are passed again with the next ones. Returns every record, in order,
// and sets `read_pos` to where consumed bytes end.
std::vector<Rec> feed(RecordAssembler& a, const std::string& file, size_t step, int64_t& read_pos,
                      bool flush_at_end = false) {
  std::vector<Rec> all;
  read_pos = 0;
  size_t have = 0;
  while (true) {
    have = std::min(file.size(), have + step);
    std::vector<Line> out;
    bool last = have == file.size();
    size_t used = a.consume(std::string_view(file).substr(static_cast<size_t>(read_pos),
                                                          have - static_cast<size_t>(read_pos)),
                            read_pos, flush_at_end && last, out);
    read_pos += static_cast<int64_t>(used);
    auto got = own(out);
    all.insert(all.end(), got.begin(), got.end());
    a.release();
    if (last) break;
  }
  return all;
}

}  // namespace

TEST_SUITE("tail.record_assembler") {
  TEST_CASE("without multiline or long lines, records are the lines") {
    SourceConfig src;
    RecordAssembler a(src, nullptr);
    std::vector<Line> out;
    CHECK(a.consume("a\nbb\npart", 10, false, out) == 5);
    REQUIRE(out.size() == 2);
    CHECK(out[1].offset == 12);
    CHECK(a.checkpoint(15) == 15);
  }

  TEST_CASE("multiline joins continuation lines to the line that starts a record") {
    SourceConfig src = multiline_source();
    RecordAssembler a(src, StartPattern::compile(src.multiline.start_pattern));
    std::string file =
        "2024-01-01 boom\n"
        "  at a()\n"
        "  at b()\n"
        "2024-01-01 next\n";
    std::vector<Line> out;
    size_t used = a.consume(file, 0, false, out);
    CHECK(used == file.size());
    auto recs = own(out);
    REQUIRE(recs.size() == 1);
    CHECK(recs[0] == Rec{0, 34, "2024-01-01 boom\n  at a()\n  at b()"});
    // The second record waits for the next start line: the checkpoint stays at
    // its first byte, so a restart reads it again whole.
    CHECK(a.has_pending());
    CHECK(a.checkpoint(static_cast<int64_t>(used)) == 34);
    out.clear();
    a.flush_pending(out);
    REQUIRE(out.size() == 1);
    CHECK(own(out)[0] == Rec{34, 16, "2024-01-01 next"});
    CHECK(a.checkpoint(static_cast<int64_t>(used)) == static_cast<int64_t>(used));
  }

  TEST_CASE("multiline records do not depend on how the file is cut into reads") {
    std::string file;
    for (int i = 0; i < 50; ++i) {
      file += "2024-01-01 event " + std::to_string(i) + "\n";
      for (int k = 0; k < i % 4; ++k) file += "\tcontinued " + std::to_string(k) + "\r\n";
    }
    SourceConfig src = multiline_source();
    std::vector<Rec> reference;
    for (size_t step : {size_t{1}, size_t{7}, size_t{64}, file.size()}) {
      RecordAssembler a(src, StartPattern::compile(src.multiline.start_pattern));
      int64_t pos = 0;
      auto recs = feed(a, file, step, pos);
      std::vector<Line> out;
      a.flush_pending(out);
      auto tail = own(out);
      recs.insert(recs.end(), tail.begin(), tail.end());
      if (reference.empty()) reference = recs;
      CHECK(recs == reference);
    }
    REQUIRE(reference.size() == 50);
    // Lengths tile the file exactly: no byte lost, none counted twice.
    int64_t at = 0;
    for (const auto& r : reference) {
      CHECK(r.offset == at);
      at += r.length;
    }
    CHECK(at == static_cast<int64_t>(file.size()));
    CHECK(reference[3].text == "2024-01-01 event 3\n\tcontinued 0\n\tcontinued 1\n\tcontinued 2");
  }

  TEST_CASE("lines before the first start line form a record of their own") {
    SourceConfig src = multiline_source();
    RecordAssembler a(src, StartPattern::compile(src.multiline.start_pattern));
    std::vector<Line> out;
    a.consume("tail of an earlier trace\nmore\n2024-01-01 first\n", 0, false, out);
    REQUIRE(out.size() == 1);
    CHECK(out[0].text == "tail of an earlier trace\nmore");
    CHECK(out[0].offset == 0);
  }

  TEST_CASE("multiline.max_lines and max_bytes complete a record early") {
    SourceConfig src = multiline_source();
    src.multiline.max_lines = 3;
    RecordAssembler a(src, StartPattern::compile(src.multiline.start_pattern));
    std::vector<Line> out;
    a.consume("2024-01-01 x\n1\n2\n3\n4\n", 0, false, out);
    REQUIRE(out.size() == 1);
    CHECK(out[0].text == "2024-01-01 x\n1\n2");
    CHECK(a.checkpoint(100) == 17);   // "3" starts the next record

    SourceConfig small = multiline_source();
    small.multiline.max_bytes = 256;
    RecordAssembler b(small, StartPattern::compile(small.multiline.start_pattern));
    std::string file = "2024-01-01 x\n";
    for (int i = 0; i < 10; ++i) file += std::string(60, 'a' + i) + "\n";
    out.clear();
    b.consume(file, 0, false, out);
    b.flush_pending(out);
    int64_t total = 0;
    for (const auto& l : out) {
      CHECK(l.text.size() <= 256);
      total += l.length;
    }
    CHECK(total == static_cast<int64_t>(file.size()));
    CHECK(out.size() == 3);
  }

  TEST_CASE("truncate keeps the first max_line_bytes and counts the whole line") {
    SourceConfig src;
    src.max_line_bytes = 256;
    src.max_line_mode = LongLines::truncate;
    std::string longline(1000, 'x');
    std::string file = "short\n" + longline + "\r\nafter\n";
    for (size_t step : {size_t{100}, size_t{258}, size_t{4096}}) {
      RecordAssembler a(src, nullptr);
      int64_t pos = 0;
      auto recs = feed(a, file, step, pos);
      REQUIRE(recs.size() == 3);
      CHECK(recs[0] == Rec{0, 6, "short"});
      CHECK(recs[1].offset == 6);
      CHECK(recs[1].length == 1002);
      CHECK(recs[1].text == std::string(256, 'x'));
      // The marker of a truncated record: length > payload + 2.
      CHECK(recs[1].length > static_cast<int64_t>(recs[1].text.size()) + 2);
      CHECK(recs[2] == Rec{1008, 6, "after"});
      CHECK(pos == static_cast<int64_t>(file.size()));
    }
  }

  TEST_CASE("an overlong line being truncated holds the checkpoint at its start") {
    SourceConfig src;
    src.max_line_bytes = 256;
    src.max_line_mode = LongLines::truncate;
    RecordAssembler a(src, nullptr);
    std::string part = "ok\n" + std::string(600, 'y');   // no newline yet
    std::vector<Line> out;
    size_t used = a.consume(part, 0, false, out);
    REQUIRE(out.size() == 1);
    CHECK(used > 3);
    // Nothing of the long line may be committed before its end is known: a
    // restart reads it again from its first byte and truncates it the same way.
    CHECK(a.checkpoint(static_cast<int64_t>(used)) == 3);
    out.clear();
    std::string rest = part.substr(used) + "yyyy\n";
    used += a.consume(rest, static_cast<int64_t>(used), false, out);
    REQUIRE(out.size() == 1);
    CHECK(out[0].offset == 3);
    CHECK(out[0].length == 605);
    CHECK(out[0].text.size() == 256);
    CHECK(a.checkpoint(static_cast<int64_t>(used)) == static_cast<int64_t>(used));
  }

  TEST_CASE("a flush ends a line being truncated with the bytes read so far") {
    SourceConfig src;
    src.max_line_bytes = 256;
    src.max_line_mode = LongLines::truncate;
    RecordAssembler a(src, nullptr);
    std::string data(700, 'z');
    int64_t pos = 0;
    auto recs = feed(a, data, 300, pos, /*flush_at_end=*/true);
    REQUIRE(recs.size() == 1);
    CHECK(recs[0].length == 700);
    CHECK(recs[0].text.size() == 256);
  }

  TEST_CASE("split mode still cuts overlong lines into pieces") {
    SourceConfig src;
    src.max_line_bytes = 256;
    RecordAssembler a(src, nullptr);
    std::string file = std::string(600, 'q') + "\n";
    int64_t pos = 0;
    auto recs = feed(a, file, 4096, pos);
    REQUIRE(recs.size() == 3);
    CHECK(recs[0].length == 256);
    CHECK(recs[0].length == static_cast<int64_t>(recs[0].text.size()));   // a piece
    CHECK(recs[2].length == 89);
  }

  TEST_CASE("truncated lines and multiline work together") {
    SourceConfig src = multiline_source();
    src.max_line_bytes = 256;
    src.max_line_mode = LongLines::truncate;
    RecordAssembler a(src, StartPattern::compile(src.multiline.start_pattern));
    std::string file = "2024-01-01 a\n" + std::string(400, 'w') + "\n2024-01-01 b\n";
    std::vector<Line> out;
    a.consume(file, 0, false, out);
    REQUIRE(out.size() == 1);
    CHECK(out[0].length == 13 + 401);
    CHECK(out[0].text == "2024-01-01 a\n" + std::string(256, 'w'));
  }

  TEST_CASE("finish emits the incomplete record and reset forgets it") {
    SourceConfig src = multiline_source();
    RecordAssembler a(src, StartPattern::compile(src.multiline.start_pattern));
    std::vector<Line> out;
    a.consume("2024-01-01 a\nmore\n", 0, false, out);
    CHECK(out.empty());
    a.finish(out);
    REQUIRE(out.size() == 1);
    CHECK(out[0].text == "2024-01-01 a\nmore");
    out.clear();
    a.consume("2024-01-01 b\n", 18, false, out);
    a.reset();
    CHECK_FALSE(a.has_pending());
    CHECK(a.checkpoint(31) == 31);
  }
}
