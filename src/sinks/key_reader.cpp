#include "sinks/key_reader.hpp"

#include <SQLiteCpp/SQLiteCpp.h>

#include <boost/json.hpp>
#include <fstream>
#include <stdexcept>
#include <unordered_map>

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
  if (sink.type == "http")
    why_not = "an HTTP receiver cannot be asked which keys it holds";
  else
    why_not = "auditing a " + sink.type + " destination is not implemented yet";
  return nullptr;
}

}  // namespace tailbox::sinks
