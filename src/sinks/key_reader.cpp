#include "sinks/key_reader.hpp"

#include <SQLiteCpp/SQLiteCpp.h>

#include <fstream>
#include <stdexcept>
#include <string_view>

#include "sinks/module_loader.hpp"
#include "sinks/ndjson.hpp"

namespace tailbox::sinks {

std::vector<int64_t> CountedKeys::count(const std::vector<std::string>& keys) {
  std::vector<int64_t> out;
  out.reserve(keys.size());
  for (const auto& k : keys) {
    auto it = counts_.find(k);
    out.push_back(it == counts_.end() ? 0 : it->second);
  }
  return out;
}

void CountedKeys::add(std::string_view key) {
  ++read_;
  if (key.empty()) {
    ++keyless_;
  } else if (key.starts_with(prefix_)) {
    ++counts_[std::string(key)];
    ++ours_;
  }
}

std::string CountedKeys::summary(const std::string& what, const std::string& where) const {
  std::string s = std::to_string(read_) + " " + what + " read from " + where + ", " +
                  std::to_string(ours_) + " of this host";
  if (keyless_) s += ", " + std::to_string(keyless_) + " without a key (not tailbox's records)";
  return s;
}

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

// The file sink's NDJSON output: every complete line's "_id" counted.
class NdjsonKeys : public CountedKeys {
 public:
  NdjsonKeys(const std::string& path, const std::string& host_id)
      : CountedKeys(host_id), path_(path) {}
  void load() override {
    std::ifstream in(path_, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read the file sink's output " + path_);
    std::string line;
    while (std::getline(in, line)) {
      if (in.eof()) {   // no newline: a write cut short, not a record (yet)
        torn_ = true;
        break;
      }
      add(ndjson_record_key(line));
    }
    if (in.bad()) throw std::runtime_error("reading the file sink's output " + path_ + " failed");
  }
  std::string remark() const override {
    return summary("lines", path_) + (torn_ ? "; its last line has no newline (not counted)" : "");
  }

 private:
  std::string path_;
  bool torn_ = false;
};

}  // namespace

std::unique_ptr<KeyReader> make_key_reader(const config::SinkConfig& sink,
                                           const std::string& host_id, std::string& why_not) {
  config::Settings s = sink.settings;   // a copy: reading marks keys used
  if (sink.type == "sqlite")
    return std::make_unique<SqliteKeys>(s.string("path", "tailbox-inbox.db"),
                                        s.string("table", "inbox"));
  if (sink.type == "file") {
    if (s.choice("format", "ndjson", {"ndjson", "raw"}) != "ndjson") {
      why_not = "the file sink's raw format carries no keys";
      return nullptr;
    }
    return std::make_unique<NdjsonKeys>(s.required_string("path"), host_id);
  }
  if (is_module_type(sink.type)) {
    const SinkModule& m = load_module(sink.type);
    if (m.make_key_reader) return m.make_key_reader(sink, host_id, why_not);
  }
  why_not = "auditing a " + sink.type + " destination is not implemented";
  return nullptr;
}

}  // namespace tailbox::sinks
