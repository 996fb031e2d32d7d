#include "sinks/key_reader.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <libpq-fe.h>

#include <boost/json.hpp>
#include <fstream>
#include <stdexcept>
#include <unordered_map>

#include "core/secret.hpp"

namespace tailbox::sinks {
namespace {

// The sqlite inbox: its PRIMARY KEY is the key (at most one copy each).
class SqliteKeys : public KeyReader {
 public:
  SqliteKeys(const std::string& path, const std::string& table) {
    try {
      db_ = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READONLY, 5000);
      q_ = std::make_unique<SQLite::Statement>(*db_,
                                               "SELECT count(*) FROM " + table + " WHERE key = ?1");
    } catch (const SQLite::Exception& e) {
      throw std::runtime_error("cannot read the sqlite inbox " + path + ": " + e.what());
    }
  }
  std::vector<int64_t> count(const std::vector<std::string>& keys) override {
    std::vector<int64_t> out;
    out.reserve(keys.size());
    try {
      SQLite::Transaction snapshot(*db_);   // one read snapshot; rolled back
      for (const auto& k : keys) {
        q_->bind(1, k);
        out.push_back(q_->executeStep() ? q_->getColumn(0).getInt64() : 0);
        q_->reset();
      }
    } catch (const SQLite::Exception& e) {
      throw std::runtime_error(std::string("reading the sqlite inbox: ") + e.what());
    }
    return out;
  }

 private:
  std::unique_ptr<SQLite::Database> db_;
  std::unique_ptr<SQLite::Statement> q_;
};

// The file sink's NDJSON output: read once, every record's "_id" counted.
class NdjsonKeys : public KeyReader {
 public:
  explicit NdjsonKeys(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read the file sink's output " + path);
    std::string line;
    int64_t n = 0;
    while (std::getline(in, line)) {
      ++n;
      boost::system::error_code ec;
      boost::json::value v = boost::json::parse(line, ec);
      const boost::json::object* o = ec ? nullptr : v.if_object();
      const boost::json::value* id = o ? o->if_contains("_id") : nullptr;
      if (!id || !id->is_string()) {
        ++unreadable_;
        continue;
      }
      ++counts_[std::string(id->as_string())];
    }
    (void)n;
  }
  std::vector<int64_t> count(const std::vector<std::string>& keys) override {
    std::vector<int64_t> out;
    out.reserve(keys.size());
    for (const auto& k : keys) {
      auto it = counts_.find(k);
      out.push_back(it == counts_.end() ? 0 : it->second);
    }
    return out;
  }

 private:
  std::unordered_map<std::string, int64_t> counts_;
  int64_t unreadable_ = 0;
};

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

}  // namespace

std::unique_ptr<KeyReader> make_key_reader(const config::SinkConfig& sink, std::string& why_not) {
  config::Settings s = sink.settings;   // a copy: reading marks keys used
  if (sink.type == "sqlite")
    return std::make_unique<SqliteKeys>(s.string("path", "tailbox-inbox.db"),
                                        s.string("table", "inbox"));
  if (sink.type == "file") {
    if (s.choice("format", "ndjson", {"ndjson", "raw"}) != "ndjson") {
      why_not = "the file sink's raw format carries no keys";
      return nullptr;
    }
    return std::make_unique<NdjsonKeys>(s.required_string("path"));
  }
  if (sink.type == "postgres") {
    const std::string conninfo = s.required_string("conninfo");
    const std::string file = s.string("password_file", ""), env = s.string("password_env", "");
    const std::string password =
        file.empty() && env.empty() ? std::string() : read_secret("password", file, env);
    return std::make_unique<PostgresKeys>(conninfo, password, s.string("table", "tailbox_logs"));
  }
  if (sink.type == "http")
    why_not = "an HTTP receiver cannot be asked which keys it holds";
  else
    why_not = "auditing a " + sink.type + " destination is not implemented yet";
  return nullptr;
}

}  // namespace tailbox::sinks
