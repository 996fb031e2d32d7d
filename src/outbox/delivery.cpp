// Outbox delivery side: leasing rows to workers, deleting delivered rows (as
// ranges), counting failures and dead-lettering.
#include "outbox/outbox.hpp"

#include <limits>
#include <stdexcept>

#include "outbox/outbox_impl.hpp"

namespace tailbox::outbox {

namespace {

// Binds a row's key to parameters 1-3 (file, inode, offset) of `q`.
void bind_key(SQLite::Statement& q, const RowKey& key) {
  q.bind(1, key.file);
  q.bind(2, key.inode);
  q.bind(3, key.offset);
}

}  // namespace

Result<std::vector<LeasedRow>> Outbox::lease(LeaseCursor& cursor, int lane, int lanes,
                                             int64_t max_rows, int64_t max_bytes,
                                             const std::function<bool(const RowKey&)>& skip) {
  std::vector<LeasedRow> out;
  SQLite::Statement& next = *impl_->next_file;
  SQLite::Statement& q = *impl_->lease_file;
  Status status = guarded([&] {
    // One read transaction: every file is seen in the same snapshot.
    SQLite::Transaction snapshot(*impl_->reader);
    int64_t bytes = 0;
    std::lock_guard lock(impl_->files_mu);
    const int64_t start = cursor.next_file;
    int64_t after_file = start - 1;   // walk files > after_file, then wrap to the front once
    bool wrapped = false;
    // Rows read but not handed out (dead ones) count too, so that one lease's
    // work is bounded whatever the outbox holds.
    int64_t budget = 4 * max_rows + 1024;
    while (static_cast<int64_t>(out.size()) < max_rows && bytes < max_bytes && budget > 0) {
      next.bind(1, after_file);
      int64_t file = -1;
      if (next.executeStep()) file = next.getColumn(0).getInt64();
      next.reset();
      if (file < 0 || (wrapped && file >= start)) {
        if (wrapped || start <= 0) break;
        wrapped = true;   // from the first file up to the one this lease started at
        after_file = std::numeric_limits<int64_t>::min();
        continue;
      }
      after_file = file;
      if (lanes > 1 && file % lanes != lane) continue;
      auto pos = cursor.after.try_emplace(file, std::numeric_limits<int64_t>::min(),
                                          std::numeric_limits<int64_t>::min()).first;
      q.bind(1, file);
      q.bind(2, pos->second.first);
      q.bind(3, pos->second.second);
      q.bind(4, max_rows - static_cast<int64_t>(out.size()));
      std::shared_ptr<const FileInfo> info;
      bool joins = false;   // the first row read after the cursor starts a run
      bool took = false;
      while (q.executeStep()) {
        --budget;
        int64_t inode = q.getColumn(0).getInt64();
        int64_t offset = q.getColumn(1).getInt64();
        pos->second = {inode, offset};
        // Dead, or in flight already: not handed out, and it breaks the run.
        if (q.getColumn(6).getInt() != 0 || (skip && skip(RowKey{file, inode, offset}))) {
          joins = false;
          continue;
        }
        LeasedRow r;
        r.file = file;
        r.inode = inode;
        r.offset = offset;
        r.joins_previous = joins && !out.empty() && out.back().file == file &&
                           out.back().inode == inode;
        r.length = q.getColumn(2).getInt64();
        r.ingest_ms = q.getColumn(3).getInt64();
        r.attempts = q.getColumn(4).getInt64();
        SQLite::Column payload = q.getColumn(5);
        r.payload.assign(static_cast<const char*>(payload.getBlob()),
                         static_cast<size_t>(payload.getBytes()));
        bytes += static_cast<int64_t>(r.payload.size());
        if (!info) info = impl_->info(*impl_->reader, file);
        r.info = info;
        out.push_back(std::move(r));
        joins = true;
        took = true;
        if (bytes >= max_bytes) break;
      }
      q.reset();
      // The next lease starts at the next file: files take turns.
      if (took) cursor.next_file = file + 1;
    }
  });
  next.tryReset();
  q.tryReset();
  if (!status) return failed(std::move(status));
  return out;
}

namespace {

// Thrown inside an ack's transaction when a range did not delete exactly its
// rows: the transaction is rolled back and the rows are deleted one by one.
struct RangeMismatch : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace

// Deletes `rows` in the open transaction: each run of rows that joined its
// predecessor as one range (or, with !ranges, every row alone). Returns the rows deleted.
int64_t Outbox::Impl::delete_rows(std::span<const RowKey> rows, bool ranges) {
  int64_t deleted = 0;
  SQLite::Database& conn = *db;
  for (size_t i = 0; i < rows.size();) {
    size_t j = i + 1;
    if (ranges)
      while (j < rows.size() && rows[j].joins_previous && rows[j].file == rows[i].file &&
             rows[j].inode == rows[i].inode && rows[j].offset > rows[j - 1].offset)
        ++j;
    if (j - i == 1) {
      SQLite::Statement& del = *delete_row;
      bind_key(del, rows[i]);
      del.exec();
      del.reset();
      deleted += conn.getChanges();
    } else {
      SQLite::Statement& del = *delete_range;
      bind_key(del, rows[i]);
      del.bind(4, rows[j - 1].offset);
      del.exec();
      del.reset();
      int64_t n = conn.getChanges();
      if (n != static_cast<int64_t>(j - i))
        throw RangeMismatch("a range of " + std::to_string(j - i) + " delivered rows of file " +
                            std::to_string(rows[i].file) + " (offsets " +
                            std::to_string(rows[i].offset) + ".." + std::to_string(rows[j - 1].offset) +
                            ") held " + std::to_string(n) + " rows");
      deleted += n;
    }
    i = j;
  }
  return deleted;
}

Status Outbox::ack(std::span<const RowKey> ids, int64_t bytes,
                   const std::pair<std::string, std::string>* sink_state) {
  CountChange counting(impl_->count_mu, impl_->count_epoch);
  int64_t deleted = 0;
  bool ranges = true;
  auto attempt = [&] {
    deleted = 0;
    SQLite::Transaction tx(*impl_->db);
    try {
      deleted = impl_->delete_rows(ids, ranges);
    } catch (const RangeMismatch& e) {
      // Never expected (rows are only added after a file's last row): the
      // transaction is rolled back and every row deleted by its own key.
      impl_->delete_range->tryReset();
      spdlog::error("outbox: {}; deleting them one by one instead", e.what());
      ranges = false;
      throw;
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
  if (!st && !ranges) st = guarded(attempt);   // after a RangeMismatch: row by row
  if (!st) {
    impl_->delete_range->tryReset();
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
      impl_->delete_range->tryReset();
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
          slice = impl_->delete_rows(ids.subspan(at, n), false);
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

Result<std::vector<RowKey>> Outbox::fail(std::span<const RowKey> ids, std::string_view error,
                                         int64_t max_attempts) {
  std::vector<RowKey> dead;
  Status st = guarded([&] {
    dead.clear();
    SQLite::Transaction tx(*impl_->db);
    SQLite::Statement& q = *impl_->fail_row;
    for (const RowKey& id : ids) {
      bind_key(q, id);
      q.bind(4, std::string(error));
      q.bind(5, max_attempts);
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

Status Outbox::bury(std::span<const RowKey> ids, std::string_view error) {
  Status st = guarded([&] {
    SQLite::Transaction tx(*impl_->db);
    SQLite::Statement& q = *impl_->bury_row;
    for (const RowKey& id : ids) {
      bind_key(q, id);
      q.bind(4, std::string(error));
      q.exec();
      q.reset();
    }
    tx.commit();
  });
  impl_->bury_row->tryReset();
  return impl_->track(st);
}

}  // namespace tailbox::outbox
