// Log output: human-readable text (default) or JSON lines, to stderr or a file
// that SIGHUP reopens (for logrotate). Secrets are never passed to the logger.
#pragma once

#include <string>

namespace tailbox::cli {

// Throws std::runtime_error when the log file cannot be opened.
void setup_logging(const std::string& level, const std::string& format, const std::string& file);
// Reopens the log file (after logrotate moved it). No-op when logging to stderr.
void reopen_logs();

}  // namespace tailbox::cli
