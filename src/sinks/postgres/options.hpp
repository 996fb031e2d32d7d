// The postgres sink's configuration ([sink] type = "postgres"), read and
// checked once at start-up, without I/O (libpq only parses the connection
// string). Pure; thread-safe.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "config/settings.hpp"

namespace tailbox::sinks::postgres {

struct Options {
  std::string conninfo;                       // required; a libpq connection string or URI
  std::string password_file, password_env;    // read at open(); at most one
  std::string table = "tailbox_logs";         // a plain name, optionally "schema.table"
  bool create_table = false;                  // CREATE TABLE IF NOT EXISTS, default columns
  std::chrono::milliseconds timeout{30'000};  // each connect and each batch
  int connections = 1;                        // 1..16: batches in flight at once
};

// Reads every key of the [sink] table the postgres sink knows. Throws
// config::ConfigError naming the key. The caller runs finish().
Options parse_options(config::Settings& settings);

// libpq's messages span lines ("...failed: Connection refused\n\tIs the
// server running..."); the outbox's last_error and the log want one line.
std::string one_line(std::string_view text);

// The sink's name: where it writes, without user or password.
std::string target_name(const std::string& conninfo, const std::string& table);

// True when `name` is a plain SQL identifier or schema.identifier (letters,
// digits, _; not starting with a digit; at most 63 bytes each).
bool valid_table_name(std::string_view name);

}  // namespace tailbox::sinks::postgres
