#include "cli/relay.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <functional>
#include <thread>
#include <mutex>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>

#include "cli/logging.hpp"
#include "cli/status_page.hpp"
#include "core/blocking.hpp"
#include "core/clock.hpp"
#include "core/failure.hpp"
#include "dispatch/dispatcher.hpp"
#include "dispatch/record_builder.hpp"
#include "metrics/http_server.hpp"
#include "metrics/metrics.hpp"
#include "outbox/async_outbox.hpp"
#include "sinks/registry.hpp"
#include "tail/tailer.hpp"

namespace tailbox::cli {

namespace asio = boost::asio;

namespace {

// Registers every metric; values are read from the components' own counters.
void register_metrics(metrics::Registry& reg, const config::Config& cfg, tail::Tailer& tailer,
                      outbox::AsyncOutbox& outbox, dispatch::Dispatcher& dispatcher,
                      const sinks::Sink& sink) {
  const tail::TailStats& ts = tailer.stats();
  for (const auto& [name, s] : ts.sources) {
    const tail::SourceStats* st = s.get();
    reg.counter_fn("tailbox_source_lines_read_total", "Lines read into the outbox.",
                   {{"source", name}}, [st] { return double(st->lines_read.load()); });
    reg.counter_fn("tailbox_source_bytes_read_total", "Bytes of the source files read into the outbox.",
                   {{"source", name}}, [st] { return double(st->bytes_read.load()); });
    reg.counter_fn("tailbox_multiline_pattern_errors_total",
                   "Lines multiline.start_pattern could not decide on (taken as no match).",
                   {{"source", name}}, [st] { return double(st->multiline_pattern_errors.load()); });
  }
  reg.counter_fn("tailbox_rotations_total", "Files seen under a new name (rotation).", {},
                 [&ts] { return double(ts.rotations.load()); });
  reg.counter_fn("tailbox_truncations_total", "Files that shrank below their read offset.", {},
                 [&ts] { return double(ts.truncations.load()); });
  reg.gauge_fn("tailbox_files_followed", "Files being followed.", {},
               [&ts] { return double(ts.files_active.load()); });
  reg.gauge_fn("tailbox_files_open",
               "Followed files holding a descriptor (the others are closed by close_inactive).", {},
               [&ts] { return double(ts.files_open.load()); });
  reg.gauge_fn("tailbox_readers_failed", "File readers that stopped on an error (/readyz fails).", {},
               [&ts] { return double(ts.readers_failed.load()); });
  reg.gauge_fn("tailbox_reader_paused", "1 while reading is paused because the outbox is full or its disk low.", {},
               [&ts] { return ts.paused.load() ? 1.0 : 0.0; });
  reg.gauge_fn("tailbox_outbox_free_bytes",
               "Free space on the outbox's file system (reading pauses below [outbox] min_free_bytes).",
               {}, [&outbox] { return double(outbox.backlog().free_bytes); });
  reg.gauge_fn("tailbox_outbox_rows", "Rows in the outbox (pending and dead).", {},
               [&outbox] { return double(outbox.backlog().rows); });
  reg.gauge_fn("tailbox_outbox_bytes", "Payload bytes in the outbox.", {},
               [&outbox] { return double(outbox.backlog().bytes); });
  reg.gauge_fn("tailbox_outbox_oldest_pending_age_seconds",
               "Age of the oldest line waiting for delivery (0 when none).", {}, [&outbox] {
                 int64_t t = outbox.unsafe_sync().oldest_pending_ms();
                 return t ? double(unix_ms() - t) / 1000.0 : 0.0;
               });
  reg.counter_fn("tailbox_outbox_errors_total", "Outbox (SQLite) transactions that failed.", {},
                 [&outbox] { return double(outbox.unsafe_sync().health().errors); });
  reg.gauge_fn("tailbox_outbox_max_rows", "Configured [outbox] max_rows.", {},
               [&cfg] { return double(cfg.outbox.max_rows); });
  const dispatch::DispatchStats& ds = dispatcher.stats();
  metrics::Labels sl{{"sink", sink.name()}};
  reg.counter_fn("tailbox_sink_delivered_rows_total", "Rows the sink confirmed.", sl,
                 [&ds] { return double(ds.delivered.load()); });
  reg.counter_fn("tailbox_sink_retries_total", "Failed delivery attempts (batches) that will be retried.", sl,
                 [&ds] { return double(ds.retried.load()); });
  reg.counter_fn("tailbox_sink_dead_rows_total", "Rows dead-lettered.", sl,
                 [&ds] { return double(ds.dead.load()); });
  reg.gauge_fn("tailbox_sink_in_flight_rows", "Rows leased to workers right now.", sl,
               [&ds] { return double(ds.in_flight.load()); });
  reg.gauge_fn("tailbox_sink_last_failure_timestamp_seconds",
               "Unix time of the last failed delivery (0: none since start).", sl,
               [&ds] { return double(ds.last_failure_ms.load()) / 1000.0; });
  reg.add_collector([&ds, name = sink.name()] {
    // The last failure's message as a label: one series per sink, replaced.
    std::string e = ds.last_error();
    if (e.empty()) return std::string();
    if (e.size() > 200) e = e.substr(0, 200) + "...";
    return "# HELP tailbox_sink_last_error The destination's message of the last failed delivery.\n"
           "# TYPE tailbox_sink_last_error gauge\n"
           "tailbox_sink_last_error{sink=\"" + metrics::escape_label(name) + "\",error=\"" +
           metrics::escape_label(e) + "\"} 1\n";
  });
  reg.add_collector([&ds, name = sink.name()] {
    // The dispatcher owns its histogram; render it here with the sink label.
    const auto& h = ds.batch_seconds;
    auto cum = h.cumulative();
    std::string lab = "sink=\"" + metrics::escape_label(name) + "\"";
    std::string out = "# HELP tailbox_sink_batch_duration_seconds Time a sink took per batch.\n"
                      "# TYPE tailbox_sink_batch_duration_seconds histogram\n";
    for (size_t i = 0; i < h.bounds().size(); ++i) {
      char le[32];
      std::snprintf(le, sizeof le, "%g", h.bounds()[i]);
      out += "tailbox_sink_batch_duration_seconds_bucket{" + lab + ",le=\"" + le + "\"} " +
             std::to_string(cum[i]) + "\n";
    }
    out += "tailbox_sink_batch_duration_seconds_bucket{" + lab + ",le=\"+Inf\"} " +
           std::to_string(cum.back()) + "\n";
    char sum[64];
    std::snprintf(sum, sizeof sum, "%.9g", h.sum());
    out += "tailbox_sink_batch_duration_seconds_sum{" + lab + "} " + sum + "\n";
    out += "tailbox_sink_batch_duration_seconds_count{" + lab + "} " + std::to_string(cum.back()) + "\n";
    return out;
  });
  reg.add_collector([&tailer] {
    std::vector<std::pair<metrics::Labels, double>> lag, size;
    for (const auto& f : tailer.files()) {
      metrics::Labels l{{"source", f.source}, {"path", f.path}};
      lag.emplace_back(l, double(std::max<int64_t>(0, f.size - f.offset)));
    }
    return metrics::format_family("tailbox_file_lag_bytes",
                                  "gauge", "Bytes of a followed file not yet read (size - read offset).", lag);
  });
}

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

// Opens the sink, retrying with backoff while it fails, records its starting
// state, then runs the dispatcher.
asio::awaitable<void> open_sink_then_deliver(sinks::Sink& sink, outbox::AsyncOutbox& outbox,
                                             dispatch::Dispatcher& dispatcher,
                                             const config::Config& cfg,
                                             const std::atomic<bool>& stopping, SinkHealth& health) {
  auto home = co_await asio::this_coro::executor;
  asio::steady_timer timer(home);
  // open() may block for a while (a broker's metadata, reading progress back):
  // it runs on a thread of its own, never on the threads that read files.
  asio::thread_pool opener(1);
  // open() may ask which keys still have a row in the outbox: on a read-only
  // connection of its own, opened per call on the opener's thread (the
  // writer's connection belongs to the outbox strand).
  sinks::KeysInOutbox lookup = [path = cfg.outbox.path](const std::vector<std::string>& keys) {
    auto reader = outbox::Outbox::open({path, config::Synchronous::normal, true});
    auto found = reader->rows_exist(keys);
    if (!found)
      throw std::runtime_error("cannot look keys up in the outbox: " + found.error().message());
    return std::move(*found);
  };
  auto delay = cfg.delivery.backoff_min;
  for (int attempt = 1; !stopping.load(); ++attempt) {
    std::string error;
    try {
      auto stored = co_await outbox.run([&](outbox::Outbox& o) { return o.sink_state(sink.name()); });
      if (!stored)
        throw std::runtime_error("cannot read the sink's state from the outbox: " +
                                 stored.error().message());
      const std::optional<std::string>& state = *stored;
      auto open = [&sink, &state, &lookup] { return sink.open({state, lookup}); };
      std::optional<std::string> initial = co_await run_blocking(opener, open);
      if (initial) {
        Status st = co_await outbox.run(
            [&](outbox::Outbox& o) { return o.set_sink_state(sink.name(), *initial); });
        if (!st) throw std::runtime_error("cannot record the sink's starting state: " + st.message());
      }
      health.open = true;
      if (attempt > 1) spdlog::info("{} is open", sink.name());
      break;
    } catch (const std::exception& e) {
      error = e.what();
    }
    {
      std::lock_guard lock(health.mu);
      health.last_error = error;
      health.last_error_ms = unix_ms();
    }
    if (attempt == 1 || attempt % 10 == 0)
      spdlog::warn("cannot open {} (attempt {}): {}; lines are kept in the outbox, retrying in {} ms",
                   sink.name(), attempt, error, delay.count());
    timer.expires_after(delay);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    delay = std::min(delay * 2, cfg.delivery.backoff_max);
  }
  if (health.open.load()) co_await dispatcher.run();
}

// Every second, on the outbox strand: disk space housekeeping, and whether the
// outbox file is still the one this relay opened. A deleted or replaced outbox
// stops the relay: going on would write into an unlinked database that
// vanishes at exit, and the lines read meanwhile would be lost.
asio::awaitable<void> watch_outbox(outbox::AsyncOutbox& outbox, const std::atomic<bool>& stopping) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (!stopping.load()) {
    timer.expires_after(std::chrono::seconds(1));
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping.load()) break;
    std::string why;
    bool there = co_await outbox.run([&why](outbox::Outbox& o) {
      o.maintain();
      return o.still_at_path(why);
    });
    if (!there) {
      report_failure("the outbox " + outbox.unsafe_sync().path() + " was deleted or replaced while "
                     "tailbox ran (" + why + "); stopping, since rows written now would be lost. "
                     "Restart tailbox to begin a new outbox (see README: a damaged outbox)");
      break;
    }
    if (failure_reported()) {   // a report whose handler could not run (out of memory)
      report_failure("an unexpected error was reported");
      break;
    }
  }
}

// /readyz: the relay is not stopping, the outbox takes writes, and rows waiting are moving.
metrics::Response readiness(const config::Config& cfg, outbox::AsyncOutbox& outbox,
                            const dispatch::DispatchStats& ds, const SinkHealth& sink,
                            const tail::TailStats& ts, const std::atomic<bool>& stopping) {
  int64_t now = unix_ms();
  auto h = outbox.unsafe_sync().health();
  auto backlog = outbox.backlog();
  std::string reason;
  if (stopping.load()) reason = "stopping";
  if (reason.empty() && h.last_error_ms > h.last_ok_ms) reason = "outbox not writable: " + h.last_error;
  if (reason.empty() && !sink.open.load()) reason = "sink not open yet: " + sink.error();
  if (int64_t n = ts.readers_failed.load(); reason.empty() && n > 0)
    reason = std::to_string(n) + " file reader(s) stopped on an error (see the log); restart tailbox";
  int64_t last_ok = ds.last_success_ms.load();
  int64_t oldest = backlog.rows > 0 ? outbox.unsafe_sync().oldest_pending_ms() : 0;
  if (reason.empty() && oldest > 0 && now - oldest > cfg.metrics.stall_after.count() &&
      now - last_ok > cfg.metrics.stall_after.count()) {
    reason = "stalled: rows have waited " + std::to_string((now - oldest) / 1000) +
             " s and nothing was delivered for " +
             (last_ok ? std::to_string((now - last_ok) / 1000) + " s" : std::string("the whole run"));
  }
  boost::json::object body{{"ready", reason.empty()},
                           {"reason", reason.empty() ? "ok" : reason},
                           {"outbox_rows", backlog.rows},
                           {"last_delivery_ms", last_ok}};
  return {reason.empty() ? 200 : 503, "application/json", boost::json::serialize(body) + "\n"};
}

// What the status page shows of the running relay.
LiveState live_state(const tail::TailStats& ts, const dispatch::DispatchStats& ds,
                     const SinkHealth& sink) {
  LiveState s;
  s.lines_read = ts.lines_read.load();
  s.rows_delivered = ds.delivered.load();
  s.reader_paused = ts.paused.load();
  s.files_followed = ts.files_active.load();
  s.readers_failed = ts.readers_failed.load();
  s.sink.open = sink.open.load();
  s.sink.open_error_ms = sink.last_error_ms.load();
  if (s.sink.open_error_ms) s.sink.open_error = sink.error();
  s.sink.retries = ds.retried.load();
  s.sink.dead_rows = ds.dead.load();
  s.sink.in_flight_rows = ds.in_flight.load();
  s.sink.last_success_ms = ds.last_success_ms.load();
  s.sink.last_failure_ms = ds.last_failure_ms.load();
  s.sink.last_error = ds.last_error();
  return s;
}

}  // namespace

// A reload under way (read by the shutdown timer's thread, which may outlive
// run_relay's frame).
std::atomic<bool> g_reexec{false};

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void exec_again(const std::vector<std::string>& argv) {
  spdlog::default_logger()->flush();
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // Every descriptor tailbox opens is O_CLOEXEC (the outbox lock too): the
  // new image takes the lock again and opens the outbox as after a restart.
  ::setenv("TAILBOX_RELOADED", "1", 1);
  ::execv("/proc/self/exe", args.data());
}

config::Config load_and_validate(const std::string& path) {
  config::Config cfg = config::load_file(path);
  dispatch::RecordBuilder builder(cfg);
  asio::io_context probe;
  config::SinkConfig sink_copy = cfg.sink;
  (void)sinks::make_sink(sink_copy, probe.get_executor());
  return cfg;
}

namespace {

// What a reload may not change while the process keeps its outbox lock.
std::string reload_refusal(const config::Config& now, const config::Config& next) {
  if (next.outbox.path != now.outbox.path)
    return "[outbox] path cannot change on reload (the relay holds its outbox): restart tailbox";
  if (next.host_id != now.host_id)
    return "host_id cannot change on reload: it is part of every key, and rows waiting in the "
           "outbox would reach the destination again under new keys; change it with a restart, "
           "knowingly";
  return "";
}

}  // namespace

int run_relay(config::Config cfg, const RunOptions& options) {
  asio::io_context ioc;
  std::unique_ptr<sinks::Sink> sink;
  std::unique_ptr<outbox::AsyncOutbox> outbox;
  try {
    sink = sinks::make_sink(cfg.sink, ioc.get_executor());
    auto opened = outbox::Outbox::open({cfg.outbox.path, cfg.outbox.synchronous, false,
                                        cfg.outbox.min_free_bytes, cfg.outbox.reserve_bytes});
    outbox = std::make_unique<outbox::AsyncOutbox>(ioc.get_executor(), std::move(opened));
  } catch (const config::ConfigError& e) {
    spdlog::error("configuration: {}", e.what());
    return 2;
  } catch (const std::exception& e) {
    spdlog::error("cannot start: {}", e.what());
    return 1;
  }

  auto backlog = outbox->backlog();
  spdlog::info("tailbox {} {}: host_id {}, outbox {} ({} rows waiting), sink {} ({})",
               TAILBOX_VERSION, std::getenv("TAILBOX_RELOADED") ? "started again (reload)" : "starting", cfg.host_id, cfg.outbox.path, backlog.rows, sink->name(),
               sink->guarantee());
  if (cfg.sink.type == "kafka" && cfg.outbox.synchronous != config::Synchronous::full)
    spdlog::warn("[outbox] synchronous is not \"full\": after a power loss, lines Kafka already "
                 "has may be sent again (a Kafka transaction cannot be rolled back with the outbox)");

  std::unique_ptr<tail::Tailer> tailer_ptr;
  try {
    tailer_ptr = std::make_unique<tail::Tailer>(ioc.get_executor(), cfg, *outbox);
  } catch (const std::exception& e) {
    spdlog::error("cannot read the outbox's tracked files ({}): it may be damaged; run "
                  "`tailbox check --outbox -c CONFIG`", e.what());
    return 1;
  }
  tail::Tailer& tailer = *tailer_ptr;
  dispatch::Dispatcher dispatcher(ioc.get_executor(), cfg, *outbox, *sink);
  outbox->on_append([&dispatcher] { dispatcher.wake(); });

  SinkHealth sink_health;
  std::atomic<bool> stopping{false};
  metrics::Registry registry;
  register_metrics(registry, cfg, tailer, *outbox, dispatcher, *sink);
  std::unique_ptr<StatusPage> status_page;
  std::unique_ptr<metrics::HttpServer> http;
  if (!cfg.metrics.listen.empty()) {
    status_page = std::make_unique<StatusPage>(cfg, sink->name(), sink->guarantee(), [&] {
      return live_state(tailer.stats(), dispatcher.stats(), sink_health);
    });
    http = std::make_unique<metrics::HttpServer>(
        ioc.get_executor(), cfg.metrics.listen,
        [&](const std::string& path) -> metrics::Response {
          if (path == "/metrics")
            return {200, "text/plain; version=0.0.4; charset=utf-8", registry.render()};
          if (path == "/healthz") return {200, "application/json", "{\"alive\":true}\n"};
          if (path == "/readyz")
            return readiness(cfg, *outbox, dispatcher.stats(), sink_health, tailer.stats(), stopping);
          if (auto page = status_page->handle(path)) return *page;
          return {404, "text/plain", "try /, /status.json, /metrics, /healthz or /readyz\n"};
        });
    try {
      http->start();
      spdlog::info("metrics on http://{}/metrics", cfg.metrics.listen);
    } catch (const std::exception& e) {
      // Shipping logs matters more than exposing metrics: go on without them.
      spdlog::error("metrics endpoint disabled: {}", e.what());
      http.reset();
    }
  }

  std::atomic<int> running{2};
  std::atomic<bool> failed{false};
  std::atomic<bool> reexec{false};
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  asio::signal_set hangup(ioc, SIGHUP);
  // Stops reading and delivery; past shutdown_timeout, `on_timeout` (exit as
  // a crash would, or execute the binary again): unconfirmed rows stay in the
  // outbox and are delivered (and deduplicated) after.
  auto stop_all = [&](std::function<void()> on_timeout) {
    tailer.stop();
    dispatcher.stop();
    try {
      std::thread([timeout = cfg.delivery.shutdown_timeout, on_timeout] {
        std::this_thread::sleep_for(timeout);
        spdlog::warn("shutdown timeout reached; unconfirmed batches stay in the outbox");
        spdlog::default_logger()->flush();
        on_timeout();
      }).detach();
    } catch (const std::exception& e) {
      // No thread to be had (memory, limits): the stop goes on without a deadline.
      spdlog::warn("cannot start the shutdown timer ({}); stopping without it", e.what());
    }
  };
  // A reload: the new configuration is validated before anything stops; a
  // refused one leaves the running relay as it is.
  // Taken before the configuration was loaded: a change in between is seen.
  const std::string loaded_bytes = options.config_bytes;
  auto try_reload = [&](const char* why) {
    if (options.config_path.empty()) return;
    std::string bytes = file_bytes(options.config_path);
    if (bytes == loaded_bytes) {
      spdlog::info("{}: configuration {} unchanged; nothing to reload", why, options.config_path);
      return;
    }
    config::Config next;
    try {
      next = load_and_validate(options.config_path);
    } catch (const std::exception& e) {
      spdlog::error("{}: the new configuration is refused, the running one stays: {}", why,
                    e.what());
      return;
    }
    if (std::string refusal = reload_refusal(cfg, next); !refusal.empty()) {
      spdlog::error("{}: the new configuration is refused, the running one stays: {}", why,
                    refusal);
      return;
    }
    if (stopping.exchange(true)) return;
    spdlog::info("{}: configuration {} changed and is valid: reloading (reading stops at a "
                 "committed chunk, in-flight batches finish within {} ms, then tailbox starts "
                 "again in this process from the outbox's checkpoints)",
                 why, options.config_path, cfg.delivery.shutdown_timeout.count());
    reexec = true;
    g_reexec = true;
    stop_all([argv = options.argv] {
      if (!g_reexec.load()) _exit(0);   // a stop signal came after the reload began
      exec_again(argv);
      spdlog::error("cannot execute tailbox again to reload: {}; exit 1", std::strerror(errno));
      spdlog::default_logger()->flush();
      _exit(1);
    });
  };
  std::function<void()> wait_hangup = [&] {
    hangup.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      reopen_logs();
      try_reload("SIGHUP");
      wait_hangup();
    });
  };
  wait_hangup();
  asio::steady_timer watch_timer(ioc);
  std::function<void()> watch_config = [&] {
    watch_timer.expires_after(std::chrono::seconds(1));
    watch_timer.async_wait([&](const boost::system::error_code& ec) {
      if (ec || stopping.load()) return;
      static std::string refused;   // the bytes last refused: told once
      std::string bytes = file_bytes(options.config_path);
      if (bytes != loaded_bytes && bytes != refused) {
        try_reload("--watch-config");
        if (!stopping.load()) refused = bytes;
      }
      watch_config();
    });
  };
  if (options.watch_config) watch_config();
  // A failure anywhere (reported through core/failure.hpp) stops the whole
  // relay: reading stops at once, in-flight batches get shutdown_timeout to
  // finish, /readyz fails, and the exit code is 1. Unconfirmed rows stay in
  // the outbox.
  set_failure_handler([&](const std::string& what) {
    failed = true;
    if (stopping.exchange(true)) {
      spdlog::error("while stopping: {}", what);
      return;
    }
    spdlog::error("stopping the relay: {}", what);
    tailer.stop();
    dispatcher.stop();
    try {
      std::thread([timeout = cfg.delivery.shutdown_timeout] {
        std::this_thread::sleep_for(timeout + std::chrono::seconds(1));
        spdlog::error("shutdown timeout reached after a failure; unconfirmed batches stay in "
                      "the outbox; exit 1");
        spdlog::default_logger()->flush();
        _exit(1);
      }).detach();
    } catch (const std::exception&) {
      // No thread to be had (memory, limits): the orderly stop alone must do.
    }
  });
  auto finished = [&](std::exception_ptr e) {
    if (e) {
      std::string what = "unknown exception";
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        what = ex.what();
      } catch (...) {
      }
      report_failure("unexpected error: " + what);
    } else if (!stopping.load()) {
      // The reading or the delivery half ended by itself: the relay cannot go on.
      report_failure(dispatcher.failed() ? "delivery stopped" : "reading stopped");
    }
    if (--running == 0) {
      signals.cancel();
      hangup.cancel();
      watch_timer.cancel();
      if (http) http->stop();
      ioc.stop();   // idle keep-alive HTTP connections must not hold the exit up
    }
  };
  asio::co_spawn(ioc, tailer.run(), finished);
  // The sink is opened in the background: a destination that is down (or
  // locked) at start must not keep the files from being read into the outbox.
  asio::co_spawn(ioc, open_sink_then_deliver(*sink, *outbox, dispatcher, cfg, stopping, sink_health),
                 finished);

  signals.async_wait([&](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    spdlog::info("signal {}: stopping; in-flight batches may finish within {} ms", signo,
                 cfg.delivery.shutdown_timeout.count());
    reexec = false;                        // a stop signal wins over a reload under way
    g_reexec = false;
    if (stopping.exchange(true)) return;   // already stopping after a failure or a reload
    // Past the timeout, exit as a crash would: every row not confirmed is still
    // in the outbox and will be delivered (and deduplicated) after a restart.
    stop_all([] { _exit(0); });
  });

  asio::co_spawn(ioc, watch_outbox(*outbox, stopping), asio::detached);

  // A handler that throws ends io_context::run() on its thread; anything
  // escaping a thread's function would abort the process (exit 134). Both
  // become an orderly stop instead.
  auto run_io = [&ioc] {
    for (;;) {
      try {
        ioc.run();
        return;
      } catch (const std::exception& e) {
        report_failure(std::string("unexpected error on an I/O thread: ") + e.what());
      } catch (...) {
        report_failure("unexpected error on an I/O thread");
      }
    }
  };
  unsigned n = std::max(2u, std::thread::hardware_concurrency());
  std::vector<std::thread> threads;
  for (unsigned i = 1; i < n; ++i) {
    try {
      threads.emplace_back(run_io);
    } catch (const std::exception& e) {
      spdlog::warn("cannot start I/O thread {}: {}; running with {}", i + 1, e.what(), i);
      break;
    }
  }
  run_io();
  for (auto& t : threads) t.join();
  set_failure_handler(nullptr);

  const auto& ds = dispatcher.stats();
  // Counted in the outbox itself on the writer's connection (every thread has
  // stopped), not taken from the running tally.
  int64_t left = outbox->backlog().rows;
  if (auto summary = outbox->unsafe_sync().summary())
    left = summary->pending + summary->dead;
  else
    spdlog::warn("cannot count the rows left in the outbox: {}", summary.error().message());
  spdlog::info("stopped: {} lines read, {} rows delivered, {} dead-lettered, {} rows left in the outbox",
               tailer.stats().lines_read.load(), ds.delivered.load(), ds.dead.load(), left);
  if (failed.load() || dispatcher.failed() || failure_reported()) {
    spdlog::error("tailbox stopped because of an unexpected error (see above); exit 1");
    return 1;
  }
  if (reexec.load()) {
    spdlog::info("reloading: starting again with the new configuration");
    return kReexec;
  }
  return 0;
}

}  // namespace tailbox::cli
