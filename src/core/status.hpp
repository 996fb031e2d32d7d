// Status: the outcome of an operation that can fail in an expected way
// (disk full, I/O error, a busy database), and Result<T>: a value or the
// Status that says why there is none (tl::expected). Exceptions are kept for
// start-up errors and bugs. Plain values; thread-safe to copy.
//
// Both are [[nodiscard]]: an ignored failure is a compile error; where it is
// really meant to be ignored, say why next to a (void) cast.
#pragma once

#include <string>
#include <tl/expected.hpp>
#include <utility>

namespace tailbox {

class [[nodiscard]] Status {
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

template <typename T>
using Result = tl::expected<T, Status>;

// The failure side of a Result: `return failed(status);`.
inline tl::unexpected<Status> failed(Status status) { return tl::unexpected<Status>(std::move(status)); }

}  // namespace tailbox
