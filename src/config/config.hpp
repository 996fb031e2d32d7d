// The configuration: plain structs with their defaults written beside each field,
// loaded from TOML and validated once, at start-up (load() throws ConfigError
// naming the key and line of the first mistake). Runtime state never lives here.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "config/settings.hpp"

namespace tailbox::config {

using std::chrono::milliseconds;

enum class ReadFrom { head, tail };
enum class ParserKind { raw, json, regex };
enum class Ordering { none, per_file };
enum class Synchronous { off, normal, full };
enum class LongLines { split, truncate };

// [[source]] multiline: joins a record's lines (a stack trace, say) into one record.
struct MultilineConfig {
  std::string start_pattern;               // "": off. A line matching it (boost::regex, Perl
                                           // syntax, searched) starts a record; other lines
                                           // continue the current one, joined with "\n"
  int64_t max_lines = 500;                 // a record is complete at this many lines...
  int64_t max_bytes = 1 << 20;             // ...or before it would exceed this many bytes
  milliseconds timeout{2000};              // flush the last record after this quiet time
                                           // ("0": it waits for the next start line)
  bool enabled() const { return !start_pattern.empty(); }
};

struct SourceConfig {
  std::string name;                        // required, unique
  std::vector<std::string> paths;          // required: globs; "**" matches any depth
  std::vector<std::string> exclude;        // globs matched against the full path
  ReadFrom read_from = ReadFrom::head;     // where to start in a file seen for the first time
  ParserKind parser = ParserKind::raw;
  std::string pattern;                     // parser = "regex": named groups become fields
  int64_t max_line_bytes = 1 << 20;        // longer lines are split into records of this size
  LongLines max_line_mode = LongLines::split;   // truncate: keep the first max_line_bytes,
                                                // skip the rest of the line
  milliseconds partial_line_timeout{0};    // 0: a last line without newline waits for it
  milliseconds ignore_older{0};            // 0: off; else files without a checkpoint not
                                           // modified for this long are skipped when found
  bool read_gzip = false;                  // false: "*.gz" files are never read; true: read
                                           // once, decompressed, then released
  MultilineConfig multiline;
};

struct TailConfig {
  milliseconds poll_interval{1000};        // how often globs are expanded again when not every
                                           // glob directory is watched by inotify
  milliseconds read_interval{250};         // how often a file no event can wake is checked for
                                           // growth (polling, rotated-away files, symlinks)
  int64_t fingerprint_bytes = 1024;        // bytes hashed into a file's identity
  milliseconds rotate_wait{5000};          // a rotated-away file is released after this quiet time
  int64_t read_chunk_bytes = 256 * 1024;   // one read; also one outbox transaction per file
  bool inotify = true;                     // false: discovery and growth by polling only
  milliseconds recheck_interval{10'000};   // with inotify: quiet files and the globs are
                                           // checked this often anyway (events can be missed);
                                           // never more often than poll_interval
  milliseconds close_inactive{300'000};    // a file quiet this long is closed (its state kept)
                                           // and reopened, identity checked, when it grows;
                                           // 0: files stay open while a glob names them
};

struct OutboxConfig {
  std::string path = "tailbox-outbox.db";
  int64_t max_rows = 2'000'000;            // reading pauses at this backlog...
  int64_t max_bytes = 1LL << 30;           // ...or this many payload bytes
  Synchronous synchronous = Synchronous::normal;   // "full" by default with the kafka sink
  bool synchronous_set = false;            // written in the file (else the default above)
  // Reading pauses while the outbox's file system has less free space than this
  // (statvfs f_bavail), so that delivery can always delete (drain) rows.
  int64_t min_free_bytes = 64LL << 20;
  // "<outbox>.reserve", preallocated: deleted when an ack finds the disk full
  // (so the delete can commit), made again when space returns. 0: none.
  int64_t reserve_bytes = 8LL << 20;
};

struct DeliveryConfig {
  int workers = 4;
  int64_t batch_rows = 2000;
  int64_t batch_bytes = 1 << 20;
  milliseconds linger{50};                 // a batch that is not full waits this long for more
  milliseconds backoff_min{200};
  milliseconds backoff_max{30'000};
  double jitter = 0.5;                     // delay is scaled by a random factor in [1-jitter, 1]
  int64_t max_attempts = 0;                // 0: retryable failures never dead-letter a row
  Ordering ordering = Ordering::none;
  milliseconds shutdown_timeout{10'000};   // in-flight batches may finish for this long on stop
};

struct MetricsConfig {
  std::string listen = "127.0.0.1:9464";   // "" disables the HTTP endpoint
  milliseconds stall_after{300'000};        // /readyz fails when rows wait and nothing was
                                            // delivered for this long
};

struct SinkConfig {
  std::string type;                        // "sqlite" | "file" | "postgres" | "http" | "kafka" | "nats"
  std::string host_id;                     // Config::host_id, for sinks that key their state by it
  Settings settings;                       // the rest of [sink], read by the sink itself
};

struct Config {
  std::string host_id;                     // default: the machine's host name
  std::vector<SourceConfig> sources;
  TailConfig tail;
  OutboxConfig outbox;
  DeliveryConfig delivery;
  SinkConfig sink;
  MetricsConfig metrics;
  std::string log_level = "info";
  std::string log_format = "text";         // text | json
  std::string log_file;                    // "": stderr; a file is reopened on SIGHUP
};

// Reads and validates a configuration file. Throws ConfigError.
Config load_file(const std::string& path);
// Same, from text; `origin` names it in messages.
Config load_string(const std::string& text, const std::string& origin = "config");

}  // namespace tailbox::config
