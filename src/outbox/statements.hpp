// Every SQL statement the relay runs against the outbox, named, in one place.
// The tables are described in schema/001_initial.sql.
#pragma once

namespace tailbox::outbox::sql {

// Only the (file, inode, offset) key may swallow a row, silently: a clash on
// the id (never expected) must fail loudly rather than drop a line.
inline constexpr const char* kInsertRow =
    "INSERT INTO outbox (id, file, inode, offset, length, ingest_time, payload) "
    "VALUES (?7, ?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (file, inode, offset) DO NOTHING";

inline constexpr const char* kUpdateOffset =
    "UPDATE files SET read_offset = ?1, last_seen = ?2 WHERE id = ?3";

inline constexpr const char* kUpdateFingerprint =
    "UPDATE files SET fingerprint = ?1, fingerprint_len = ?2 WHERE id = ?3";

// Leasing reads in id order from a cursor; leases themselves live in memory.
inline constexpr const char* kLeaseAll =
    "SELECT id, file, offset, length, ingest_time, attempts, payload FROM outbox "
    "WHERE id > ?1 AND state = 'pending' ORDER BY id LIMIT ?2";

// ordering = "per_file": lane k takes the files with file % lanes == k.
inline constexpr const char* kLeaseLane =
    "SELECT id, file, offset, length, ingest_time, attempts, payload FROM outbox "
    "WHERE id > ?1 AND state = 'pending' AND file % ?3 = ?4 ORDER BY id LIMIT ?2";

inline constexpr const char* kDeleteRow = "DELETE FROM outbox WHERE id = ?1";

inline constexpr const char* kFailRow =
    "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, "
    "state = CASE WHEN ?3 > 0 AND attempts + 1 >= ?3 THEN 'dead' ELSE state END "
    "WHERE id = ?1 RETURNING state";

inline constexpr const char* kBuryRow =
    "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, state = 'dead' WHERE id = ?1";

inline constexpr const char* kPutSinkState =
    "INSERT INTO sink_state (sink, value, updated) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (sink) DO UPDATE SET value = excluded.value, updated = excluded.updated";

inline constexpr const char* kGetSinkState = "SELECT value FROM sink_state WHERE sink = ?1";

inline constexpr const char* kBacklog =
    "SELECT count(*), coalesce(sum(length(payload)), 0), coalesce(max(id), 0) FROM outbox";

// Whether a key's line ("<host>/<file uid>/<offset>") is still to be
// delivered from this outbox: its row is there (pending or dead; through
// files.uid, then the UNIQUE (file, inode, offset) index), or its file is
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

inline constexpr const char* kCountsByState =
    "SELECT state, count(*), coalesce(sum(length(payload)), 0) FROM outbox GROUP BY state";

inline constexpr const char* kOldestPending =
    "SELECT ingest_time FROM outbox WHERE state = 'pending' ORDER BY id LIMIT 1";

inline constexpr const char* kDeadByError =
    "SELECT coalesce(last_error, '(none)'), count(*) FROM outbox WHERE state = 'dead' "
    "GROUP BY last_error ORDER BY count(*) DESC";

}  // namespace tailbox::outbox::sql
