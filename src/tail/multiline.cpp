#include "tail/multiline.hpp"

#include <spdlog/spdlog.h>

#include <boost/regex.hpp>
#include <chrono>
#include <stdexcept>

#include "core/log_limit.hpp"

namespace tailbox::tail {

struct StartPattern::Impl {
  boost::regex regex;
  std::string source;
  std::atomic<int64_t>* errors = nullptr;
  mutable LogLimiter log_limit{std::chrono::seconds(10)};
};

std::shared_ptr<const StartPattern> StartPattern::compile(const std::string& pattern,
                                                          const std::string& source,
                                                          std::atomic<int64_t>* errors) {
  auto impl = std::make_unique<Impl>();
  impl->source = source;
  impl->errors = errors;
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
  try {
    return boost::regex_search(line.begin(), line.end(), impl_->regex);
  } catch (const std::exception& e) {
    // "The complexity of matching the regular expression exceeded predefined
    // bounds" (or out of stack): the engine cannot decide. Stopping here would
    // stop the file for good (the same line comes back after every restart).
    if (impl_->errors) impl_->errors->fetch_add(1, std::memory_order_relaxed);
    if (auto held = impl_->log_limit.allow("undecided"))
      spdlog::warn("source {}: multiline.start_pattern could not decide on a line of {} bytes "
                   "({}); the line is treated as not starting a record{}",
                   impl_->source.empty() ? "?" : impl_->source, line.size(), e.what(),
                   *held ? " (" + std::to_string(*held) + " more such lines since the last warning)"
                         : std::string());
    return false;
  }
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
