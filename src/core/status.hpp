// Status: the outcome of an operation that can fail in an expected way
// (disk full, I/O error, a busy database). Exceptions are kept for start-up
// errors and bugs. A plain value; thread-safe to copy.
#pragma once

#include <string>
#include <utility>

namespace tailbox {

class Status {
 public:
  enum class Code { ok, full, io_error, busy, corrupt, other };

  Status() = default;
  static Status ok() { return {}; }
  static Status error(Code code, std::string message) { return Status(code, std::move(message)); }

  bool is_ok() const { return code_ == Code::ok; }
  explicit operator bool() const { return is_ok(); }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  Code code_ = Code::ok;
  std::string message_;
};

}  // namespace tailbox
