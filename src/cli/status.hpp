// `tailbox status` and `tailbox check --outbox`: read-only looks at an outbox,
// safe while `tailbox run` is active (WAL readers never block the writer).
#pragma once

#include "config/config.hpp"

namespace tailbox::cli {

// Prints backlog, dead rows by error, and each file's read offset against its
// size. Returns the exit code.
int show_status(const config::Config& config, bool json);

// Runs PRAGMA integrity_check on the outbox and says what to do. Exit code.
int check_outbox(const config::Config& config);

}  // namespace tailbox::cli
