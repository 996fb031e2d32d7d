#include "tail/multiline.hpp"

#include <boost/regex.hpp>
#include <stdexcept>

namespace tailbox::tail {

struct StartPattern::Impl {
  boost::regex regex;
};

std::shared_ptr<const StartPattern> StartPattern::compile(const std::string& pattern) {
  auto impl = std::make_unique<Impl>();
  try {
    impl->regex.assign(pattern, boost::regex::perl);
  } catch (const boost::regex_error& e) {
    throw std::runtime_error("multiline.start_pattern: " + std::string(e.what()));
  }
  return std::shared_ptr<const StartPattern>(new StartPattern(std::move(impl)));
}

StartPattern::StartPattern(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StartPattern::~StartPattern() = default;

bool StartPattern::matches(std::string_view line) const {
  return boost::regex_search(line.begin(), line.end(), impl_->regex);
}

Multiline::Multiline(std::shared_ptr<const StartPattern> start,
                     const config::MultilineConfig& config)
    : start_(std::move(start)), config_(config) {}

void Multiline::add(const Line& line, std::vector<Line>& out) {
  if (pending_) {
    bool starts = start_->matches(line.text);
    size_t joined = pending_->text.size() + (pending_->last_terminated ? 1 : 0) + line.text.size();
    if (starts || static_cast<int64_t>(joined) > config_.max_bytes) emit(out);
  }
  if (!pending_) {
    pending_.emplace();
    pending_->offset = line.offset;
    pending_->text.assign(line.text);
  } else {
    if (pending_->last_terminated) pending_->text += '\n';
    pending_->text.append(line.text);
  }
  pending_->length += line.length;
  pending_->lines += 1;
  pending_->last_terminated = line.terminated();
  if (pending_->lines >= config_.max_lines) emit(out);
}

void Multiline::flush(std::vector<Line>& out) {
  if (pending_) emit(out);
}

void Multiline::reset() {
  pending_.reset();
  emitted_.clear();
}

void Multiline::emit(std::vector<Line>& out) {
  emitted_.push_back(std::move(pending_->text));
  out.push_back({pending_->offset, pending_->length, emitted_.back()});
  pending_.reset();
}

}  // namespace tailbox::tail
