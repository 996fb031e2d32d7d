// Outbox internals shared by its translation units (open.cpp, outbox.cpp,
// delivery.cpp): the Impl behind Outbox, and how SQLite errors become a
// Status. Not part of the outbox's interface: include it from src/outbox/ only.
#pragma once

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>

#include "core/clock.hpp"
#include "outbox/checkpointer.hpp"
#include "outbox/outbox.hpp"
#include "outbox/statements.hpp"

namespace tailbox::outbox {


inline Status from_exception(const SQLite::Exception& e) {
  int code = e.getErrorCode() & 0xff;
  Status::Code c = Status::Code::other;
  if (code == SQLITE_FULL) c = Status::Code::full;
  else if (code == SQLITE_IOERR || code == SQLITE_CANTOPEN) c = Status::Code::io_error;
  else if (code == SQLITE_BUSY || code == SQLITE_LOCKED) c = Status::Code::busy;
  else if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) c = Status::Code::corrupt;
  return Status::error(c, e.what());
}

// Runs `body` and turns SQLite and hook exceptions into a failed Result.
template <typename F>
auto guarded_result(F&& body) -> Result<decltype(body())> {
  try {
    return body();
  } catch (const SQLite::Exception& e) {
    return failed(from_exception(e));
  } catch (const std::exception& e) {
    return failed(Status::error(Status::Code::other, e.what()));
  }
}

// Runs `body` and turns SQLite and hook exceptions into a Status.
template <typename F>
Status guarded(F&& body) {
  try {
    body();
    return Status::ok();
  } catch (const SQLite::Exception& e) {
    return from_exception(e);
  } catch (const std::exception& e) {
    return Status::error(Status::Code::other, e.what());
  }
}

inline const char* sync_pragma(config::Synchronous s) {
  switch (s) {
    case config::Synchronous::off: return "PRAGMA synchronous = OFF";
    case config::Synchronous::full: return "PRAGMA synchronous = FULL";
    default: return "PRAGMA synchronous = NORMAL";
  }
}

// PRAGMA synchronous = FULL for the commits made while it lives, then the
// configured level again. REQUIRES: no transaction open on `db`.
class SyncScope {
 public:
  SyncScope(SQLite::Database& db, config::Synchronous configured)
      : db_(db), restore_(sync_pragma(configured)) {
    db_.exec("PRAGMA synchronous = FULL");
  }
  ~SyncScope() {
    try {
      db_.exec(restore_);
    } catch (...) {
    }
  }
  SyncScope(const SyncScope&) = delete;
  SyncScope& operator=(const SyncScope&) = delete;

 private:
  SQLite::Database& db_;
  const char* restore_;
};

struct Outbox::Impl {
  OpenOptions options;
  int lock_fd = -1;
  std::unique_ptr<SQLite::Database> db;       // the writer
  std::unique_ptr<Checkpointer> checkpointer;  // the writer's WAL, copied back on a thread
  std::unique_ptr<SQLite::Database> reader;   // lease() only: reads run beside writes (WAL)
  std::unique_ptr<SQLite::Statement> insert_rows;   // kInsertBlock rows
  std::unique_ptr<SQLite::Statement> savepoint, release_savepoint, rollback_savepoint;
  // Runs a prepared statement that returns no rows, ready to run again.
  static void step(SQLite::Statement& s) {
    s.exec();
    s.reset();
  }
  std::unique_ptr<SQLite::Statement> insert_row, update_offset, update_fingerprint, next_file,
      lease_file, delete_range, delete_row, fail_row, bury_row, put_state;
  std::atomic<int64_t> rows{0}, bytes{0};
  std::mutex count_mu;       // rows/bytes changes vs recount() (see there)
  uint64_t count_epoch = 0;  // odd while an append or ack may change them
  std::string salt;      // meta 'instance': hashed into every uid minted here
  std::mutex files_mu;   // lease() runs beside the writer methods
  std::map<int64_t, std::shared_ptr<const FileInfo>> files;

  // REQUIRES: files_mu held; `conn` is the caller's own connection.
  std::shared_ptr<const FileInfo> info(SQLite::Database& conn, int64_t id) {
    auto it = files.find(id);
    if (it != files.end()) return it->second;
    SQLite::Statement q(conn, sql::kFileInfo);
    q.bind(1, id);
    auto fi = std::make_shared<FileInfo>();
    if (q.executeStep()) {
      fi->source = q.getColumn(0).getString();
      fi->path = q.getColumn(1).getString();
      fi->uid = q.getColumn(2).getString();
    } else {
      fi->uid = "file" + std::to_string(id);
    }
    files[id] = fi;
    return fi;
  }
  std::function<void(std::string_view)> hook;
  int64_t delete_rows(std::span<const RowKey> rows, bool ranges);

  std::atomic<int64_t> errors{0}, last_error_ms{0}, last_ok_ms{0};
  mutable std::mutex health_mu;
  std::string last_error;
  std::mutex stats_mu;
  std::unique_ptr<SQLite::Database> stats_db;   // oldest_pending_ms() only

  // ---- disk space (see maintain()) ----
  std::string dir;                          // statvfs() target: the outbox's directory
  std::string reserve_path;                 // "<path>.reserve"
  std::atomic<bool> reserve_held{false};    // changed by the writer only
  std::atomic<bool> disk_low{false};
  std::atomic<int64_t> free_bytes{-1};      // statvfs free + the database's free pages
  std::atomic<int64_t> reusable_bytes{0};   // freelist pages: room SQLite reuses before growing
  bool incremental_vacuum = false;          // auto_vacuum = INCREMENTAL (outboxes made since 0.2)
  std::atomic<int64_t> space_checked_ms{0};
  int64_t last_checkpoint_ms = 0;           // writer only
  // The database file this Outbox opened, to notice it being deleted or replaced.
  uint64_t opened_dev = 0, opened_ino = 0;

  static int64_t steady_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch()).count();
  }

  // Measures free space (at most once a millisecond unless forced) and sets disk_low,
  // with hysteresis so that reading does not flap around the limit.
  void refresh_space(bool force) {
    // statvfs costs about a microsecond; readers ask once per chunk.
    int64_t now = steady_ms();
    if (!force && now - space_checked_ms.load() < 1) return;
    space_checked_ms = now;
    struct statvfs v {};
    if (statvfs(dir.c_str(), &v) != 0) return;
    // Free pages count as free space only where they cannot be given back
    // (older outboxes without auto_vacuum), or reading would never resume.
    int64_t free = static_cast<int64_t>(v.f_bavail) * static_cast<int64_t>(v.f_frsize) +
                   (incremental_vacuum ? 0 : reusable_bytes.load());
    free_bytes = free;
    const int64_t min = options.min_free_bytes;
    if (min <= 0) {
      disk_low = false;
    } else if (free < min) {
      disk_low = true;
    } else if (disk_low.load()) {
      int64_t want = min + min / 4;
      if (!reserve_held.load()) want += options.reserve_bytes;   // it will be made again
      if (free >= want) disk_low = false;
    }
  }

  // REQUIRES: writer. Pages in the database's free list are space the outbox
  // can fill again without the file growing.
  void refresh_reusable() {
    try {
      int64_t pages = db->execAndGet("PRAGMA freelist_count").getInt64();
      int64_t size = db->execAndGet("PRAGMA page_size").getInt64();
      reusable_bytes = pages * size;
    } catch (const SQLite::Exception&) {
    }
  }

  // REQUIRES: writer. Preallocates the reserve file; false (and no file) when
  // there is no room for it.
  bool make_reserve() {
    if (options.reserve_bytes <= 0 || reserve_held.load()) return reserve_held.load();
    int fd = ::open(reserve_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    int rc = posix_fallocate(fd, 0, static_cast<off_t>(options.reserve_bytes));
    ::close(fd);
    if (rc != 0) {
      ::unlink(reserve_path.c_str());
      return false;
    }
    reserve_held = true;
    return true;
  }

  // REQUIRES: writer. Gives the reserve's space back to the file system.
  bool give_back_reserve() {
    if (!reserve_held.load()) return false;
    ::unlink(reserve_path.c_str());
    reserve_held = false;
    return true;
  }

  // REQUIRES: writer. Copies the WAL into the database and truncates it to 0
  // bytes. Waits (busy timeout) for the lease connection's read to end.
  Status checkpoint(bool give_back_pages = false) {
    last_checkpoint_ms = steady_ms();
    // Free pages back to the file system first (it needs a little WAL room
    // and may fail on a full disk): the checkpoint then shortens the file.
    if (incremental_vacuum && (disk_low.load() || give_back_pages) && reusable_bytes.load() > 0)
      (void)guarded([&] { db->exec("PRAGMA incremental_vacuum"); });
    // The checkpoint thread's run first: SQLite refuses a second checkpoint
    // at once (BUSY), without waiting.
    std::unique_lock<std::mutex> held;
    if (checkpointer) held = checkpointer->hold();
    Status st = guarded([&] {
      int log = 0, done = 0;
      // Wait briefly for readers (leasing), not the connection's 5 s: a
      // long read elsewhere (sqlite3 CLI, replay) must not stall the writer.
      sqlite3_busy_timeout(db->getHandle(), 100);
      int rc = sqlite3_wal_checkpoint_v2(db->getHandle(), nullptr, SQLITE_CHECKPOINT_TRUNCATE,
                                         &log, &done);
      sqlite3_busy_timeout(db->getHandle(), 5000);
      // BUSY: a reader kept part of the WAL; the next checkpoint gets it.
      if (rc != SQLITE_OK && rc != SQLITE_BUSY) throw SQLite::Exception(db->getHandle(), rc);
    });
    refresh_reusable();
    refresh_space(true);
    return st;
  }

  int64_t wal_bytes() const {
    struct stat st {};
    return ::stat((options.path + "-wal").c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
  }

  // REQUIRES: writer. After a write: keep the WAL small while space is short.
  void after_write() {
    if (options.min_free_bytes <= 0) return;
    refresh_space(false);
    if (steady_ms() - last_checkpoint_ms < 10) return;
    if (disk_low.load() || wal_bytes() > options.min_free_bytes / 4) (void)checkpoint();
  }

  Status track(Status st) {
    if (st) {
      last_ok_ms = unix_ms();
    } else {
      ++errors;
      last_error_ms = unix_ms();
      std::lock_guard lock(health_mu);
      last_error = st.message();
    }
    return st;
  }

  void at(std::string_view stage) {
    if (hook) hook(stage);
  }

  ~Impl() {
    // Statements must go before the database; the database before the lock.
    if (checkpointer && db) checkpointer->uninstall(db->getHandle());
    checkpointer.reset();
    insert_rows.reset(); savepoint.reset(); release_savepoint.reset(); rollback_savepoint.reset();
    insert_row.reset(); update_offset.reset(); update_fingerprint.reset(); next_file.reset();
    lease_file.reset(); delete_range.reset(); delete_row.reset(); fail_row.reset(); bury_row.reset(); put_state.reset();
    reader.reset();
    stats_db.reset();
    db.reset();
    if (lock_fd >= 0) ::close(lock_fd);
  }
};

// Marks an append or ack in progress for recount() (count_epoch odd).
class CountChange {
 public:
  CountChange(std::mutex& mu, uint64_t& epoch) : mu_(mu), epoch_(epoch) { bump(); }
  ~CountChange() { bump(); }
  CountChange(const CountChange&) = delete;
  CountChange& operator=(const CountChange&) = delete;

 private:
  void bump() {
    std::lock_guard lock(mu_);
    ++epoch_;
  }
  std::mutex& mu_;
  uint64_t& epoch_;
};

}  // namespace tailbox::outbox
