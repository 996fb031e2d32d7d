#include "tail/line_splitter.hpp"

#include <cstring>

namespace tailbox::tail {

size_t split_lines(std::string_view buf, int64_t base, size_t max_line, bool flush_partial,
                   std::vector<Line>& out) {
  size_t pos = 0;
  const size_t n = buf.size();
  while (pos < n) {
    size_t limit = n - pos < max_line + 2 ? n - pos : max_line + 2;
    const void* nl = std::memchr(buf.data() + pos, '\n', limit);
    if (nl) {
      size_t end = static_cast<const char*>(nl) - buf.data();
      size_t text_end = end;
      if (text_end > pos && buf[text_end - 1] == '\r') --text_end;
      if (text_end - pos > max_line) {
        // Over max_line without its terminator: cut a piece, the rest follows.
        out.push_back({base + static_cast<int64_t>(pos), static_cast<int64_t>(max_line),
                       buf.substr(pos, max_line)});
        pos += max_line;
        continue;
      }
      out.push_back({base + static_cast<int64_t>(pos), static_cast<int64_t>(end + 1 - pos),
                     buf.substr(pos, text_end - pos)});
      pos = end + 1;
      continue;
    }
    if (n - pos == max_line + 1 && buf[n - 1] == '\r' && !flush_partial) {
      // A line of exactly max_line bytes whose "\n" after "\r" is not read yet:
      // wait for it rather than cut the "\r" off into a record of its own.
      break;
    }
    if (n - pos > max_line) {
      // No newline within max_line bytes: cut an overlong line into a piece.
      out.push_back({base + static_cast<int64_t>(pos), static_cast<int64_t>(max_line),
                     buf.substr(pos, max_line)});
      pos += max_line;
      continue;
    }
    if (flush_partial) {
      out.push_back({base + static_cast<int64_t>(pos), static_cast<int64_t>(n - pos),
                     buf.substr(pos)});
      pos = n;
    }
    break;
  }
  return pos;
}

}  // namespace tailbox::tail
