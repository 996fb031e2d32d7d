// Line: one record read from a log file, as the reader hands it to the outbox.
// A plain value with a view into memory its producer keeps alive. Thread-safe
// as any value.
#pragma once

#include <cstdint>
#include <string_view>

namespace tailbox {

struct Line {
  int64_t offset = 0;      // file offset of the line's first byte
  int64_t length = 0;      // bytes the line takes in the file, terminator included
  std::string_view text;   // the line without "\n" or "\r\n"
  // A line with text.size() == length has no terminator: a piece of an overlong
  // line, or a last line flushed after partial_line_timeout.
  bool terminated() const { return static_cast<int64_t>(text.size()) != length; }
};

}  // namespace tailbox
