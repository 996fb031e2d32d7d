#include "outbox/outbox.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>

#include "core/clock.hpp"
#include "core/record_key.hpp"
#include "outbox/statements.hpp"
#include "schema_sql.hpp"

namespace tailbox::outbox {
namespace {

Status from_exception(const SQLite::Exception& e) {
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

const char* sync_pragma(config::Synchronous s) {
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

// Holds "<outbox>.lock" with flock for the process's life.
int take_lock(const std::string& db_path) {
  std::string lock_path = db_path + ".lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    throw OutboxError("cannot open lock file " + lock_path + ": " + std::strerror(errno));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    ::close(fd);
    std::string owner = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "unknown";
    while (!owner.empty() && (owner.back() == '\n' || owner.back() == ' ')) owner.pop_back();
    throw OutboxError("outbox " + db_path + " is in use by another tailbox (pid " + owner +
                      "); one outbox belongs to one running relay");
  }
  std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(fd, 0) == 0) (void)!pwrite(fd, pid.data(), pid.size(), 0);
  return fd;
}

}  // namespace

struct Outbox::Impl {
  OpenOptions options;
  int lock_fd = -1;
  std::unique_ptr<SQLite::Database> db;       // the writer
  std::unique_ptr<SQLite::Database> reader;   // lease() only: reads run beside writes (WAL)
  std::unique_ptr<SQLite::Statement> insert_row, update_offset, update_fingerprint, lease_all,
      lease_lane, delete_row, fail_row, bury_row, put_state;
  std::atomic<int64_t> rows{0}, bytes{0};
  std::mutex count_mu;       // rows/bytes changes vs recount() (see there)
  uint64_t count_epoch = 0;  // odd while an append or ack may change them
  // Row ids are handed out here, never reused while the process lives, so that
  // the dispatcher's lease cursor only ever moves forward (SQLite alone would
  // reuse the id of a deleted last row).
  int64_t next_id = 1;
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
    insert_row.reset(); update_offset.reset(); update_fingerprint.reset(); lease_all.reset();
    lease_lane.reset(); delete_row.reset(); fail_row.reset(); bury_row.reset(); put_state.reset();
    reader.reset();
    stats_db.reset();
    db.reset();
    if (lock_fd >= 0) ::close(lock_fd);
  }
};

namespace {
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
}  // namespace

Outbox::Outbox(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Outbox::~Outbox() = default;

const std::string& Outbox::path() const { return impl_->options.path; }

namespace {

std::string mode_text(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// Refuses, before SQLite or the lock touch anything, an outbox tailbox could
// read but not write: SQLite would open it read-only and every append fail
// while the relay looked alive. The rule is on the mode bits as well as a
// real open(O_RDWR), because root may open a 0444 file for writing: a file
// without its owner's write bit, or a directory without any write bit, is
// read-only by intent.
void check_writable(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode))
      throw OutboxError("outbox " + path + " is a directory: [outbox] path must name a file "
                        "(e.g. " + path + "/outbox.db)");
    if (!S_ISREG(st.st_mode))
      throw OutboxError("outbox " + path + " is not a regular file");
  }
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::string file = path + suffix;
    if (stat(file.c_str(), &st) != 0) continue;
    std::string owner = "owner uid " + std::to_string(st.st_uid) + ", mode " + mode_text(st.st_mode);
    if (!(st.st_mode & S_IWUSR))
      throw OutboxError(file + " is read-only (" + owner + "): tailbox must write to its "
                        "outbox; give the owner write permission (chmod u+w " + file + ")");
    int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0)
      throw OutboxError(file + ": permission denied to open it for writing (" +
                        std::strerror(errno) + "; " + owner + ", tailbox runs as uid " +
                        std::to_string(geteuid()) + ")");
    ::close(fd);
  }
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (stat(dir.c_str(), &st) != 0)
    throw OutboxError("outbox " + path + ": its directory " + dir + " cannot be used: " +
                      std::strerror(errno));
  bool no_write_bit = !(st.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH));
  if (no_write_bit || access(dir.c_str(), W_OK | X_OK) != 0)
    throw OutboxError("outbox " + path + ": permission denied on its directory " + dir +
                      " (owner uid " + std::to_string(st.st_uid) + ", mode " + mode_text(st.st_mode) +
                      (no_write_bit ? "" : std::string(", ") + std::strerror(errno)) +
                      "): tailbox creates the outbox, its -wal, -shm and .lock files there");
}

// Refuses a database that is not a tailbox outbox, before anything changes it
// (journal mode, migrations). A tailbox outbox is born with user_version >= 1
// (built under another name, renamed once its schema is committed) and never
// sets application_id.
void check_is_outbox(SQLite::Database& db, const std::string& path) {
  int app = db.execAndGet("PRAGMA application_id").getInt();
  int version = db.execAndGet("PRAGMA user_version").getInt();
  auto has_table = [&db](const char* name) {
    SQLite::Statement q(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?");
    q.bind(1, name);
    return q.executeStep() && q.getColumn(0).getInt() > 0;
  };
  int objects = db.execAndGet("SELECT count(*) FROM sqlite_master").getInt();
  std::string why;
  if (app != 0) why = "application_id " + std::to_string(app) + " belongs to another program";
  else if (version == 0 && objects > 0) why = "it has tables but no tailbox schema (user_version 0)";
  else if (version > 0 && !(has_table("outbox") && has_table("files")))
    why = "it has user_version " + std::to_string(version) + " but no tailbox tables";
  if (!why.empty())
    throw OutboxError(path + " is not a tailbox outbox (" + why + "); tailbox leaves it "
                      "unchanged. Point [outbox] path at a new file");
}

}  // namespace

std::unique_ptr<Outbox> Outbox::open(const OpenOptions& options) {
  // SQLite's global allocation statistics take a process-wide mutex on every
  // malloc; tailbox never reads them. Only possible before SQLite initializes.
  static const bool configured = [] {
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    return true;
  }();
  (void)configured;
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  const std::string& path = options.path;
  try {
    if (options.read_only) {
      struct stat st {};
      if (stat(path.c_str(), &st) != 0 && errno == ENOENT)
        throw OutboxError("outbox " + path + " does not exist (`tailbox run` creates it)");
      if (S_ISDIR(st.st_mode))
        throw OutboxError("outbox " + path + " is a directory: [outbox] path must name a file");
      if (access(path.c_str(), R_OK) != 0)
        throw OutboxError("outbox " + path + ": " + std::strerror(errno));
      impl->db = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READONLY | SQLite::OPEN_NOMUTEX, 5000);
      int version = impl->db->execAndGet("PRAGMA user_version").getInt();
      if (version < 1)
        throw OutboxError("outbox " + path + " has no tailbox schema (user_version 0)");
      return std::unique_ptr<Outbox>(new Outbox(std::move(impl)));
    }

    check_writable(path);
    impl->lock_fd = take_lock(path);
    // A new outbox is built under a temporary name and renamed into place once
    // its schema is committed, so an outbox that exists is never legitimately
    // empty: an empty one was truncated, and SQLite would start it afresh.
    struct stat existing {};
    if (stat(path.c_str(), &existing) != 0) {
      if (errno != ENOENT)
        throw OutboxError("cannot open outbox " + path + ": " + std::strerror(errno));
      std::string creating = path + ".creating";
      for (const char* suffix : {"", "-wal", "-shm", "-journal"}) ::unlink((creating + suffix).c_str());
      int fd = ::open(creating.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);   // 0600
      if (fd < 0) throw OutboxError("cannot create outbox " + path + ": " + std::strerror(errno));
      ::close(fd);
      {
        SQLite::Database fresh(creating, SQLite::OPEN_READWRITE, 5000);
        fresh.exec("PRAGMA synchronous = FULL");
        // Before the first table: lets a drained outbox give its free pages
        // back to the file system (PRAGMA incremental_vacuum) when space is short.
        fresh.exec("PRAGMA auto_vacuum = INCREMENTAL");
        for (size_t v = 0; v < kSchemaMigrations.size(); ++v) {
          SQLite::Transaction tx(fresh);
          fresh.exec(std::string(kSchemaMigrations[v]));
          fresh.exec("PRAGMA user_version = " + std::to_string(v + 1));
          tx.commit();
        }
      }
      if (::rename(creating.c_str(), path.c_str()) != 0)
        throw OutboxError("cannot create outbox " + path + ": " + std::strerror(errno));
      std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/') + 1);
      int dfd = ::open(dir.empty() ? "/" : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd >= 0) {
        (void)fsync(dfd);
        ::close(dfd);
      }
    } else if (existing.st_size == 0) {
      throw OutboxError("outbox " + path + " exists but is empty (0 bytes): it was truncated. "
                        "tailbox will not start it afresh by itself; move it away (with its -wal, "
                        "-shm) to start with an empty outbox");
    }

    impl->db = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE | SQLite::OPEN_NOMUTEX, 5000);
    SQLite::Database& db = *impl->db;
    check_is_outbox(db, path);
    {
      // On a small file system the configured headroom would never be free:
      // at most a quarter of its size is kept free, an eighth reserved.
      std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
      struct statvfs v {};
      if (statvfs(dir.empty() ? "/" : dir.c_str(), &v) == 0) {
        int64_t size = static_cast<int64_t>(v.f_blocks) * static_cast<int64_t>(v.f_frsize);
        OpenOptions& o = impl->options;
        if (o.min_free_bytes > size / 4 || o.reserve_bytes > size / 8) {
          spdlog::info("outbox file system is {} bytes: keeping {} bytes free (min_free_bytes {}) "
                       "and a reserve of {} (reserve_bytes {})", size,
                       std::min(o.min_free_bytes, size / 4), o.min_free_bytes,
                       std::min(o.reserve_bytes, size / 8), o.reserve_bytes);
          o.min_free_bytes = std::min(o.min_free_bytes, size / 4);
          o.reserve_bytes = std::min(o.reserve_bytes, size / 8);
        }
      }
    }
    db.exec("PRAGMA journal_mode = WAL");
    db.exec(sync_pragma(options.synchronous));
    db.exec("PRAGMA journal_size_limit = 67108864");
    db.exec("PRAGMA temp_store = MEMORY");
    // 1 MiB: the hot ends of the B-trees (appends at one end, deletes at the
    // other) are a few hundred pages; more only raises peak RSS.
    db.exec("PRAGMA cache_size = -1024");
    if (impl->options.min_free_bytes > 0) {
      // A checkpoint needs free space for the WAL's new pages (the database
      // grows by them): keep the WAL well below the headroom kept free.
      int64_t quarter = impl->options.min_free_bytes / 4;
      int64_t pages = std::clamp<int64_t>(quarter / 4096, 16, 1000);   // 1000: SQLite's default
      db.exec("PRAGMA wal_autocheckpoint = " + std::to_string(pages));
      db.exec("PRAGMA journal_size_limit = " +
              std::to_string(std::min<int64_t>(67108864, std::max<int64_t>(quarter, 65536))));
    }

    int version = db.execAndGet("PRAGMA user_version").getInt();
    const int latest = static_cast<int>(kSchemaMigrations.size());
    if (version > latest)
      throw OutboxError("outbox " + path + " has schema version " + std::to_string(version) +
                        ", newer than this tailbox knows (" + std::to_string(latest) +
                        "); run a newer tailbox or move the outbox away");
    for (int v = version; v < latest; ++v) {
      SQLite::Transaction tx(db);
      db.exec(std::string(kSchemaMigrations[v]));
      db.exec("PRAGMA user_version = " + std::to_string(v + 1));
      tx.commit();
    }

    impl->salt = db.execAndGet(sql::kInstanceSalt).getString();
    impl->insert_row = std::make_unique<SQLite::Statement>(db, sql::kInsertRow);
    impl->update_offset = std::make_unique<SQLite::Statement>(db, sql::kUpdateOffset);
    impl->update_fingerprint = std::make_unique<SQLite::Statement>(db, sql::kUpdateFingerprint);
    impl->reader = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READONLY | SQLite::OPEN_NOMUTEX, 5000);
    impl->reader->exec("PRAGMA cache_size = -512");   // reset after every write anyway (WAL)
    impl->lease_all = std::make_unique<SQLite::Statement>(*impl->reader, sql::kLeaseAll);
    impl->lease_lane = std::make_unique<SQLite::Statement>(*impl->reader, sql::kLeaseLane);
    impl->stats_db = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READONLY | SQLite::OPEN_NOMUTEX, 5000);
    impl->stats_db->exec("PRAGMA cache_size = -256");
    impl->delete_row = std::make_unique<SQLite::Statement>(db, sql::kDeleteRow);
    impl->fail_row = std::make_unique<SQLite::Statement>(db, sql::kFailRow);
    impl->bury_row = std::make_unique<SQLite::Statement>(db, sql::kBuryRow);
    impl->put_state = std::make_unique<SQLite::Statement>(db, sql::kPutSinkState);

    SQLite::Statement count(db, sql::kBacklog);
    if (count.executeStep()) {
      impl->rows = count.getColumn(0).getInt64();
      impl->bytes = count.getColumn(1).getInt64();
      impl->next_id = count.getColumn(2).getInt64() + 1;
    }

    struct stat opened {};
    if (::stat(path.c_str(), &opened) == 0) {
      impl->opened_dev = static_cast<uint64_t>(opened.st_dev);
      impl->opened_ino = static_cast<uint64_t>(opened.st_ino);
    }
    impl->dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
    if (impl->dir.empty()) impl->dir = "/";
    impl->reserve_path = path + ".reserve";
    const OpenOptions& eff = impl->options;   // with the small-disk caps
    struct stat reserve {};
    if (eff.reserve_bytes > 0 && ::stat(impl->reserve_path.c_str(), &reserve) == 0 &&
        reserve.st_size >= eff.reserve_bytes)
      impl->reserve_held = true;
    else if (eff.reserve_bytes <= 0)
      ::unlink(impl->reserve_path.c_str());
    impl->incremental_vacuum = db.execAndGet("PRAGMA auto_vacuum").getInt() == 2;
    impl->refresh_reusable();
    impl->refresh_space(true);
    // A disk left full by an earlier run: the WAL first, then the reserve.
    if (impl->disk_low.load()) (void)impl->checkpoint();
    if (!impl->reserve_held.load() && eff.reserve_bytes > 0 &&
        impl->free_bytes.load() >= eff.min_free_bytes + eff.reserve_bytes &&
        !impl->make_reserve())
      spdlog::warn("cannot make the outbox's reserve file {} ({} bytes)", impl->reserve_path,
                   eff.reserve_bytes);
  } catch (const SQLite::Exception& e) {
    int code = e.getErrorCode() & 0xff;
    std::string what = e.what();
    if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT)
      throw OutboxError("outbox " + path + " is damaged (" + what +
                        "). tailbox will not touch it. Run `tailbox check --outbox -c CONFIG` "
                        "for details; to start over, move the file (and its -wal, -shm) away");
    throw OutboxError("outbox " + path + ": " + what);
  }
  return std::unique_ptr<Outbox>(new Outbox(std::move(impl)));
}

Result<std::vector<TrackedFile>> Outbox::tracked_files() {
  return guarded_result([&] {
  std::vector<TrackedFile> out;
  SQLite::Statement q(*impl_->db, sql::kTrackedFiles);
  while (q.executeStep()) {
    TrackedFile f;
    f.id = q.getColumn(0).getInt64();
    f.source = q.getColumn(1).getString();
    f.path = q.getColumn(2).getString();
    f.identity.dev = static_cast<uint64_t>(q.getColumn(3).getInt64());
    f.identity.inode = static_cast<uint64_t>(q.getColumn(4).getInt64());
    f.identity.fingerprint = std::stoull(q.getColumn(5).getString(), nullptr, 16);
    f.identity.fingerprint_len = q.getColumn(6).getInt64();
    f.uid = q.getColumn(7).getString();
    f.read_offset = q.getColumn(8).getInt64();
    f.released = q.getColumn(9).getString() == "released";
    out.push_back(std::move(f));
  }
  return out;
  });
}

Result<TrackedFile> Outbox::add_file(const std::string& source, const std::string& path,
                                     const FileIdentity& identity, int64_t read_offset) {
  const NewFile one[] = {NewFile{source, path, identity, read_offset}};
  auto added = add_files(one);
  if (!added) return failed(std::move(added.error()));
  return std::move(added->front());
}

Result<std::vector<TrackedFile>> Outbox::add_files(std::span<const NewFile> files) {
  std::vector<TrackedFile> added;
  Status status = guarded([&] {
    added.clear();
    SQLite::Database& db = *impl_->db;
    // As in add_file: every row durable before any of these files' lines can
    // be leased, here with one sync for the whole batch.
    SyncScope full(db, impl_->options.synchronous);
    SQLite::Transaction tx(db);
    const int64_t now = unix_ms();
    for (const NewFile& nf : files) {
      std::string uid;
      for (int generation = 0;; ++generation) {
        uid = file_uid(nf.identity, generation, impl_->salt);
        SQLite::Statement q(db, sql::kUidTaken);   // sees this transaction's rows too
        q.bind(1, uid);
        if (!q.executeStep()) break;
      }
      SQLite::Statement ins(db, sql::kInsertFile);
      ins.bind(1, nf.source);
      ins.bind(2, nf.path);
      ins.bind(3, static_cast<int64_t>(nf.identity.dev));
      ins.bind(4, static_cast<int64_t>(nf.identity.inode));
      ins.bind(5, to_hex(nf.identity.fingerprint));
      ins.bind(6, nf.identity.fingerprint_len);
      ins.bind(7, uid);
      ins.bind(8, nf.read_offset);
      ins.bind(9, now);
      ins.exec();
      TrackedFile f;
      f.id = db.getLastInsertRowid();
      f.source = nf.source;
      f.path = nf.path;
      f.identity = nf.identity;
      f.uid = uid;
      f.read_offset = nf.read_offset;
      added.push_back(std::move(f));
    }
    tx.commit();
    std::lock_guard lock(impl_->files_mu);
    for (const TrackedFile& f : added)
      impl_->files[f.id] = std::make_shared<FileInfo>(FileInfo{f.source, f.path, f.uid});
  });
  if (!status) return failed(std::move(status));
  return added;
}

Status Outbox::update_path(int64_t file_id, const std::string& path) {
  return guarded([&] {
    SQLite::Statement q(*impl_->db, sql::kUpdatePath);
    q.bind(1, path);
    q.bind(2, unix_ms());
    q.bind(3, file_id);
    q.exec();
    std::lock_guard lock(impl_->files_mu);
    impl_->files.erase(file_id);
  });
}

Status Outbox::update_source(int64_t file_id, const std::string& source) {
  return guarded([&] {
    SQLite::Statement q(*impl_->db, sql::kUpdateSource);
    q.bind(1, source);
    q.bind(2, unix_ms());
    q.bind(3, file_id);
    q.exec();
    std::lock_guard lock(impl_->files_mu);
    impl_->files.erase(file_id);
  });
}

Status Outbox::release_file(int64_t file_id) {
  return guarded([&] {
    SQLite::Statement q(*impl_->db, sql::kReleaseFile);
    q.bind(1, unix_ms());
    q.bind(2, file_id);
    q.exec();
  });
}

Status Outbox::append(std::span<const Chunk* const> chunks) {
  CountChange counting(impl_->count_mu, impl_->count_epoch);
  int64_t added_rows = 0, added_bytes = 0;
  const bool durable =
      impl_->options.synchronous != config::Synchronous::full &&
      std::any_of(chunks.begin(), chunks.end(), [](const Chunk* c) { return c->durable; });
  Status st = guarded([&] {
    // A record cut by a timer must not be rolled back by a power cut once a
    // sink may have stored it: read again, it would come back longer under the
    // same key, and the destination would drop it as a copy (see Chunk::durable).
    // FULL makes this commit sync the WAL, and with it every earlier commit.
    std::optional<SyncScope> full;
    if (durable) full.emplace(*impl_->db, impl_->options.synchronous);
    SQLite::Transaction tx(*impl_->db);
    SQLite::Statement& ins = *impl_->insert_row;
    for (const Chunk* c : chunks) {
      for (const Line& line : c->lines) {
        ins.bind(7, impl_->next_id++);
        ins.bind(1, c->file_id);
        ins.bind(2, static_cast<int64_t>(c->inode));
        ins.bind(3, line.offset);
        ins.bind(4, line.length);
        ins.bind(5, c->ingest_ms);
        ins.bindNoCopy(6, static_cast<const void*>(line.text.data()),
                       static_cast<int>(line.text.size()));
        ins.exec();
        ins.reset();
        if (impl_->db->getChanges() > 0) {
          ++added_rows;
          added_bytes += static_cast<int64_t>(line.text.size());
        }
      }
      impl_->at("rows-inserted");
      SQLite::Statement& up = *impl_->update_offset;
      up.bind(1, c->next_offset);
      up.bind(2, unix_ms());
      up.bind(3, c->file_id);
      up.exec();
      up.reset();
      if (c->grown_fingerprint) {
        SQLite::Statement& fp = *impl_->update_fingerprint;
        fp.bind(1, to_hex(c->grown_fingerprint->fingerprint));
        fp.bind(2, c->grown_fingerprint->fingerprint_len);
        fp.bind(3, c->file_id);
        fp.exec();
        fp.reset();
      }
      impl_->at("checkpoint-updated");
    }
    impl_->at(durable ? "append-commit-durable" : "append-commit");
    tx.commit();
  });
  // A failed statement leaves its prepared statement mid-step: reset them all.
  if (!st) {
    impl_->insert_row->tryReset();
    impl_->update_offset->tryReset();
    impl_->update_fingerprint->tryReset();
  } else {
    std::lock_guard lock(impl_->count_mu);
    impl_->rows += added_rows;
    impl_->bytes += added_bytes;
  }
  return impl_->track(st);
}

Result<std::vector<LeasedRow>> Outbox::lease(int64_t after_id, int lane, int lanes,
                                             int64_t max_rows, int64_t max_bytes) {
  std::vector<LeasedRow> out;
  SQLite::Statement& q = lanes > 1 ? *impl_->lease_lane : *impl_->lease_all;
  Status status = guarded([&] {
    q.bind(1, after_id);
    q.bind(2, max_rows);
    if (lanes > 1) {
      q.bind(3, static_cast<int64_t>(lanes));
      q.bind(4, static_cast<int64_t>(lane));
    }
    int64_t bytes = 0;
    std::lock_guard lock(impl_->files_mu);
    std::shared_ptr<const FileInfo> last;
    while (q.executeStep()) {
      LeasedRow r;
      r.id = q.getColumn(0).getInt64();
      r.file = q.getColumn(1).getInt64();
      r.offset = q.getColumn(2).getInt64();
      r.length = q.getColumn(3).getInt64();
      r.ingest_ms = q.getColumn(4).getInt64();
      r.attempts = q.getColumn(5).getInt64();
      SQLite::Column payload = q.getColumn(6);
      r.payload.assign(static_cast<const char*>(payload.getBlob()),
                       static_cast<size_t>(payload.getBytes()));
      bytes += static_cast<int64_t>(r.payload.size());
      if (!last || out.empty() || out.back().file != r.file) last = impl_->info(*impl_->reader, r.file);
      r.info = last;
      out.push_back(std::move(r));
      if (bytes >= max_bytes) break;
    }
  });
  q.tryReset();
  if (!status) return failed(std::move(status));
  return out;
}

Status Outbox::ack(std::span<const int64_t> ids, int64_t bytes,
                   const std::pair<std::string, std::string>* sink_state) {
  CountChange counting(impl_->count_mu, impl_->count_epoch);
  int64_t deleted = 0;
  auto attempt = [&] {
    deleted = 0;
    SQLite::Transaction tx(*impl_->db);
    SQLite::Statement& del = *impl_->delete_row;
    for (int64_t id : ids) {
      del.bind(1, id);
      del.exec();
      del.reset();
      deleted += impl_->db->getChanges();
    }
    impl_->at("rows-deleted");
    if (sink_state) {
      SQLite::Statement& put = *impl_->put_state;
      put.bind(1, sink_state->first);
      put.bind(2, sink_state->second);
      put.bind(3, unix_ms());
      put.exec();
      put.reset();
    }
    tx.commit();
  };
  Status st = guarded(attempt);
  if (!st) {
    impl_->delete_row->tryReset();
    impl_->put_state->tryReset();
  }
  if (st.code() == Status::Code::full) {
    // Delivered rows must be deletable even on a full disk, or the outbox
    // never drains: give the reserve back, empty the WAL, try once more.
    bool gave = impl_->give_back_reserve();
    Status cp = impl_->checkpoint();
    spdlog::warn("outbox disk full while deleting {} delivered rows{}; WAL checkpoint: {}; "
                 "trying again", ids.size(),
                 gave ? " (gave back the " + std::to_string(impl_->options.reserve_bytes) +
                            "-byte reserve file)"
                      : std::string(" (no reserve file left)"),
                 cp ? std::string("done") : cp.message());
    st = guarded(attempt);
    if (!st) {
      impl_->delete_row->tryReset();
      impl_->put_state->tryReset();
    }
    if (st.code() == Status::Code::full && !sink_state && ids.size() > 100) {
      // Still too big for the space left: smaller transactions, the WAL
      // emptied after each. Safe without a sink state: a row not deleted yet
      // is only delivered again (and dropped by key).
      int64_t total = 0;
      size_t at = 0;
      Status part = Status::ok();
      while (at < ids.size()) {
        size_t n = std::min<size_t>(100, ids.size() - at);
        int64_t slice = 0;
        part = guarded([&] {
          SQLite::Transaction tx(*impl_->db);
          for (size_t k = at; k < at + n; ++k) {
            impl_->delete_row->bind(1, ids[k]);
            impl_->delete_row->exec();
            impl_->delete_row->reset();
            slice += impl_->db->getChanges();
          }
          tx.commit();
        });
        if (part) total += slice;
        if (!part) {
          impl_->delete_row->tryReset();
          break;
        }
        (void)impl_->checkpoint();
        at += n;
      }
      if (part) {
        st = Status::ok();
        deleted = total;
      } else {
        std::lock_guard lock(impl_->count_mu);
        impl_->rows -= total;   // the slices that did commit; bytes are recounted later
        st = part;
      }
    }
  }
  if (st) {
    {
      std::lock_guard lock(impl_->count_mu);
      impl_->rows -= deleted;
      impl_->bytes -= deleted == static_cast<int64_t>(ids.size()) ? bytes : 0;
      if (impl_->bytes < 0) impl_->bytes = 0;
    }
    impl_->after_write();
  }
  return impl_->track(st);
}

Result<std::vector<int64_t>> Outbox::fail(std::span<const int64_t> ids, std::string_view error,
                                          int64_t max_attempts) {
  std::vector<int64_t> dead;
  Status st = guarded([&] {
    dead.clear();
    SQLite::Transaction tx(*impl_->db);
    SQLite::Statement& q = *impl_->fail_row;
    for (int64_t id : ids) {
      q.bind(1, id);
      q.bind(2, std::string(error));
      q.bind(3, max_attempts);
      while (q.executeStep())
        if (q.getColumn(0).getString() == "dead") dead.push_back(id);
      q.reset();
    }
    tx.commit();
  });
  impl_->fail_row->tryReset();
  if (!impl_->track(st)) return failed(std::move(st));
  return dead;
}

Status Outbox::bury(std::span<const int64_t> ids, std::string_view error) {
  Status st = guarded([&] {
    SQLite::Transaction tx(*impl_->db);
    SQLite::Statement& q = *impl_->bury_row;
    for (int64_t id : ids) {
      q.bind(1, id);
      q.bind(2, std::string(error));
      q.exec();
      q.reset();
    }
    tx.commit();
  });
  impl_->bury_row->tryReset();
  return impl_->track(st);
}

Result<std::vector<bool>> Outbox::rows_exist(const std::vector<std::string>& keys) {
  return guarded_result([&] {
    std::vector<bool> out(keys.size(), false);
    SQLite::Database& db = *impl_->db;
    SQLite::Statement q(db, sql::kRowForKey);
    SQLite::Transaction snapshot(db);   // rolled back at the end: it only reads
    for (size_t i = 0; i < keys.size(); ++i) {
      auto key = parse_record_key(keys[i]);
      if (!key) continue;
      q.bind(1, std::string(key->uid));
      q.bind(2, key->offset);
      out[i] = q.executeStep();
      q.reset();
    }
    return out;
  });
}

Result<std::vector<std::pair<int64_t, bool>>> Outbox::file_rows(int64_t file_id) {
  return guarded_result([&] {
    std::vector<std::pair<int64_t, bool>> out;
    SQLite::Statement q(*impl_->db, sql::kFileRows);
    q.bind(1, file_id);
    while (q.executeStep()) out.emplace_back(q.getColumn(0).getInt64(), q.getColumn(1).getInt() != 0);
    return out;
  });
}

Result<std::optional<std::string>> Outbox::sink_state(const std::string& sink) {
  return guarded_result([&]() -> std::optional<std::string> {
    SQLite::Statement q(*impl_->db, sql::kGetSinkState);
    q.bind(1, sink);
    if (q.executeStep()) return q.getColumn(0).getString();
    return std::nullopt;
  });
}

void Outbox::recount() {
  // Runs beside the writer: a count read while an append or ack commits would
  // overwrite that change (e.g. a batch's deletion, counted twice). The writer
  // makes `count_epoch` odd around its commit and counter update; a count that
  // saw the epoch change is dropped (the next recount tries again).
  uint64_t epoch;
  {
    std::lock_guard lock(impl_->count_mu);
    epoch = impl_->count_epoch;
  }
  if (epoch & 1) return;
  try {
    SQLite::Statement count(impl_->reader ? *impl_->reader : *impl_->db, sql::kBacklog);
    if (count.executeStep()) {
      std::lock_guard lock(impl_->count_mu);
      if (impl_->count_epoch != epoch) return;
      impl_->rows = count.getColumn(0).getInt64();
      impl_->bytes = count.getColumn(1).getInt64();
    }
  } catch (const SQLite::Exception&) {
  }
}

Outbox::Health Outbox::health() const {
  Health h;
  h.errors = impl_->errors.load();
  h.last_error_ms = impl_->last_error_ms.load();
  h.last_ok_ms = impl_->last_ok_ms.load();
  std::lock_guard lock(impl_->health_mu);
  h.last_error = impl_->last_error;
  return h;
}

int64_t Outbox::oldest_pending_ms() {
  std::lock_guard lock(impl_->stats_mu);
  SQLite::Database& conn = impl_->stats_db ? *impl_->stats_db : *impl_->db;
  try {
    SQLite::Statement q(conn, sql::kOldestPending);
    if (q.executeStep()) return q.getColumn(0).getInt64();
  } catch (const SQLite::Exception&) {
  }
  return 0;
}

Status Outbox::set_sink_state(const std::string& sink, const std::string& value) {
  Status st = guarded([&] {
    // Without it after a power cut, a sink that reads its destination back
    // (NATS) would start after the destination's end and send again lines it
    // had sent before the cut.
    SyncScope full(*impl_->db, impl_->options.synchronous);
    SQLite::Statement& put = *impl_->put_state;
    put.bind(1, sink);
    put.bind(2, value);
    put.bind(3, unix_ms());
    put.exec();
  });
  impl_->put_state->tryReset();
  return impl_->track(st);
}

Backlog Outbox::backlog() const {
  if (!impl_->options.read_only) impl_->refresh_space(false);
  return {impl_->rows.load(), impl_->bytes.load(), impl_->disk_low.load(),
          impl_->free_bytes.load()};
}

void Outbox::after_append() {
  if (!impl_->options.read_only) impl_->after_write();
}

void Outbox::maintain() {
  Impl& m = *impl_;
  if (m.options.read_only) return;
  m.refresh_reusable();
  m.refresh_space(true);
  // The reserve still to be made again: free pages the outbox no longer needs
  // are room for it.
  bool want_room = !m.reserve_held.load() && m.options.reserve_bytes > 0 &&
                   m.reusable_bytes.load() > 0 && m.incremental_vacuum;
  if (m.disk_low.load() || want_room ||
      (m.options.min_free_bytes > 0 && m.wal_bytes() > m.options.min_free_bytes / 4)) {
    Status st = m.checkpoint(want_room);
    if (!st) spdlog::debug("outbox WAL checkpoint: {}", st.message());
  }
  if (!m.reserve_held.load() && m.options.reserve_bytes > 0 && !m.disk_low.load() &&
      m.free_bytes.load() - m.reusable_bytes.load() >=
          m.options.min_free_bytes + m.options.reserve_bytes) {
    if (m.make_reserve()) {
      spdlog::info("outbox reserve file {} ({} bytes) made again: space has returned",
                   m.reserve_path, m.options.reserve_bytes);
      m.refresh_space(true);
    }
  }
}

bool Outbox::still_at_path(std::string& why) const {
  if (impl_->opened_ino == 0) return true;
  struct stat st {};
  if (::stat(impl_->options.path.c_str(), &st) != 0) {
    int err = errno;
    if (err != ENOENT) return true;   // cannot tell (e.g. EACCES): only a missing file is certain
    why = "it was deleted";
    return false;
  }
  if (static_cast<uint64_t>(st.st_dev) != impl_->opened_dev ||
      static_cast<uint64_t>(st.st_ino) != impl_->opened_ino) {
    why = "another file is there now (inode " + std::to_string(st.st_ino) + ", tailbox opened " +
          std::to_string(impl_->opened_ino) + ")";
    return false;
  }
  return true;
}

void Outbox::set_fault_hook(std::function<void(std::string_view)> hook) {
  impl_->hook = std::move(hook);
}

Result<Outbox::Summary> Outbox::summary() {
  return guarded_result([&] {
  Summary s;
  SQLite::Database& db = *impl_->db;
  SQLite::Statement counts(db, sql::kCountsByState);
  while (counts.executeStep()) {
    std::string state = counts.getColumn(0).getString();
    if (state == "pending") {
      s.pending = counts.getColumn(1).getInt64();
      s.pending_bytes = counts.getColumn(2).getInt64();
    } else if (state == "dead") {
      s.dead = counts.getColumn(1).getInt64();
    }
  }
  SQLite::Statement oldest(db, sql::kOldestPending);
  if (oldest.executeStep()) s.oldest_pending_ms = oldest.getColumn(0).getInt64();
  SQLite::Statement dead(db, sql::kDeadByError);
  while (dead.executeStep())
    s.dead_by_error.emplace_back(dead.getColumn(0).getString(), dead.getColumn(1).getInt64());
  return s;
  });
}

Result<std::string> Outbox::integrity_check() {
  return guarded_result([&] {
  std::string out;
  SQLite::Statement q(*impl_->db, "PRAGMA integrity_check");
  while (q.executeStep()) {
    if (!out.empty()) out += "\n";
    out += q.getColumn(0).getString();
  }
  return out;
  });
}

}  // namespace tailbox::outbox
