// Splits bytes read from a log file into lines, keeping exact file offsets.
//
// Pure functions, no state: the caller keeps the offset of the first unconsumed
// byte and reads again from there, so a partial last line is simply read again
// once its newline has arrived. Thread-safe.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "core/line.hpp"

namespace tailbox::tail {

using tailbox::Line;

// Appends the complete lines of `buf` (whose first byte is at file offset `base`)
// to `out` and returns the number of bytes they take. A line longer than
// `max_line` bytes is cut into pieces of `max_line` bytes. When `flush_partial`
// is true, trailing bytes without a newline are returned as a last line too.
// REQUIRES: max_line > 0.
size_t split_lines(std::string_view buf, int64_t base, size_t max_line, bool flush_partial,
                   std::vector<Line>& out);

}  // namespace tailbox::tail
