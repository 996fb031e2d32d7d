#include "sinks/key_reader.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <stdexcept>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "core/secret.hpp"
#include "sinks/kafka/clients.hpp"
#include "sinks/nats/connection.hpp"
#include "sinks/ndjson.hpp"
#include "sinks/rabbitmq/connection.hpp"

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

// A destination read whole by load(): the keys of this host, with their copies.
class CountedKeys : public KeyReader {
 public:
  explicit CountedKeys(const std::string& host_id) : prefix_(host_id + "/") {}
  std::vector<int64_t> count(const std::vector<std::string>& keys) override {
    std::vector<int64_t> out;
    out.reserve(keys.size());
    for (const auto& k : keys) {
      auto it = counts_.find(k);
      out.push_back(it == counts_.end() ? 0 : it->second);
    }
    return out;
  }

 protected:
  // One record (message) read; `key` empty when it carries none.
  void add(std::string_view key) {
    ++read_;
    if (key.empty()) {
      ++keyless_;
    } else if (key.starts_with(prefix_)) {
      ++counts_[std::string(key)];
      ++ours_;
    }
  }
  // "<read> <what> read from <where>, <ours> of this host[, <keyless> without a key]".
  std::string summary(const std::string& what, const std::string& where) const {
    std::string s = std::to_string(read_) + " " + what + " read from " + where + ", " +
                    std::to_string(ours_) + " of this host";
    if (keyless_) s += ", " + std::to_string(keyless_) + " without a key (not tailbox's records)";
    return s;
  }

 private:
  const std::string prefix_;
  std::unordered_map<std::string, int64_t> counts_;
  int64_t read_ = 0, ours_ = 0, keyless_ = 0;
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

// NATS JetStream: the stream read back on this host's subjects (an ordered,
// ephemeral consumer, headers only; nothing acknowledged), keyed by Nats-Msg-Id.
class NatsKeys : public CountedKeys {
 public:
  NatsKeys(nats::Options o, const std::string& host_id)
      : CountedKeys(host_id), o_(std::move(o)), host_id_(host_id),
        conn_(o_, host_id, "tailbox audit", nats::display_url(o_.url)) {
    conn_.connect();
  }
  void load() override {
    const auto st = conn_.stream_state(false);
    if (st.last == 0 || st.last < st.first) return;   // empty
    conn_.read_back(st.first - 1, st.last, nats::host_filter(o_.subject, host_id_), "",
                    [&](std::vector<std::pair<std::string, uint64_t>>& found) {
                      for (const auto& [key, seq] : found) add(key);
                      found.clear();
                    });
    last_ = st.last;
  }
  std::string remark() const override {
    return summary("messages", "stream " + o_.stream + " (up to sequence " +
                                   std::to_string(last_) + ", subjects " +
                                   nats::host_filter(o_.subject, host_id_) + ")");
  }

 private:
  const nats::Options o_;
  const std::string host_id_;
  nats::Connection conn_;
  uint64_t last_ = 0;
};

// Kafka: the data topic read whole by a read_committed consumer (assigned,
// no group, nothing committed), keyed by each record's tailbox-key header.
class KafkaKeys : public CountedKeys {
 public:
  KafkaKeys(kafka::Options o, const std::string& host_id)
      : CountedKeys(host_id), o_(std::move(o)),
        clients_(o_, "tailbox audit", nullptr) {}
  void load() override {
    clients_.read_topic([&](const rd_kafka_message_t& m) {
      rd_kafka_headers_t* headers = nullptr;
      const void* value = nullptr;
      size_t size = 0;
      if (rd_kafka_message_headers(&m, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR &&
          rd_kafka_header_get_last(headers, "tailbox-key", &value, &size) ==
              RD_KAFKA_RESP_ERR_NO_ERROR && value)
        add(std::string_view(static_cast<const char*>(value), size));
      else
        add({});
    });
  }
  std::string remark() const override {
    return summary("records", "topic " + o_.topic + " (read_committed)");
  }

 private:
  const kafka::Options o_;
  kafka::Clients clients_;
};

// A RabbitMQ stream queue read from "first" without consuming (a stream keeps
// its messages; acks only grant credit), keyed by message_id. Where it ends:
// at or after the broker's message count (a lower bound, a few seconds late),
// once nothing more arrives for kQuiet. A queue configured as a stream that
// is not one: the broker refuses the x-stream-offset argument (406); should
// one accept it, its first delivery (no x-stream-offset) stops the read
// before anything is acknowledged, and closing the channel requeues it.
class RabbitStreamKeys : public CountedKeys {
 public:
  static constexpr std::chrono::milliseconds kQuiet{1000};
  static constexpr int kPrefetch = 1000;

  RabbitStreamKeys(rabbitmq::Options o, const std::string& host_id)
      : CountedKeys(host_id), o_(std::move(o)) {
    std::string password = read_secret("password", o_.password_file, o_.password_env);
    conn_ = std::make_unique<rabbitmq::Connection>(o_, password, "tailbox audit " + host_id);
    std::fill(password.begin(), password.end(), '\0');
  }
  void load() override {
    using clock = std::chrono::steady_clock;
    const int64_t known =
        static_cast<int64_t>(conn_->declare_queue(o_.queue, o_.queue_type, true));
    try {
      conn_->start_read(o_.queue, -1, kPrefetch);
    } catch (const rabbitmq::ConnectionError& e) {
      if (e.failure.code != 406) throw;
      throw std::runtime_error("queue " + o_.queue + " is not a stream (" + e.what() + ")");
    }
    int64_t unacked = 0;
    for (;;) {
      const bool reached = next_ >= known;
      rabbitmq::Event e = conn_->next(clock::now() + (reached ? kQuiet : o_.timeout));
      if (e.type == rabbitmq::Event::Type::timeout) {
        if (reached) break;
        throw std::runtime_error("reading stream " + o_.queue + ": nothing within " +
                                 std::to_string(o_.timeout.count()) + " ms after offset " +
                                 std::to_string(next_) + " (the broker counts " +
                                 std::to_string(known) + " messages)");
      }
      if (e.type != rabbitmq::Event::Type::delivery) continue;
      if (e.stream_offset < 0) {
        conn_->end_read();
        throw std::runtime_error(
            "queue " + o_.queue + " is not a stream (its messages carry no x-stream-offset): "
            "nothing was acknowledged, and reading a classic or quorum queue would consume it");
      }
      if (++unacked >= kPrefetch / 4) {
        conn_->ack_delivery(e.tag);
        unacked = 0;
      }
      next_ = std::max(next_, e.stream_offset + 1);
      add(e.message_id);
    }
    conn_->end_read();
  }
  std::string remark() const override {
    return summary("messages", "stream " + o_.queue + " (up to offset " + std::to_string(next_) +
                                   ")");
  }

 private:
  const rabbitmq::Options o_;
  std::unique_ptr<rabbitmq::Connection> conn_;
  int64_t next_ = 0;   // after the last message read
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
  if (sink.type == "postgres") {
    const std::string conninfo = s.required_string("conninfo");
    const std::string file = s.string("password_file", ""), env = s.string("password_env", "");
    const std::string password =
        file.empty() && env.empty() ? std::string() : read_secret("password", file, env);
    return std::make_unique<PostgresKeys>(conninfo, password, s.string("table", "tailbox_logs"));
  }
  if (sink.type == "nats") return std::make_unique<NatsKeys>(nats::parse_options(s), host_id);
  if (sink.type == "kafka")
    return std::make_unique<KafkaKeys>(kafka::parse_options(s, host_id), host_id);
  if (sink.type == "rabbitmq") {
    rabbitmq::Options o = rabbitmq::parse_options(s);
    if (o.queue_type == rabbitmq::QueueType::stream)
      return std::make_unique<RabbitStreamKeys>(std::move(o), host_id);
    why_not = "not possible for a " + std::string(rabbitmq::queue_type_name(o.queue_type)) +
              " queue: reading would consume it (only a stream queue can be read without "
              "taking its messages)";
    return nullptr;
  }
  if (sink.type == "http")
    why_not = "not possible for an HTTP receiver: it cannot be asked which keys it holds";
  else
    why_not = "auditing a " + sink.type + " destination is not implemented";
  return nullptr;
}

}  // namespace tailbox::sinks
