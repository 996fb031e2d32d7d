// Outbox::open: checks, locking, creation and migration of the outbox file.
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
#include <cerrno>
#include <cstring>

#include "outbox/outbox_impl.hpp"
#include "schema_sql.hpp"

namespace tailbox::outbox {
namespace {

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
    // 1 MiB: the hot ends of the B-tree (appends at one end, deletes at the
    // other) are a few hundred pages; more only raises peak RSS.
    db.exec("PRAGMA cache_size = -1024");
    int64_t checkpoint_pages = 1000;   // SQLite's default
    if (impl->options.min_free_bytes > 0) {
      // A checkpoint needs free space for the WAL's new pages (the database
      // grows by them): keep the WAL well below the headroom kept free.
      int64_t quarter = impl->options.min_free_bytes / 4;
      checkpoint_pages = std::clamp<int64_t>(quarter / 4096, 16, 1000);
      db.exec("PRAGMA wal_autocheckpoint = " + std::to_string(checkpoint_pages));
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

    // Checkpoints on a thread of their own from here on (see checkpointer.hpp);
    // the writer still checkpoints itself at 4x the pages if the thread lags,
    // and after_write() keeps the WAL small when disk space is short.
    impl->checkpointer = std::make_unique<Checkpointer>(path, static_cast<int>(checkpoint_pages));
    impl->checkpointer->install(db.getHandle());

    impl->salt = db.execAndGet(sql::kInstanceSalt).getString();
    impl->insert_row = std::make_unique<SQLite::Statement>(db, sql::kInsertRow);
    impl->insert_rows = std::make_unique<SQLite::Statement>(db, sql::insert_rows_sql(sql::kInsertBlock));
    impl->savepoint = std::make_unique<SQLite::Statement>(db, "SAVEPOINT block");
    impl->release_savepoint = std::make_unique<SQLite::Statement>(db, "RELEASE block");
    impl->rollback_savepoint = std::make_unique<SQLite::Statement>(db, "ROLLBACK TO block");
    impl->update_offset = std::make_unique<SQLite::Statement>(db, sql::kUpdateOffset);
    impl->update_fingerprint = std::make_unique<SQLite::Statement>(db, sql::kUpdateFingerprint);
    impl->reader = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READONLY | SQLite::OPEN_NOMUTEX, 5000);
    impl->reader->exec("PRAGMA cache_size = -512");   // reset after every write anyway (WAL)
    impl->next_file = std::make_unique<SQLite::Statement>(*impl->reader, sql::kNextFile);
    impl->lease_file = std::make_unique<SQLite::Statement>(*impl->reader, sql::kLeaseFile);
    impl->stats_db = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READONLY | SQLite::OPEN_NOMUTEX, 5000);
    impl->stats_db->exec("PRAGMA cache_size = -256");
    impl->delete_range = std::make_unique<SQLite::Statement>(db, sql::kDeleteRange);
    impl->delete_row = std::make_unique<SQLite::Statement>(db, sql::kDeleteRow);
    impl->fail_row = std::make_unique<SQLite::Statement>(db, sql::kFailRow);
    impl->bury_row = std::make_unique<SQLite::Statement>(db, sql::kBuryRow);
    impl->put_state = std::make_unique<SQLite::Statement>(db, sql::kPutSinkState);

    SQLite::Statement count(db, sql::kBacklog);
    if (count.executeStep()) {
      impl->rows = count.getColumn(0).getInt64();
      impl->bytes = count.getColumn(1).getInt64();
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

}  // namespace tailbox::outbox
