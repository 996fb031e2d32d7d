// `tailbox audit`: did every line of each followed file arrive exactly once?
// Read-only, safe while `tailbox run` is active: reads the outbox (read-only
// connection), the files, and asks the destination which keys it holds.
#pragma once

#include <cstdint>
#include <string>

#include "config/config.hpp"

namespace tailbox::cli {

struct AuditOptions {
  std::string source;      // only this [[source]]'s files; empty: all
  int64_t since_ms = 0;    // only files modified since (unix ms); 0: all
  bool json = false;
};

// Prints a report per file. Exit code: 0 when nothing is missing or
// duplicated at the destination (rows still pending or dead in the outbox are
// not missing), 1 otherwise or on a read error, 2 when the destination cannot
// be audited.
int run_audit(const config::Config& config, const AuditOptions& options);

}  // namespace tailbox::cli
