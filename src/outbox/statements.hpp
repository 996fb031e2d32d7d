// Every SQL statement the relay runs against the outbox, named, in one place.
// The tables are described in schema/*.sql (the outbox table: 003_outbox_one_btree.sql).
#pragma once

#include <string>

namespace tailbox::outbox::sql {

// The (file, inode, offset) primary key swallows a second copy of a line, silently.
inline constexpr const char* kInsertRow =
    "INSERT INTO outbox (file, inode, offset, length, ingest_time, payload) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (file, inode, offset) DO NOTHING";

// The same for kInsertBlock rows at once (one statement step instead of 32):
// parameters 6*i+1 .. 6*i+6 are row i's, in kInsertRow's order.
inline constexpr int kInsertBlock = 32;
inline std::string insert_rows_sql(int rows) {
  std::string sql = "INSERT INTO outbox (file, inode, offset, length, ingest_time, payload) VALUES ";
  for (int i = 0; i < rows; ++i) {
    int p = 6 * i;
    sql += (i ? ",(?" : "(?") + std::to_string(p + 1);
    for (int k = 2; k <= 6; ++k) sql += ",?" + std::to_string(p + k);
    sql += ")";
  }
  return sql + " ON CONFLICT (file, inode, offset) DO NOTHING";
}

inline constexpr const char* kUpdateOffset =
    "UPDATE files SET read_offset = ?1, last_seen = ?2 WHERE id = ?3";

inline constexpr const char* kUpdateFingerprint =
    "UPDATE files SET fingerprint = ?1, fingerprint_len = ?2 WHERE id = ?3";

// Leasing walks the files that have rows, in turn (the next file id after
// ?1: one seek in the primary key per file), and reads each file's rows in key
// order after a cursor. Dead rows are read too: they break a run of rows that
// one range DELETE may remove. Leases themselves live in memory.
inline constexpr const char* kNextFile =
    "SELECT file FROM outbox WHERE file > ?1 ORDER BY file LIMIT 1";

inline constexpr const char* kLeaseFile =
    "SELECT inode, offset, length, ingest_time, attempts, payload, state = 'dead' FROM outbox "
    "WHERE file = ?1 AND (inode, offset) > (?2, ?3) ORDER BY inode, offset LIMIT ?4";

// A run of consecutive rows of one file, delivered: one range.
inline constexpr const char* kDeleteRange =
    "DELETE FROM outbox WHERE file = ?1 AND inode = ?2 AND offset BETWEEN ?3 AND ?4";

inline constexpr const char* kDeleteRow =
    "DELETE FROM outbox WHERE file = ?1 AND inode = ?2 AND offset = ?3";

inline constexpr const char* kFailRow =
    "UPDATE outbox SET attempts = attempts + 1, last_error = ?4, "
    "state = CASE WHEN ?5 > 0 AND attempts + 1 >= ?5 THEN 'dead' ELSE state END "
    "WHERE file = ?1 AND inode = ?2 AND offset = ?3 RETURNING state";

inline constexpr const char* kBuryRow =
    "UPDATE outbox SET attempts = attempts + 1, last_error = ?4, state = 'dead' "
    "WHERE file = ?1 AND inode = ?2 AND offset = ?3";

inline constexpr const char* kPutSinkState =
    "INSERT INTO sink_state (sink, value, updated) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (sink) DO UPDATE SET value = excluded.value, updated = excluded.updated";

inline constexpr const char* kGetSinkState = "SELECT value FROM sink_state WHERE sink = ?1";

inline constexpr const char* kBacklog =
    "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox";

// Whether a key's line ("<host>/<file uid>/<offset>") is still to be
// delivered from this outbox: its row is there (pending or dead; through
// files.uid, then the (file, inode, offset) primary key), or its file is
// followed and has not been read up to it (a power cut rolled back its row and
// the checkpoint together: the line will be read again, under the same key).
inline constexpr const char* kRowForKey =
    "SELECT 1 FROM files f WHERE f.uid = ?1 AND ((f.state = 'active' AND ?2 >= f.read_offset) "
    "OR EXISTS (SELECT 1 FROM outbox o WHERE o.file = f.id AND o.inode = f.inode "
    "AND o.offset = ?2)) LIMIT 1";

inline constexpr const char* kFileRows =
    "SELECT offset, state = 'dead' FROM outbox WHERE file = ?1 ORDER BY offset";

inline constexpr const char* kFileInfo = "SELECT source, path, uid FROM files WHERE id = ?1";

inline constexpr const char* kTrackedFiles =
    "SELECT id, source, path, dev, inode, fingerprint, fingerprint_len, uid, read_offset, state "
    "FROM files ORDER BY id";

inline constexpr const char* kUidTaken = "SELECT 1 FROM files WHERE uid = ?1";

inline constexpr const char* kInsertFile =
    "INSERT INTO files (source, path, dev, inode, fingerprint, fingerprint_len, uid, "
    "read_offset, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)";

inline constexpr const char* kUpdatePath =
    "UPDATE files SET path = ?1, last_seen = ?2 WHERE id = ?3";

inline constexpr const char* kUpdateSource =
    "UPDATE files SET source = ?1, last_seen = ?2 WHERE id = ?3";

inline constexpr const char* kInstanceSalt = "SELECT value FROM meta WHERE key = 'instance'";

inline constexpr const char* kReleaseFile =
    "UPDATE files SET state = 'released', last_seen = ?1 WHERE id = ?2";

// One pass, no GROUP BY: grouping sorted every row with its payload in memory
// (temp_store = MEMORY): ~125 MiB at the stop of a relay with 1M rows waiting.
inline constexpr const char* kCountsByState =
    "SELECT coalesce(sum(state = 'pending'), 0), "
    "coalesce(sum(CASE WHEN state = 'pending' THEN length(payload) END), 0), "
    "coalesce(sum(state = 'dead'), 0) FROM outbox";

// Lines of a file are stored in the order they were read: the oldest pending
// line is the first pending row of some file (one seek per file with rows).
inline constexpr const char* kOldestPending =
    "SELECT min((SELECT o.ingest_time FROM outbox o WHERE o.file = f.id AND o.state = 'pending' "
    "ORDER BY o.inode, o.offset LIMIT 1)) FROM files f";

inline constexpr const char* kDeadByError =
    "SELECT coalesce(last_error, '(none)'), count(*) FROM outbox WHERE state = 'dead' "
    "GROUP BY last_error ORDER BY count(*) DESC";

}  // namespace tailbox::outbox::sql
