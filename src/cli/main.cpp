// tailbox: tails log files into an SQLite outbox and delivers every line once.
#include <malloc.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "cli/audit.hpp"
#include "cli/logging.hpp"
#include "cli/relay.hpp"
#include "cli/status.hpp"
#include "config/config.hpp"
#include "config/settings.hpp"
#include "core/clock.hpp"
#include "dispatch/record_builder.hpp"
#include "sinks/registry.hpp"

#include <boost/asio/io_context.hpp>

namespace {

constexpr const char* kHelp = R"(tailbox - ships log lines exactly once, through an SQLite outbox

Usage:
  tailbox run    -c FILE [--watch-config]
                                  tail the configured files and deliver their lines;
                                  SIGHUP (or a change of FILE with --watch-config)
                                  reloads the configuration
  tailbox check  -c FILE          validate the configuration and exit
  tailbox check  -c FILE --outbox also run an integrity check on the outbox
  tailbox status -c FILE [--json] backlog, dead rows, and each file's progress
  tailbox audit  -c FILE [--source NAME] [--since TIME] [--json]
                                  did every line read arrive exactly once? Reads each
                                  followed file, derives its keys and asks the
                                  destination (sqlite inbox, postgres, file sink);
                                  read-only
  tailbox --version | --help

Options:
  -c, --config FILE   the TOML configuration (see examples/tailbox.toml)
  --log-level LEVEL   trace | debug | info | warn | error (overrides log_level)
  --log-format FMT    text | json (overrides log_format; json: one object per line)

Examples:
  tailbox check -c /etc/tailbox/tailbox.toml
  tailbox run -c /etc/tailbox/tailbox.toml
  tailbox status -c /etc/tailbox/tailbox.toml --json
  tailbox audit -c /etc/tailbox/tailbox.toml --since 24h
  curl -s http://127.0.0.1:9464/metrics      # while `run` is active

Exit codes: 0 success, 1 runtime failure (audit: lines missing or duplicated),
2 bad configuration or usage (audit: a destination that cannot be audited).
)";

int usage(const std::string& message) {
  std::cerr << "tailbox: " << message << "\nRun `tailbox --help` for usage.\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // glibc gives each thread that allocates an arena of its own (up to 8 per
  // core); the relay's few threads hand batches to each other, so the extra
  // arenas only hold freed memory. One keeps peak RSS down at no measurable cost.
  mallopt(M_ARENA_MAX, 1);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return usage("no command given");
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kHelp;
    return 0;
  }
  if (args[0] == "--version" || args[0] == "version") {
    std::cout << "tailbox " << TAILBOX_VERSION << "\n";
    return 0;
  }
  const std::string command = args[0];
  if (command != "run" && command != "check" && command != "status" && command != "audit")
    return usage("unknown command \"" + command + "\"");

  std::string config_path, log_level, log_format;
  bool json = false, outbox = false, watch_config = false;
  tailbox::cli::AuditOptions audit;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-c" || a == "--config") {
      if (i + 1 >= args.size()) return usage(a + " needs a file");
      config_path = args[++i];
    } else if (a == "--log-level") {
      if (i + 1 >= args.size()) return usage(a + " needs a level");
      log_level = args[++i];
    } else if (a == "--log-format") {
      if (i + 1 >= args.size()) return usage(a + " needs text or json");
      log_format = args[++i];
      if (log_format != "text" && log_format != "json") return usage("--log-format takes text or json");
    } else if (a == "--json" && (command == "status" || command == "audit")) {
      json = true;
    } else if (a == "--source" && command == "audit") {
      if (i + 1 >= args.size()) return usage(a + " needs a source name");
      audit.source = args[++i];
    } else if (a == "--since" && command == "audit") {
      if (i + 1 >= args.size()) return usage(a + " needs a time");
      const std::string& t = args[++i];
      if (auto ago = tailbox::config::parse_duration(t)) {
        audit.since_ms = tailbox::unix_ms() - ago->count();
      } else if (!t.empty() && t.find_first_not_of("0123456789") == std::string::npos &&
                 t.size() <= 12) {
        audit.since_ms = std::stoll(t) * 1000;
      } else {
        return usage("--since takes a duration (\"24h\", \"30m\") or unix seconds, got \"" +
                     t + "\"");
      }
    } else if (a == "--outbox" && command == "check") {
      outbox = true;
    } else if (a == "--watch-config" && command == "run") {
      watch_config = true;
    } else if (a == "--help" || a == "-h") {
      std::cout << kHelp;
      return 0;
    } else {
      return usage("unknown option \"" + a + "\" for " + command);
    }
  }
  if (config_path.empty()) return usage(command + " needs -c FILE");

  tailbox::config::Config cfg;
  // Read before loading: a reload compares the file with what was loaded.
  const std::string config_bytes = command == "run" ? tailbox::cli::file_bytes(config_path) : "";
  try {
    cfg = tailbox::config::load_file(config_path);
    if (!log_level.empty()) {
      auto level = spdlog::level::from_str(log_level);
      if (level == spdlog::level::off && log_level != "off")
        return usage("unknown log level \"" + log_level + "\"");
      cfg.log_level = log_level;
    }
    if (command != "status") {
      // Validate everything that can be validated without touching anything.
      tailbox::dispatch::RecordBuilder builder(cfg);
      boost::asio::io_context probe;
      tailbox::config::SinkConfig sink_copy = cfg.sink;
      tailbox::sinks::make_sink(sink_copy, probe.get_executor());
    }
  } catch (const tailbox::config::ConfigError& e) {
    std::cerr << "tailbox: configuration error: " << e.what() << "\n";
    return 2;
  }
  try {
    tailbox::cli::setup_logging(cfg.log_level, log_format.empty() ? cfg.log_format : log_format,
                                command == "run" ? cfg.log_file : "");
  } catch (const std::exception& e) {
    std::cerr << "tailbox: cannot open log file " << cfg.log_file << ": " << e.what() << "\n";
    return 1;
  }

  if (command == "check") {
    std::cout << "configuration " << config_path << " is valid: " << cfg.sources.size()
              << " source(s), sink \"" << cfg.sink.type << "\", outbox " << cfg.outbox.path << "\n";
    return outbox ? tailbox::cli::check_outbox(cfg) : 0;
  }
  if (command == "status") return tailbox::cli::show_status(cfg, json);
  if (command == "audit") {
    audit.json = json;
    if (!audit.source.empty()) {
      bool known = false;
      for (const auto& s : cfg.sources) known = known || s.name == audit.source;
      if (!known) return usage("no [[source]] named \"" + audit.source + "\"");
    }
    return tailbox::cli::run_audit(cfg, audit);
  }

  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  try {
    tailbox::cli::RunOptions run_options;
  run_options.config_path = config_path;
  run_options.config_bytes = config_bytes;
  run_options.watch_config = watch_config;
  run_options.argv.assign(argv, argv + argc);
  int rc = tailbox::cli::run_relay(std::move(cfg), run_options);
  if (rc == tailbox::cli::kReexec) {
    tailbox::cli::exec_again(run_options.argv);
    spdlog::error("cannot execute tailbox again to reload: {}", std::strerror(errno));
    return 1;
  }
  return rc;
  } catch (const std::exception& e) {
    // Out of memory or threads while wiring the relay: an error, not an abort.
    spdlog::error("tailbox stopped: {}; exit 1", e.what());
    return 1;
  }
}
