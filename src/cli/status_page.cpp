#include "cli/status_page.hpp"

#include <boost/json.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stop_token>
#include <thread>

#include "cli/status.hpp"
#include "core/clock.hpp"
#include "metrics/rate_history.hpp"
#include "outbox/outbox.hpp"
#include "status_page_html.hpp"   // generated from status_page.html

namespace tailbox::cli {

namespace {

constexpr std::chrono::seconds kSampleInterval{5};
constexpr size_t kSamples = 15 * 60 / 5;   // 15 minutes of rates
// /status.json reads the outbox (a count over it) at most once per second,
// whatever the number of open pages or scripts polling it.
constexpr int64_t kOutboxCacheMs = 1000;

std::string sink_state(const LiveState::Sink& s) {
  if (!s.open) return "connecting";
  if (s.last_failure_ms > s.last_success_ms) return "retrying";
  return "connected";
}

}  // namespace

struct StatusPage::Impl {
  std::string outbox_path;
  config::Synchronous synchronous;
  std::string host_id;
  std::string sink_name, sink_guarantee;
  std::function<LiveState()> live;
  int64_t started_ms = unix_ms();
  metrics::RateHistory history{kSamples};

  std::mutex mu;                                // guards the reader and the cache
  std::unique_ptr<outbox::Outbox> reader;       // read-only, opened on first use
  int64_t cached_ms = 0;
  boost::json::object cached;
  std::string cached_error;

  std::jthread sampler;   // last member: stopped and joined first

  // The outbox's part, from cache when fresh. On failure the connection is
  // dropped (opened again next time) and the error kept for the page.
  void outbox_part(int64_t now, boost::json::object& out, std::string& error) {
    std::lock_guard lock(mu);
    if (now - cached_ms >= kOutboxCacheMs || now < cached_ms) {
      try {
        if (!reader) reader = outbox::Outbox::open({outbox_path, synchronous, true});
        cached = outbox_status(outbox_path, *reader, now);
        cached_error.clear();
      } catch (const std::exception& e) {
        reader.reset();
        cached = {};
        cached_error = e.what();
      }
      cached_ms = now;
    }
    out = cached;
    error = cached_error;
  }

  std::string status_json() {
    int64_t now = unix_ms();
    boost::json::object o;
    std::string outbox_error;
    outbox_part(now, o, outbox_error);
    if (!outbox_error.empty()) {
      o["outbox"] = outbox_path;
      o["outbox_error"] = outbox_error;
    }
    LiveState s = live();
    const LiveState::Sink& k = s.sink;
    // The more recent of a failure to open and a failed delivery.
    bool open_error_last = !k.open_error.empty() && k.open_error_ms >= k.last_failure_ms;
    o["now_ms"] = now;
    o["relay"] = {{"host_id", host_id}, {"version", TAILBOX_VERSION}, {"started_ms", started_ms}};
    o["totals"] = {{"lines_read", s.lines_read}, {"rows_delivered", s.rows_delivered}};
    o["reading"] = {{"paused", s.reader_paused},
                    {"files_followed", s.files_followed},
                    {"readers_failed", s.readers_failed}};
    o["sink"] = {{"name", sink_name},
                 {"guarantee", sink_guarantee},
                 {"state", sink_state(k)},
                 {"in_flight_rows", k.in_flight_rows},
                 {"retries", k.retries},
                 {"dead_rows", k.dead_rows},
                 {"last_success_ms", k.last_success_ms},
                 {"last_error", open_error_last ? k.open_error : k.last_error},
                 {"last_error_ms", open_error_last ? k.open_error_ms
                                   : k.last_error.empty() ? 0 : k.last_failure_ms}};
    boost::json::array rates;
    for (const auto& r : history.rates())
      rates.push_back({{"time_ms", r.time_ms},
                       {"read_per_second", r.read_per_second},
                       {"delivered_per_second", r.delivered_per_second}});
    o["rates"] = {{"interval_seconds", kSampleInterval.count()},
                  {"window_seconds", int64_t(kSamples * kSampleInterval.count())},
                  {"history", std::move(rates)}};
    return boost::json::serialize(o) + "\n";
  }

  void sample_until(std::stop_token stop) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    while (!stop.stop_requested()) {
      LiveState s = live();
      history.add(unix_ms(), s.lines_read, s.rows_delivered);
      cv.wait_for(lock, stop, kSampleInterval, [] { return false; });
    }
  }
};

StatusPage::StatusPage(const config::Config& config, std::string sink_name,
                       std::string sink_guarantee, std::function<LiveState()> live)
    : impl_(std::make_unique<Impl>()) {
  impl_->outbox_path = config.outbox.path;
  impl_->synchronous = config.outbox.synchronous;
  impl_->host_id = config.host_id;
  impl_->sink_name = std::move(sink_name);
  impl_->sink_guarantee = std::move(sink_guarantee);
  impl_->live = std::move(live);
  impl_->sampler = std::jthread([impl = impl_.get()](std::stop_token stop) { impl->sample_until(stop); });
}

StatusPage::~StatusPage() = default;

std::optional<metrics::Response> StatusPage::handle(const std::string& path) {
  if (path == "/" || path == "/index.html")
    return metrics::Response{200, "text/html; charset=utf-8", std::string(kStatusPageHtml),
                             {{"Content-Security-Policy", std::string(kStatusPageCsp)},
                              {"Cache-Control", "no-store"},
                              {"Referrer-Policy", "no-referrer"}}};
  if (path == "/status.json")
    return metrics::Response{200, "application/json", impl_->status_json(),
                             {{"Cache-Control", "no-store"}}};
  return std::nullopt;
}

}  // namespace tailbox::cli
