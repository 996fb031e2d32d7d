#include "tail/record_assembler.hpp"

#include <algorithm>

namespace tailbox::tail {

RecordAssembler::RecordAssembler(const config::SourceConfig& source,
                                 std::shared_ptr<const StartPattern> start)
    : max_line_(source.max_line_bytes),
      truncate_(source.max_line_mode == config::LongLines::truncate) {
  if (start) multiline_.emplace(std::move(start), source.multiline);
}

size_t RecordAssembler::consume(std::string_view buf, int64_t base, bool flush_partial,
                                std::vector<Line>& out) {
  lines_.clear();
  size_t used = split_lines(buf, base, static_cast<size_t>(max_line_), flush_partial, lines_);
  for (size_t i = 0; i < lines_.size(); ++i) {
    const Line& line = lines_[i];
    if (!truncate_) {
      line_done(line, out);
      continue;
    }
    // Truncate: the splitter cut an overlong line into pieces without
    // terminators; the first is the record's text, the others only add length.
    // The line ends at a terminated piece, or at the end of a flush.
    bool ends = line.terminated() || (flush_partial && i + 1 == lines_.size());
    if (truncating_) {
      truncating_->length += line.length;
      if (ends) {
        heads_.push_back(std::move(truncating_->head));
        Line whole{truncating_->offset, truncating_->length, heads_.back()};
        truncating_.reset();
        line_done(whole, out);
      }
    } else if (!ends) {
      truncating_.emplace();
      truncating_->offset = line.offset;
      truncating_->length = line.length;
      truncating_->head.assign(line.text);
    } else {
      line_done(line, out);
    }
  }
  return used;
}

void RecordAssembler::line_done(const Line& line, std::vector<Line>& out) {
  if (multiline_) multiline_->add(line, out);
  else out.push_back(line);
}

void RecordAssembler::flush_pending(std::vector<Line>& out) {
  if (multiline_) multiline_->flush(out);
}

void RecordAssembler::finish(std::vector<Line>& out) {
  if (truncating_) {
    heads_.push_back(std::move(truncating_->head));
    Line whole{truncating_->offset, truncating_->length, heads_.back()};
    truncating_.reset();
    line_done(whole, out);
  }
  flush_pending(out);
}

int64_t RecordAssembler::checkpoint(int64_t read_pos) const {
  int64_t at = read_pos;
  if (truncating_) at = std::min(at, truncating_->offset);
  if (multiline_ && multiline_->pending()) at = std::min(at, multiline_->pending_offset());
  return at;
}

void RecordAssembler::release() {
  heads_.clear();
  if (multiline_) multiline_->release();
}

void RecordAssembler::reset() {
  truncating_.reset();
  heads_.clear();
  if (multiline_) multiline_->reset();
}

}  // namespace tailbox::tail
