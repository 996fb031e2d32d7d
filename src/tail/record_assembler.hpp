// RecordAssembler: turns the bytes of one file into records, applying the
// source's rules in order: lines (split_lines), overlong lines (max_line_mode
// split or truncate), then multiline joining.
//
// The file is fed forward, in pieces of any size; everything is kept in file
// offsets so that the reader can commit a checkpoint that never lands inside
// a record: checkpoint() is the first byte of anything still incomplete (a
// multiline record being built, an overlong line being truncated). After a
// restart the reader resumes there, so an incomplete record is read again,
// never half-delivered; and the assembler's state at a checkpoint is always
// empty, so records come out the same whether or not tailbox restarted.
//
// Record texts are views: into the caller's buffer, or into the assembler's own
// storage until release(). A record whose length is larger than its text plus
// a 2-byte terminator (without multiline) is a truncated line.
//
// Thread-safety: one per reader; not thread-safe.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "tail/line_splitter.hpp"
#include "tail/multiline.hpp"

namespace tailbox::tail {

class RecordAssembler {
 public:
  // `start` is the source's compiled multiline.start_pattern, or nullptr
  // without multiline.
  RecordAssembler(const config::SourceConfig& source, std::shared_ptr<const StartPattern> start);

  // `buf` holds the file's bytes from offset `base`, which is where the bytes
  // consumed so far end. Appends the records completed to `out` and returns the
  // bytes consumed; the caller passes the rest again, with more bytes after it.
  // `flush_partial`: the bytes at the end of `buf` are a complete line even
  // without a newline (partial_line_timeout, the end of a rotated file or of a
  // .gz stream). `out` refers into `buf`: keep it until the records are stored.
  size_t consume(std::string_view buf, int64_t base, bool flush_partial, std::vector<Line>& out);

  // Emits the multiline record being built (multiline.timeout, end of file).
  void flush_pending(std::vector<Line>& out);
  // Emits everything incomplete: an overlong line being truncated (with the
  // length read so far) and the multiline record. For a file that ends.
  void finish(std::vector<Line>& out);

  // A multiline record is being built.
  bool has_pending() const { return multiline_ && multiline_->pending(); }
  // Where the file's checkpoint may be when everything before `read_pos` was
  // consumed: the first byte of an incomplete record, else `read_pos`.
  int64_t checkpoint(int64_t read_pos) const;

  // Frees the texts of records emitted so far (after they were stored).
  void release();
  // Forgets everything: reading starts over at a checkpoint or a new file.
  void reset();

 private:
  void line_done(const Line& line, std::vector<Line>& out);

  int64_t max_line_;
  bool truncate_;
  std::optional<Multiline> multiline_;
  struct Truncating {
    int64_t offset = 0;
    int64_t length = 0;
    std::string head;   // the first max_line bytes: the record's text
  };
  std::optional<Truncating> truncating_;
  // Texts of truncated records emitted (their Lines point into them). A list:
  // stable addresses, and nothing allocated while empty (a deque allocates
  // ~600 bytes at construction, per followed file).
  std::list<std::string> heads_;
  std::vector<Line> lines_;         // scratch
};

}  // namespace tailbox::tail
