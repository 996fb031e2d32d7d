// StatusPage: the live status page at "/" on the metrics listener, and its
// data at "/status.json": the fields of `tailbox status --json` (from
// outbox_status(), the same function) plus the relay's live state: the sink
// (name, guarantee, connected / retrying / connecting, last error and when),
// totals since start, and read and delivery rates over the last 15 minutes.
//
// The page is one static HTML document compiled into the binary
// (status_page.html, embedded by embed_page.py with a Content-Security-Policy
// that allows its own inline script and style and nothing else). It polls
// /status.json every 5 s and renders with textContent only: paths and error
// messages come from log file names and destinations, never trusted as HTML.
//
// Thread-safety: handle() may be called from any thread (HTTP connection
// strands). A thread of its own samples the counters every 5 s until the
// StatusPage is destroyed; destroy it before whatever `live` reads from.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "metrics/http_server.hpp"

namespace tailbox::cli {

// What the relay reports of itself, read on each request and each sample.
struct LiveState {
  int64_t lines_read = 0;            // since start
  int64_t rows_delivered = 0;        // since start
  bool reader_paused = false;        // outbox full
  int64_t files_followed = 0;
  int64_t readers_failed = 0;
  struct Sink {
    bool open = false;               // opened once; false: still trying
    std::string open_error;          // last failure to open ("" if none)
    int64_t open_error_ms = 0;
    int64_t retries = 0;             // failed attempts (batches)
    int64_t dead_rows = 0;           // dead-lettered since start
    int64_t in_flight_rows = 0;
    int64_t last_success_ms = 0;
    int64_t last_failure_ms = 0;
    std::string last_error;          // of the last failed delivery
  } sink;
};

class StatusPage {
 public:
  // `live` must be callable from any thread. Starts the sampling thread.
  StatusPage(const config::Config& config, std::string sink_name, std::string sink_guarantee,
             std::function<LiveState()> live);
  ~StatusPage();
  StatusPage(const StatusPage&) = delete;
  StatusPage& operator=(const StatusPage&) = delete;

  // The answer for "/" or "/status.json"; nullopt for any other path.
  std::optional<metrics::Response> handle(const std::string& path);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tailbox::cli
