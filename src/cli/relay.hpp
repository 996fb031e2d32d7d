// The relay: wires the outbox, the tailer, the dispatcher and the sink onto
// one Asio thread pool and runs them until SIGINT/SIGTERM.
//
// Reload (SIGHUP, or a change of the file with `watch_config`): the new
// configuration is loaded and validated first; refused, the running one goes
// on and the log says why. Accepted, the relay stops as on SIGTERM (reading
// stops at a committed chunk, in-flight batches finish or stay in the outbox)
// and run_relay() returns kReexec: the caller executes the binary again in
// the same process (same pid), which starts from the outbox's checkpoints
// exactly as after a restart. Positions survive every change of sources,
// globs, sink or delivery settings (see docs/operations.md, Reload).
#pragma once

#include <string>
#include <vector>

#include "config/config.hpp"

namespace tailbox::cli {

// run_relay()'s answer when the process must execute itself again (reload).
inline constexpr int kReexec = -1;

struct RunOptions {
  std::string config_path;   // read again on reload
  std::string config_bytes;  // the file as it was read before `config` was loaded from it
  bool watch_config = false; // reload when the file changes (checked every second)
  std::vector<std::string> argv;   // the command line, executed again on reload
};

// Executes this binary again with `argv` (reload). Returns only on failure,
// with errno set.
void exec_again(const std::vector<std::string>& argv);

// Runs until a stop signal or a reload; returns the process exit code or
// kReexec. Start-up failures are logged and give 1.
int run_relay(config::Config config, const RunOptions& options);

// The configuration file's bytes ("" if unreadable), to tell a changed file
// from a touched one.
std::string file_bytes(const std::string& path);

// Loads and validates the configuration at `path` as `tailbox check` does.
// Throws config::ConfigError.
config::Config load_and_validate(const std::string& path);

}  // namespace tailbox::cli
