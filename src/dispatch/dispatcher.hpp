// Dispatcher: N workers that lease batches of outbox rows, hand them to the
// sink, and delete them only after the sink confirmed them.
//
// Leases live in memory on the outbox strand (one process owns the outbox): a
// row is in at most one worker's batch at a time. A failed batch stays with its
// worker, which retries it after a backoff, so memory is bounded by
// workers x batch size whatever the backlog. A rejected batch is split in
// halves until the bad rows are found; those become dead, the others go on.
// With ordering = per_file, worker k owns the files with id % workers == k and
// delivers each file's rows in order.
//
// Thread-safety: construct, co_spawn run(); stop() and wake() from any thread.
#pragma once

#include <atomic>
#include <mutex>
#include <string>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <memory>

#include "config/config.hpp"
#include "metrics/metrics.hpp"

namespace tailbox::outbox {
class AsyncOutbox;
}
namespace tailbox::sinks {
class Sink;
}

namespace tailbox::dispatch {

struct DispatchStats {
  std::atomic<int64_t> delivered{0};       // rows
  std::atomic<int64_t> batches{0};         // delivered batches
  std::atomic<int64_t> retried{0};         // failed attempts (batches)
  std::atomic<int64_t> dead{0};            // rows dead-lettered
  std::atomic<int64_t> in_flight{0};       // rows leased right now
  std::atomic<int64_t> last_success_ms{0};
  std::atomic<int64_t> last_failure_ms{0};
  // The destination's message of the last failed delivery (retry or reject).
  std::string last_error() const {
    std::lock_guard lock(error_mu);
    return last_error_;
  }
  void set_last_error(std::string e) {
    std::lock_guard lock(error_mu);
    last_error_ = std::move(e);
  }
  // Seconds a sink took per deliver() call, whatever the outcome.
  metrics::Histogram batch_seconds{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};

 private:
  mutable std::mutex error_mu;
  std::string last_error_;
};

class Dispatcher {
 public:
  Dispatcher(boost::asio::any_io_executor executor, const config::Config& config,
             outbox::AsyncOutbox& outbox, sinks::Sink& sink);
  ~Dispatcher();

  // Runs the workers until stop(); then lets in-flight batches finish.
  boost::asio::awaitable<void> run();
  void stop();
  // New rows are in the outbox: wake idle workers.
  void wake();

  const DispatchStats& stats() const;
  // A worker ended with an unexpected error (the relay then stops, exit 1).
  bool failed() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace tailbox::dispatch
