// Outbox: the SQLite database that holds every line between reading and
// confirmed delivery, plus each tracked file's read checkpoint.
//
// The guarantees live here:
//   - append() commits a chunk's rows AND the file's new read offset in one
//     transaction; UNIQUE(file, inode, offset) refuses a second copy of a line;
//   - ack() deletes rows (and stores the sink's state) in one transaction, and is
//     called only after the sink confirmed them;
//   - rows are never dropped: failures only count attempts or mark rows dead.
//
// One process owns an outbox: open() takes an exclusive lock on "<path>.lock".
// Leases are kept in memory by the dispatcher, not in the database.
//
// Thread-safety: call the writer methods from one thread or strand at a time,
// and lease() from one (other) thread or strand at a time: it has its own
// read connection, so leasing runs beside appends and acks (AsyncOutbox has a
// strand for each). backlog() may be read from any thread.
// One error contract: every method that can fail returns a Status or a
// Result<T> (core/status.hpp), both [[nodiscard]]; SQLite exceptions never
// leave this class. Only open() throws (OutboxError), at start-up.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "core/status.hpp"
#include "core/file_identity.hpp"
#include "core/line.hpp"

namespace tailbox::outbox {

class OutboxError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TrackedFile {
  int64_t id = 0;
  std::string source;
  std::string path;
  FileIdentity identity;   // size and mtime are not stored
  std::string uid;
  int64_t read_offset = 0;
  bool released = false;
};

// The rows read from one file in one go, and where reading continues after them.
struct Chunk {
  int64_t file_id = 0;
  uint64_t inode = 0;
  int64_t next_offset = 0;               // the file's checkpoint once committed
  int64_t ingest_ms = 0;
  std::vector<Line> lines;         // views into memory the caller keeps alive
  std::optional<FileIdentity> grown_fingerprint;  // store a longer fingerprint
  // The chunk holds a record whose end a timer decided, not a line terminator
  // (partial_line_timeout, multiline.timeout, the last bytes of a rotated or
  // truncated file, a stalled .gz). Read again after a power cut, its offset
  // could start a longer record: its key must never be reused for other bytes,
  // so its commit is made durable (synchronous = FULL) before it can be leased.
  bool durable = false;
};

// What a leased row's file is, shared by all rows of that file. Immutable.
struct FileInfo {
  std::string source;
  std::string path;
  std::string uid;
};

// A row's name: its primary key (file, inode, offset). `joins_previous`: the
// row that came before it in the same lease() result is the row just before
// it in the outbox (same file and inode, nothing between them, dead rows
// included), so both are deleted by one range DELETE when acknowledged together.
struct RowKey {
  int64_t file = 0;
  int64_t inode = 0;
  int64_t offset = 0;
  bool joins_previous = false;   // not part of the row's identity
  friend bool operator==(const RowKey& a, const RowKey& b) {
    return a.file == b.file && a.inode == b.inode && a.offset == b.offset;
  }
};
struct RowKeyHash {
  size_t operator()(const RowKey& k) const noexcept {
    uint64_t h = static_cast<uint64_t>(k.file) * 0x9E3779B97F4A7C15ULL;
    h ^= static_cast<uint64_t>(k.inode) + 0x632BE59BD9B4E019ULL + (h << 6) + (h >> 2);
    h ^= static_cast<uint64_t>(k.offset) + 0x85EBCA77C2B2AE63ULL + (h << 6) + (h >> 2);
    return static_cast<size_t>(h);
  }
};

// Where leasing goes on from, for one lane: per file, the last key handed out
// (rows at or before it are in flight or delivered), and the file to start at
// next, so that files take turns. Kept by the caller (the dispatcher), one per
// lane; reset() makes the next lease look at every row again.
struct LeaseCursor {
  std::unordered_map<int64_t, std::pair<int64_t, int64_t>> after;   // file -> (inode, offset)
  int64_t next_file = 0;
  void reset() {
    after.clear();
    next_file = 0;
  }
};

struct LeasedRow {
  int64_t file = 0;
  int64_t inode = 0;
  int64_t offset = 0;
  bool joins_previous = false;   // see RowKey
  int64_t length = 0;
  int64_t ingest_ms = 0;
  int64_t attempts = 0;
  std::string payload;
  std::shared_ptr<const FileInfo> info;
  RowKey key() const { return RowKey{file, inode, offset, joins_previous}; }
};

struct Backlog {
  int64_t rows = 0;    // pending + dead
  int64_t bytes = 0;   // payload bytes
  // The outbox's file system is below OpenOptions::min_free_bytes (with
  // hysteresis: it clears above min_free_bytes * 5/4 plus a reserve still to
  // be made). Reading must pause so that acks can always commit.
  bool disk_low = false;
  int64_t free_bytes = -1;   // as last measured (statvfs f_bavail, plus free pages of an outbox
                             // without auto_vacuum); -1: unknown
};

struct OpenOptions {
  std::string path;
  config::Synchronous synchronous = config::Synchronous::normal;
  bool read_only = false;   // for `tailbox status`: no lock, no migration, no writes
  int64_t min_free_bytes = 0;   // see Backlog::disk_low; 0: never low
  int64_t reserve_bytes = 0;    // size of "<path>.reserve"; 0: no reserve file
};

class Outbox {
 public:
  // Opens (creating if needed, mode 0600) and migrates the outbox. Throws
  // OutboxError when it is locked by another process, damaged or unreadable.
  static std::unique_ptr<Outbox> open(const OpenOptions& options);
  ~Outbox();
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  const std::string& path() const;

  Result<std::vector<TrackedFile>> tracked_files();
  // Adds a file and returns it with its id and a uid no earlier file had.
  Result<TrackedFile> add_file(const std::string& source, const std::string& path,
                               const FileIdentity& identity, int64_t read_offset);
  // A file to add with add_files().
  struct NewFile {
    std::string source, path;
    FileIdentity identity;
    int64_t read_offset = 0;
  };
  // Adds many files in one transaction, durable (synchronous = FULL) before it
  // returns, as add_file does for one: all of them or none. The result is in
  // the order of `files`.
  Result<std::vector<TrackedFile>> add_files(std::span<const NewFile> files);
  Status update_path(int64_t file_id, const std::string& path);
  // The file is now found by another [[source]] (renamed, or its globs moved):
  // its uid and offset stay, its rows carry the new source name from now on.
  Status update_source(int64_t file_id, const std::string& source);
  Status release_file(int64_t file_id);

  // Commits the chunks' rows and checkpoints in one transaction, or nothing.
  Status append(std::span<const Chunk* const> chunks);

  // Up to max_rows pending rows (and about max_bytes) after `cursor`, and
  // moves the cursor past them. Files take turns: a lease starts at the file
  // after the one the last lease ended in, takes that file's rows in key order
  // (so each file's rows come in the order they were read), and goes on to
  // the next files while there is room. With lanes > 1 only files with
  // file % lanes == lane. Rows for which `skip` returns true (already in
  // flight) are passed over. May run beside the writer methods; sees every
  // transaction committed before it starts.
  Result<std::vector<LeasedRow>> lease(LeaseCursor& cursor, int lane, int lanes, int64_t max_rows,
                                       int64_t max_bytes,
                                       const std::function<bool(const RowKey&)>& skip = {});
  // Deletes delivered rows; with `sink_state`, stores (sink, value) in the same
  // transaction. Runs of rows that joined their predecessor (RowKey::
  // joins_previous, as lease() returned them, in that order) go as one range
  // DELETE each; a range that does not delete exactly its rows is rolled back
  // and the rows are deleted one by one. `bytes` is the rows' payload size,
  // for the backlog counter. A delete that finds the disk full gives the
  // reserve file back, checkpoints the WAL, and tries once more.
  Status ack(std::span<const RowKey> rows, int64_t bytes,
             const std::pair<std::string, std::string>* sink_state = nullptr);
  // Counts a failed attempt on each row and keeps `error`; rows that reach
  // max_attempts (0: never) become dead: returns them.
  Result<std::vector<RowKey>> fail(std::span<const RowKey> rows, std::string_view error,
                                   int64_t max_attempts);
  // Marks rows dead at once (the sink rejected them).
  Status bury(std::span<const RowKey> rows, std::string_view error);

  // For each idempotency key "<host_id>/<file uid>/<offset>": whether its line
  // is still to be delivered from this outbox, read in one snapshot: its row
  // is there (pending or dead), or its file is followed and its checkpoint is
  // at or before the offset (not read yet: after a power cut rolled back the
  // row with the checkpoint, the line is read again under the same key). A
  // sink that finds such a key already at the destination acknowledges the
  // line without sending it again. The host
  // part is not checked (an outbox belongs to one host); a key that does not
  // parse is false. Reads on the writer connection: call it where the writer
  // methods may be called, or on a read-only Outbox of its own (any thread).
  Result<std::vector<bool>> rows_exist(const std::vector<std::string>& keys);

  // The rows of file `file_id` still in the outbox: (offset, dead), by offset.
  // For `tailbox audit`; any connection (read-only outboxes too).
  Result<std::vector<std::pair<int64_t, bool>>> file_rows(int64_t file_id);

  // The state a sink committed with its last ack; nullopt if none yet.
  Result<std::optional<std::string>> sink_state(const std::string& sink);
  // A sink's first state (what open() returned). Committed durably
  // (synchronous = FULL): a read-back after a power cut needs it.
  Status set_sink_state(const std::string& sink, const std::string& value);
  // Rows, bytes and free space. Measures free space (statvfs) at most once a millisecond.
  Backlog backlog() const;

  // Disk space housekeeping; call where the writer methods may be called,
  // e.g. every second. Measures free space; while it is low, checkpoints the
  // WAL into the database and truncates it (so the WAL does not eat the disk);
  // makes "<path>.reserve" again once there is room for it above min_free_bytes.
  void maintain();
  // Call after append() (where the writer methods may be called): while space
  // is short, or the WAL has grown past a quarter of min_free_bytes, the WAL
  // is checkpointed and truncated (a WAL that readers keep from being reset
  // would otherwise eat the headroom).
  void after_append();
  // Whether the outbox's path still names the database this Outbox opened (not
  // deleted, not replaced by another file). Safe from any thread. On false,
  // `why` says what was found.
  bool still_at_path(std::string& why) const;
  // Counts the backlog again (rows purged or added by hand, e.g. with
  // tools/replay --purge). Call where lease() may be called.
  void recount();

  // For metrics and /readyz; safe from any thread.
  struct Health {
    int64_t errors = 0;          // failed transactions since start
    int64_t last_error_ms = 0;   // when the last one failed (0: never)
    int64_t last_ok_ms = 0;      // when a write last succeeded
    std::string last_error;
    int64_t checkpoints = 0;          // WAL checkpoints run by the checkpoint thread
    int64_t writer_checkpoints = 0;   // ... by the writer, the thread being behind
  };
  Health health() const;
  // Ingest time of the oldest pending row (0 if none). Safe from any thread:
  // it has its own read connection.
  int64_t oldest_pending_ms();

  // Test seam: called between the statements of a transaction with a stage name;
  // a hook that throws simulates a crash or an I/O error at that point.
  void set_fault_hook(std::function<void(std::string_view stage)> hook);

  // Read-only queries for `tailbox status` and tests.
  struct Summary {
    int64_t pending = 0, dead = 0, pending_bytes = 0;
    int64_t oldest_pending_ms = 0;   // ingest time of the oldest pending row, 0 if none
    std::vector<std::pair<std::string, int64_t>> dead_by_error;
  };
  Result<Summary> summary();
  // PRAGMA integrity_check: "ok" or the problems found.
  Result<std::string> integrity_check();

 private:
  struct Impl;
  explicit Outbox(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tailbox::outbox
