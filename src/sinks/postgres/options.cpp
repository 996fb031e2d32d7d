#include "sinks/postgres/options.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <cctype>

namespace tailbox::sinks::postgres {

namespace {

// A connection string that carries a password must not be echoed, not even
// in libpq's parse error (which can quote the offending token).
bool may_hold_password(std::string_view conninfo) {
  std::string lower(conninfo);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower.find("password") != std::string::npos) return true;
  size_t at = lower.find('@');
  size_t scheme = lower.find("://");
  return scheme != std::string::npos && at != std::string::npos &&
         lower.find(':', scheme + 3) < at;
}

}  // namespace

// libpq's messages span lines ("...failed: Connection refused\n\tIs the server
// running..."); the outbox's last_error and the log want one line.
std::string one_line(std::string_view text) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

// The sink's name: where it writes, without user or password.
std::string target_name(const std::string& conninfo, const std::string& table) {
  std::string host, port, dbname;
  char* err = nullptr;
  if (PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err)) {
    for (PQconninfoOption* o = opts; o->keyword; ++o) {
      if (!o->val) continue;
      std::string_view k = o->keyword;
      if (k == "host" || (k == "hostaddr" && host.empty())) host = o->val;
      else if (k == "port") port = o->val;
      else if (k == "dbname") dbname = o->val;
    }
    PQconninfoFree(opts);
  }
  if (err) PQfreemem(err);
  return "postgres:" + (host.empty() ? std::string("(default host)") : host) +
         (port.empty() ? "" : ":" + port) + "/" +
         (dbname.empty() ? std::string("(default db)") : dbname) + "/" + table;
}

bool valid_table_name(std::string_view name) {
  auto identifier = [](std::string_view part) {
    if (part.empty() || part.size() > 63) return false;
    auto c0 = static_cast<unsigned char>(part[0]);
    if (!(std::isalpha(c0) || c0 == '_')) return false;
    return std::all_of(part.begin(), part.end(), [](char c) {
      auto u = static_cast<unsigned char>(c);
      return u < 0x80 && (std::isalnum(u) || u == '_');
    });
  };
  size_t dot = name.find('.');
  if (dot == std::string_view::npos) return identifier(name);
  return identifier(name.substr(0, dot)) && identifier(name.substr(dot + 1));
}

Options parse_options(config::Settings& s) {
  Options o;
  o.conninfo = s.required_string("conninfo");
  char* err = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(o.conninfo.c_str(), &err);
  if (!parsed) {
    std::string why = err ? one_line(err) : "out of memory";
    if (err) PQfreemem(err);
    if (may_hold_password(o.conninfo)) why = "details withheld: it may contain a password";
    s.fail("conninfo", "not a valid libpq connection string (" + why + ")");
  }
  PQconninfoFree(parsed);
  auto password = s.secret("password");
  o.password_file = password.file;
  o.password_env = password.env;
  o.table = s.string("table", "tailbox_logs");
  if (!valid_table_name(o.table))
    s.fail("table", "must be a plain SQL name or schema.name (letters, digits, _; not starting "
                    "with a digit; at most 63 each), got \"" + o.table + "\"");
  o.create_table = s.boolean("create_table", false);
  o.timeout = s.duration("timeout", o.timeout);
  if (o.timeout.count() <= 0) s.fail("timeout", "must be more than 0");
  o.connections = static_cast<int>(s.integer("connections", 1, 1, 16));
  return o;
}

}  // namespace tailbox::sinks::postgres
