#include "outbox/checkpointer.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace tailbox::outbox {

Checkpointer::Checkpointer(std::string path, int pages)
    : path_(std::move(path)), pages_(std::max(pages, 1)), writer_pages_(4 * pages_) {
  thread_ = std::thread([this] { loop(); });
}

Checkpointer::~Checkpointer() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void Checkpointer::install(sqlite3* writer) { sqlite3_wal_hook(writer, &Checkpointer::on_commit, this); }

void Checkpointer::uninstall(sqlite3* writer) { sqlite3_wal_hook(writer, nullptr, nullptr); }

int64_t Checkpointer::runs() const {
  std::lock_guard lock(mu_);
  return runs_;
}

int64_t Checkpointer::writer_runs() const {
  std::lock_guard lock(mu_);
  return writer_runs_;
}

int Checkpointer::on_commit(void* arg, sqlite3* db, const char* name, int pages) {
  auto* self = static_cast<Checkpointer*>(arg);
  if (pages >= self->writer_pages_.load()) {
    // The thread cannot keep up (or a reader holds the WAL): do what SQLite's
    // own autocheckpoint does, here, in the commit (BUSY while the thread runs
    // one: it is being done).
    int rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    if (rc == SQLITE_OK) {
      std::lock_guard lock(self->mu_);
      ++self->writer_runs_;
    }
    return SQLITE_OK;
  }
  if (pages >= self->pages_) {
    {
      std::lock_guard lock(self->mu_);
      if (self->wanted_) return SQLITE_OK;
      self->wanted_ = true;
    }
    self->cv_.notify_one();
  }
  return SQLITE_OK;
}

void Checkpointer::loop() {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    spdlog::warn("outbox checkpoint thread cannot open {}: {}; the writer checkpoints instead",
                 path_, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    db = nullptr;
    writer_pages_ = pages_;   // as SQLite's own autocheckpoint would
  }
  if (db) sqlite3_exec(db, "PRAGMA cache_size = -64", nullptr, nullptr, nullptr);
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return wanted_ || stop_; });
    if (stop_) break;
    wanted_ = false;
    lock.unlock();
    int rc2 = SQLITE_ERROR;
    if (db) {
      std::lock_guard run(run_mu_);
      rc2 = sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      if (rc2 != SQLITE_OK && rc2 != SQLITE_BUSY)
        spdlog::debug("outbox WAL checkpoint (thread): {}", sqlite3_errmsg(db));
    }
    lock.lock();
    if (rc2 == SQLITE_OK) ++runs_;
  }
  lock.unlock();
  sqlite3_close(db);
}

}  // namespace tailbox::outbox
