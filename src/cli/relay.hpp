// The relay: wires the outbox, the tailer, the dispatcher and the sink onto
// one Asio thread pool and runs them until SIGINT/SIGTERM.
#pragma once

#include "config/config.hpp"

namespace tailbox::cli {

// Runs until a stop signal; returns the process exit code. Start-up failures
// are logged and give 1.
int run_relay(config::Config config);

}  // namespace tailbox::cli
