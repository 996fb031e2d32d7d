#include "sinks/sqlite/sqlite_sink.hpp"

#include <sqlite3.h>

#include <cctype>

#include <SQLiteCpp/SQLiteCpp.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/clock.hpp"

namespace tailbox::sinks {

namespace asio = boost::asio;

struct SqliteSink::Impl {
  std::string path, table, name, synchronous;
  asio::strand<asio::any_io_executor> strand;
  std::unique_ptr<SQLite::Database> db;
  // The raw statement: SQLiteCpp binds (pointer, length) only as a BLOB, and the
  // text columns must hold TEXT so that `WHERE key = '...'` works in sqlite3.
  sqlite3_stmt* insert = nullptr;

  explicit Impl(asio::any_io_executor ex) : strand(asio::make_strand(ex)) {}
  ~Impl() {
    sqlite3_finalize(insert);
    db.reset();
  }

  void text(int i, std::string_view v) {
    sqlite3_bind_text(insert, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  }
  void check(int rc) {
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
      throw SQLite::Exception(db->getHandle(), rc);
  }

  Delivery write(std::span<const Record> batch) {
    try {
      SQLite::Transaction tx(*db);
      int64_t now = unix_ms();
      for (const Record& r : batch) {
        text(1, r.key);
        text(2, r.host);
        text(3, r.source);
        text(4, r.path);
        sqlite3_bind_int64(insert, 5, r.offset);
        sqlite3_bind_int64(insert, 6, r.ingest_ms);
        sqlite3_bind_blob(insert, 7, r.line.data(), static_cast<int>(r.line.size()), SQLITE_STATIC);
        if (r.fields.empty()) sqlite3_bind_null(insert, 8);
        else text(8, r.fields);
        sqlite3_bind_int64(insert, 9, now);
        int rc = sqlite3_step(insert);
        sqlite3_reset(insert);
        check(rc);
      }
      tx.commit();
      return Delivery::delivered();
    } catch (const SQLite::Exception& e) {
      sqlite3_reset(insert);
      // Nothing about a log line makes SQLite refuse it: every failure here is
      // the database's (busy, full, I/O), so retry.
      return Delivery::retry(std::string("inbox ") + path + ": " + e.what());
    }
  }
};

SqliteSink::SqliteSink(config::Settings& s, asio::any_io_executor executor)
    : impl_(std::make_unique<Impl>(executor)) {
  impl_->path = s.string("path", "tailbox-inbox.db");
  if (impl_->path.empty()) s.fail("path", "must not be empty");
  impl_->table = s.string("table", "inbox");
  bool ok = !impl_->table.empty() && !std::isdigit(static_cast<unsigned char>(impl_->table[0]));
  for (char c : impl_->table) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
  if (!ok) s.fail("table", "must be a plain SQL name (letters, digits, _)");
  impl_->synchronous = s.choice("synchronous", "full", {"full", "normal"});
  impl_->name = "sqlite:" + impl_->path;
}

SqliteSink::~SqliteSink() = default;

const std::string& SqliteSink::name() const { return impl_->name; }

std::string SqliteSink::guarantee() const {
  return "exactly-once: the inbox's PRIMARY KEY is the idempotency key (INSERT OR IGNORE)";
}

std::optional<std::string> SqliteSink::open(const OpenContext&) {
  // open() is retried after failures: drop what an earlier attempt left.
  sqlite3_finalize(impl_->insert);
  impl_->insert = nullptr;
  impl_->db.reset();
  try {
    impl_->db = std::make_unique<SQLite::Database>(
        impl_->path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE | SQLite::OPEN_NOMUTEX, 10000);
    auto& db = *impl_->db;
    db.exec("PRAGMA journal_mode = WAL");
    db.exec(impl_->synchronous == "full" ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
    // Inserts land at scattered places of the key's B-tree: 512 KiB of cache
    // holds the pages they touch (1 MiB was no faster in tools/bench); the
    // default 2 MiB only raises peak RSS.
    db.exec("PRAGMA cache_size = -512");
    const std::string& t = impl_->table;
    db.exec("CREATE TABLE IF NOT EXISTS " + t +
            " (\n"
            "  key         TEXT PRIMARY KEY,  -- idempotency key: host/file uid/offset\n"
            "  host        TEXT NOT NULL,\n"
            "  source      TEXT NOT NULL,\n"
            "  path        TEXT NOT NULL,\n"
            "  offset      INTEGER NOT NULL,\n"
            "  ingest_time INTEGER NOT NULL,  -- unix ms, when tailbox read the line\n"
            "  line        BLOB NOT NULL,     -- the raw line\n"
            "  fields      TEXT,              -- parsed fields (JSON), if any\n"
            "  delivered   INTEGER NOT NULL   -- unix ms, first delivery\n"
            ") WITHOUT ROWID");
    std::string sql = "INSERT OR IGNORE INTO " + t +
                      " (key, host, source, path, offset, ingest_time, line, fields, delivered) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
    impl_->check(sqlite3_prepare_v2(db.getHandle(), sql.c_str(), -1, &impl_->insert, nullptr));
  } catch (const SQLite::Exception& e) {
    throw std::runtime_error("cannot open the sqlite inbox " + impl_->path + ": " + e.what());
  }
  return std::nullopt;
}

asio::awaitable<Delivery> SqliteSink::deliver(std::span<const Record> batch) {
  Impl* impl = impl_.get();
  co_return co_await asio::co_spawn(
      impl->strand, [impl, batch]() -> asio::awaitable<Delivery> { co_return impl->write(batch); },
      asio::use_awaitable);
}

}  // namespace tailbox::sinks
