// What the running relay shows of itself: its Prometheus metrics, /readyz,
// and the status page's live numbers. Read from the components' own counters;
// every function here is safe from any thread once the components exist.
#pragma once

#include <atomic>
#include <mutex>
#include <string>

#include "cli/status_page.hpp"
#include "config/config.hpp"
#include "dispatch/dispatcher.hpp"
#include "metrics/http_server.hpp"
#include "metrics/metrics.hpp"
#include "outbox/async_outbox.hpp"
#include "sinks/sink.hpp"
#include "tail/tailer.hpp"

namespace tailbox::cli {

// Whether the sink could be opened yet, and why not (its opener writes it).
struct SinkHealth {
  std::atomic<bool> open{false};
  mutable std::mutex mu;
  std::string last_error = "opening";
  std::atomic<int64_t> last_error_ms{0};   // 0: no failure to open yet
  std::string error() const {
    std::lock_guard lock(mu);
    return last_error;
  }
};

// Registers every metric; the components must outlive the registry.
void register_metrics(metrics::Registry& reg, const config::Config& cfg, tail::Tailer& tailer,
                      outbox::AsyncOutbox& outbox, dispatch::Dispatcher& dispatcher,
                      const sinks::Sink& sink);

// /readyz: the relay is not stopping, the outbox takes writes, and rows waiting are moving.
metrics::Response readiness(const config::Config& cfg, outbox::AsyncOutbox& outbox,
                            const dispatch::DispatchStats& ds, const SinkHealth& sink,
                            const tail::TailStats& ts, const std::atomic<bool>& stopping);

// What the status page shows of the running relay.
LiveState live_state(const tail::TailStats& ts, const dispatch::DispatchStats& ds,
                     const SinkHealth& sink);

}  // namespace tailbox::cli
