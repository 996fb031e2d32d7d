// `tailbox status` and `tailbox check --outbox`: read-only looks at an outbox,
// safe while `tailbox run` is active (WAL readers never block the writer).
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <string>

#include "config/config.hpp"

namespace tailbox::outbox {
class Outbox;
}

namespace tailbox::cli {

// The outbox's state as `tailbox status --json` prints it and /status.json
// serves it (one function, so the two cannot drift): outbox, pending_rows,
// pending_bytes, oldest_pending_age_seconds, dead_rows, dead_by_error
// [{error, rows}], files [{source, path, uid, read_offset, size, lag_bytes}]
// (size -1 when the path no longer names the file that was read).
// `reader` is a read-only Outbox. Throws std::exception when it cannot be read.
boost::json::object outbox_status(const std::string& outbox_path, outbox::Outbox& reader,
                                  int64_t now_ms);

// Prints backlog, dead rows by error, and each file's read offset against its
// size. Returns the exit code.
int show_status(const config::Config& config, bool json);

// Runs PRAGMA integrity_check on the outbox and says what to do. Exit code.
int check_outbox(const config::Config& config);

}  // namespace tailbox::cli
