// Multiline: joins consecutive lines into records, e.g. a stack trace with the
// log line that announced it. A line matching the source's start pattern
// starts a record; every other line continues the current one. Lines before
// the first start line of a file form a record of their own.
//
// A record's offset is its first line's, its length spans all its lines
// (terminators included), and its text is the lines' texts joined with "\n"
// (a piece of a cut overlong line is joined to the rest of its line without
// one). A record is complete when the next start line arrives, when it has
// multiline.max_lines lines, or before a line would take it past
// multiline.max_bytes; the caller flushes it after multiline.timeout of quiet.
//
// A line the pattern cannot decide on (boost::regex gives up on catastrophic
// backtracking, e.g. "^(a+)+$" against 30,000 "a"s and a "b") counts as "no
// match": it continues the current record. It is counted and warned about
// (at most once per 10 s per pattern), and never stops the file's reader.
//
// Thread-safety: a Multiline belongs to one reader. A StartPattern is
// immutable but for its error count, and may be shared by every reader of a
// source.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "tail/line_splitter.hpp"

namespace tailbox::tail {

// A compiled multiline.start_pattern (boost::regex, Perl syntax, searched
// anywhere in the line).
class StartPattern {
 public:
  // Throws std::runtime_error when `pattern` does not compile (config
  // validation has already rejected such patterns). `source` names the
  // pattern in warnings; `errors`, if not null, counts the lines the pattern
  // could not decide on (it must outlive the pattern).
  static std::shared_ptr<const StartPattern> compile(const std::string& pattern,
                                                     const std::string& source = {},
                                                     std::atomic<int64_t>* errors = nullptr);
  ~StartPattern();
  // Whether `line` starts a record. Never throws: a line the regex engine
  // gives up on is "no match" (counted, warned about).
  bool matches(std::string_view line) const;

 private:
  struct Impl;
  explicit StartPattern(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class Multiline {
 public:
  // REQUIRES: start != nullptr.
  Multiline(std::shared_ptr<const StartPattern> start, const config::MultilineConfig& config);

  // Adds the next line of the file; appends the records it completes to `out`.
  // Their texts stay valid until release().
  void add(const Line& line, std::vector<Line>& out);
  // Emits the record being built, if any (timeout, end of a rotated file).
  void flush(std::vector<Line>& out);

  bool pending() const { return pending_.has_value(); }
  // File offset of the record being built. REQUIRES: pending().
  int64_t pending_offset() const { return pending_->offset; }

  // Frees the texts of records emitted so far.
  void release() { emitted_.clear(); }
  // Forgets the record being built too.
  void reset();

 private:
  struct Pending {
    int64_t offset = 0;
    int64_t length = 0;
    int64_t lines = 0;
    bool last_terminated = true;
    std::string text;
  };
  void emit(std::vector<Line>& out);

  std::shared_ptr<const StartPattern> start_;
  config::MultilineConfig config_;
  std::optional<Pending> pending_;
  std::deque<std::string> emitted_;   // a deque: texts never move while out refers to them
};

}  // namespace tailbox::tail
