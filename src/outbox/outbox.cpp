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
#include <optional>

#include "core/record_key.hpp"
#include "outbox/outbox_impl.hpp"

namespace tailbox::outbox {

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
    SQLite::Statement& one = *impl_->insert_row;
    SQLite::Statement& block = *impl_->insert_rows;
    for (const Chunk* c : chunks) {
      const size_t n = c->lines.size();
      auto bind_line = [&](SQLite::Statement& ins, int first, const Line& line) {
        ins.bind(first, c->file_id);
        ins.bind(first + 1, static_cast<int64_t>(c->inode));
        ins.bind(first + 2, line.offset);
        ins.bind(first + 3, line.length);
        ins.bind(first + 4, c->ingest_ms);
        ins.bindNoCopy(first + 5, static_cast<const void*>(line.text.data()),
                       static_cast<int>(line.text.size()));
      };
      size_t i = 0;
      // Whole blocks of rows per statement, each in a savepoint. A block that
      // meets rows already there (the key refused a second copy) is undone and
      // the rest of the chunk inserted row by row, so that exactly the rows
      // added are counted.
      for (; i + sql::kInsertBlock <= n; i += sql::kInsertBlock) {
        for (int k = 0; k < sql::kInsertBlock; ++k) bind_line(block, 6 * k + 1, c->lines[i + k]);
        impl_->step(*impl_->savepoint);
        block.exec();
        block.reset();
        if (impl_->db->getChanges() == sql::kInsertBlock) {
          impl_->step(*impl_->release_savepoint);
          added_rows += sql::kInsertBlock;
          for (int k = 0; k < sql::kInsertBlock; ++k)
            added_bytes += static_cast<int64_t>(c->lines[i + k].text.size());
          continue;
        }
        impl_->step(*impl_->rollback_savepoint);
        impl_->step(*impl_->release_savepoint);
        break;
      }
      for (; i < n; ++i) {
        const Line& line = c->lines[i];
        bind_line(one, 1, line);
        one.exec();
        one.reset();
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
    impl_->insert_rows->tryReset();
    impl_->savepoint->tryReset();
    impl_->release_savepoint->tryReset();
    impl_->rollback_savepoint->tryReset();
    impl_->update_offset->tryReset();
    impl_->update_fingerprint->tryReset();
  } else {
    std::lock_guard lock(impl_->count_mu);
    impl_->rows += added_rows;
    impl_->bytes += added_bytes;
  }
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
  if (impl_->checkpointer) {
    h.checkpoints = impl_->checkpointer->runs();
    h.writer_checkpoints = impl_->checkpointer->writer_runs();
  }
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

void Outbox::set_fault_hook(std::function<void(std::string_view)> hook) {
  impl_->hook = std::move(hook);
}

Result<Outbox::Summary> Outbox::summary() {
  return guarded_result([&] {
  Summary s;
  SQLite::Database& db = *impl_->db;
  SQLite::Statement counts(db, sql::kCountsByState);
  if (counts.executeStep()) {
    s.pending = counts.getColumn(0).getInt64();
    s.pending_bytes = counts.getColumn(1).getInt64();
    s.dead = counts.getColumn(2).getInt64();
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
