// A process-wide "the relay cannot go on" report, like a signal: a component
// whose thread or coroutine ended with an unexpected error (a reader, a
// delivery worker, an ack, an I/O thread) or that found the outbox gone
// reports it here, and the relay's handler stops everything in order and makes
// the process exit non-zero. Without a handler (unit tests) a report is only
// remembered (failure_reported()).
//
// Thread-safety: set_failure_handler() before the relay starts and after it has
// stopped; report_failure() from any thread, any number of times; it never
// throws (it may be called while memory is exhausted).
#pragma once

#include <atomic>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <utility>

namespace tailbox {

namespace detail {
inline std::mutex& failure_mu() {
  static std::mutex mu;
  return mu;
}
inline std::function<void(const std::string&)>& failure_handler() {
  static std::function<void(const std::string&)> handler;
  return handler;
}
inline std::atomic<bool>& failure_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}
}  // namespace detail

inline void set_failure_handler(std::function<void(const std::string&)> handler) {
  std::lock_guard lock(detail::failure_mu());
  detail::failure_handler() = std::move(handler);
  detail::failure_flag() = false;
}

inline void report_failure(const char* what) noexcept {
  detail::failure_flag() = true;
  try {
    // REQUIRES of the handler: it does not call report_failure() itself.
    std::lock_guard lock(detail::failure_mu());
    if (detail::failure_handler()) detail::failure_handler()(what);
  } catch (...) {
    // Out of memory even for the message: the flag is set, and the relay
    // looks at it every second.
  }
}

inline void report_failure(const std::string& what) noexcept { report_failure(what.c_str()); }

inline bool failure_reported() { return detail::failure_flag().load(); }

// The message of the exception `e` holds ("unknown exception" for one that is
// not a std::exception), to log or report it. REQUIRES: e is not null.
inline std::string what_of(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "unknown exception";
  }
}

}  // namespace tailbox
