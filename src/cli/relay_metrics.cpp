#include "cli/relay_metrics.hpp"

#include <boost/json.hpp>
#include <algorithm>

#include "core/clock.hpp"

namespace tailbox::cli {

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
                 int64_t t = outbox.oldest_pending_ms();
                 return t ? double(unix_ms() - t) / 1000.0 : 0.0;
               });
  reg.counter_fn("tailbox_outbox_errors_total", "Outbox (SQLite) transactions that failed.", {},
                 [&outbox] { return double(outbox.health().errors); });
  reg.counter_fn("tailbox_outbox_checkpoints_total",
                 "WAL checkpoints, by who ran them: the checkpoint thread, or the writer when "
                 "the thread was behind.", {{"by", "thread"}},
                 [&outbox] { return double(outbox.health().checkpoints); });
  reg.counter_fn("tailbox_outbox_checkpoints_total",
                 "WAL checkpoints, by who ran them: the checkpoint thread, or the writer when "
                 "the thread was behind.", {{"by", "writer"}},
                 [&outbox] { return double(outbox.health().writer_checkpoints); });
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
  reg.histogram("tailbox_sink_batch_duration_seconds", "Time a sink took per batch.", sl,
                ds.batch_seconds);
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

metrics::Response readiness(const config::Config& cfg, outbox::AsyncOutbox& outbox,
                            const dispatch::DispatchStats& ds, const SinkHealth& sink,
                            const tail::TailStats& ts, const std::atomic<bool>& stopping) {
  int64_t now = unix_ms();
  auto h = outbox.health();
  auto backlog = outbox.backlog();
  std::string reason;
  if (stopping.load()) reason = "stopping";
  if (reason.empty() && h.last_error_ms > h.last_ok_ms) reason = "outbox not writable: " + h.last_error;
  if (reason.empty() && !sink.open.load()) reason = "sink not open yet: " + sink.error();
  if (int64_t n = ts.readers_failed.load(); reason.empty() && n > 0)
    reason = std::to_string(n) + " file reader(s) stopped on an error (see the log); restart tailbox";
  int64_t last_ok = ds.last_success_ms.load();
  int64_t oldest = backlog.rows > 0 ? outbox.oldest_pending_ms() : 0;
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

}  // namespace tailbox::cli
