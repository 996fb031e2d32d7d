// The postgres sink as a module (module.hpp): the sink and the audit's reader of its table.
#include <boost/asio/any_io_executor.hpp>
#include <libpq-fe.h>

#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/secret.hpp"
#include "sinks/module.hpp"
#include "sinks/postgres/postgres_sink.hpp"

namespace tailbox::sinks {
namespace {

// PostgreSQL: the table's `key` column is its unique key (at most one copy).
// One read-only transaction (READ ONLY, REPEATABLE READ) per count() call.
class PostgresKeys : public KeyReader {
 public:
  PostgresKeys(const std::string& conninfo, const std::string& password, const std::string& table)
      : table_(table) {
    const char* keywords[] = {"client_encoding", "application_name", "dbname", "password", nullptr};
    const char* values[] = {"UTF8", "tailbox-audit", conninfo.c_str(),
                            password.empty() ? nullptr : password.c_str(), nullptr};
    if (password.empty()) keywords[3] = nullptr;
    conn_ = PQconnectdbParams(keywords, values, 1);
    if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
      std::string why = conn_ ? PQerrorMessage(conn_) : "out of memory";
      while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
      throw std::runtime_error("cannot connect to PostgreSQL for the audit: " + why);
    }
  }
  ~PostgresKeys() override {
    if (conn_) PQfinish(conn_);
  }
  std::vector<int64_t> count(const std::vector<std::string>& keys) override {
    // Keys as one text[] literal: {"k1","k2",...} (keys hold no '"' or '\\').
    std::string array = "{";
    for (const auto& k : keys) {
      if (array.size() > 1) array += ',';
      array += '"';
      for (char c : k) {
        if (c == '"' || c == '\\') array += '\\';
        array += c;
      }
      array += '"';
    }
    array += '}';
    const std::string sql = "SELECT key, count(*) FROM " + table_ +
                            " WHERE key = ANY($1::text[]) GROUP BY key";
    const char* params[] = {array.c_str()};
    run("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY");
    PGresult* r = PQexecParams(conn_, sql.c_str(), 1, nullptr, params, nullptr, nullptr, 0);
    std::unordered_map<std::string, int64_t> found;
    const bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    std::string why = ok ? "" : PQresultErrorMessage(r);
    if (ok)
      for (int i = 0; i < PQntuples(r); ++i)
        found[PQgetvalue(r, i, 0)] = std::stoll(PQgetvalue(r, i, 1));
    PQclear(r);
    run("ROLLBACK");
    if (!ok) throw std::runtime_error("reading " + table_ + ": " + why);
    std::vector<int64_t> out;
    out.reserve(keys.size());
    for (const auto& k : keys) {
      auto it = found.find(k);
      out.push_back(it == found.end() ? 0 : it->second);
    }
    return out;
  }

 private:
  void run(const char* sql) {
    PGresult* r = PQexec(conn_, sql);
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    std::string why = ok ? "" : PQresultErrorMessage(r);
    PQclear(r);
    if (!ok) throw std::runtime_error(std::string(sql) + ": " + why);
  }
  PGconn* conn_ = nullptr;
  std::string table_;
};

std::unique_ptr<KeyReader> key_reader(const config::SinkConfig& sink, const std::string&,
                                      std::string&) {
  config::Settings s = sink.settings;   // a copy: reading marks keys used
  const std::string conninfo = s.required_string("conninfo");
  const std::string file = s.string("password_file", ""), env = s.string("password_env", "");
  const std::string password =
      file.empty() && env.empty() ? std::string() : read_secret("password", file, env);
  return std::make_unique<PostgresKeys>(conninfo, password, s.string("table", "tailbox_logs"));
}

std::unique_ptr<Sink> make(config::SinkConfig& config, boost::asio::any_io_executor executor) {
  return std::make_unique<PostgresSink>(config.settings, executor);
}

}  // namespace
}  // namespace tailbox::sinks

TAILBOX_SINK_MODULE("postgres", make, key_reader)
