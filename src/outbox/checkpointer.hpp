// Checkpointer: copies the outbox's WAL back into the database file on a
// thread of its own, so the writer (the reader's appends, the acks) does not
// wait for it.
//
// SQLite checkpoints by default in the connection that commits, inside its
// commit, once the WAL holds wal_autocheckpoint pages. Here the writer's commit
// hook only wakes this thread, which runs a PASSIVE checkpoint on its own
// connection: it copies pages while the writer goes on, never blocks it, and
// is as durable as SQLite's own (the WAL keeps every frame until copied and
// synced). When the writer is faster than the copying, so that the WAL could
// never start over, the writer checkpoints itself once the WAL holds
// `writer_pages` (only what the thread has not copied yet is left to copy).
//
// Thread-safety: install() once, on the writer's thread, before writes;
// the destructor stops the thread (after its current checkpoint).
#pragma once

#include <sqlite3.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace tailbox::outbox {

class Checkpointer {
 public:
  // path: the outbox; pages: WAL pages that wake the thread.
  Checkpointer(std::string path, int pages);
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Replaces the writer's automatic checkpoint with this one; uninstall()
  // puts none back (before the writer closes).
  void install(sqlite3* writer);
  void uninstall(sqlite3* writer);

  // Keeps the thread from checkpointing while held, after its current run:
  // a checkpoint of the writer's own (which SQLite refuses at once while
  // another runs) takes this first.
  std::unique_lock<std::mutex> hold() { return std::unique_lock<std::mutex>(run_mu_); }

  // Checkpoints completed by the thread, and by the writer (WAL too far behind).
  int64_t runs() const;
  int64_t writer_runs() const;

 private:
  static int on_commit(void* self, sqlite3* db, const char* name, int pages);
  void loop();

  std::string path_;
  int pages_;
  std::atomic<int> writer_pages_;   // pages_ if the thread has no connection
  std::mutex run_mu_;               // held by a checkpoint run on the thread
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool wanted_ = false;
  bool stop_ = false;
  int64_t runs_ = 0, writer_runs_ = 0;
  std::thread thread_;
};

}  // namespace tailbox::outbox
