-- tailbox outbox schema, version 1 (PRAGMA user_version = 1).
--
-- The outbox is an ordinary SQLite database in WAL mode. Inspect it while tailbox
-- runs with the plain CLI, read-only:
--     sqlite3 -readonly /var/lib/tailbox/outbox.db
-- tailbox applies the migrations in schema/ in order at start; never edit a
-- released file, add the next one (002_....sql) instead.

-- Every file tailbox has read from. One row per *file*, not per path: a file
-- that is renamed (log rotation) keeps its row and only `path` changes. A file
-- that is truncated or whose inode is reused by a different file gets a new row.
CREATE TABLE files (
  id              INTEGER PRIMARY KEY,  -- tracked-file id; outbox.file refers to it
  source          TEXT    NOT NULL,     -- name of the [[source]] that found it
  path            TEXT    NOT NULL,     -- the last path it was seen under
  dev             INTEGER NOT NULL,     -- st_dev  } identity: (dev, inode) plus the
  inode           INTEGER NOT NULL,     -- st_ino  } fingerprint of its first bytes
  fingerprint     TEXT    NOT NULL,     -- hex FNV-1a 64 of the first fingerprint_len bytes
  fingerprint_len INTEGER NOT NULL,     -- bytes hashed (grows until [tail] fingerprint_bytes)
  uid             TEXT    NOT NULL UNIQUE, -- stable file identity used in idempotency keys
  read_offset     INTEGER NOT NULL DEFAULT 0, -- checkpoint: every line that ends before this
                                        -- byte is in `outbox` or already delivered
  first_seen      INTEGER NOT NULL,     -- unix time, milliseconds
  last_seen       INTEGER NOT NULL,     -- unix time, milliseconds
  state           TEXT    NOT NULL DEFAULT 'active'
                  CHECK (state IN ('active', 'released'))  -- released: read to the end, gone
);

-- One row per line (record) waiting for delivery. A row is inserted in the same
-- transaction that advances files.read_offset past it, and deleted only after the
-- sink confirmed it. The UNIQUE key refuses a second copy of a line.
CREATE TABLE outbox (
  id          INTEGER PRIMARY KEY,      -- delivery order for ordering = "none"
  file        INTEGER NOT NULL REFERENCES files(id),
  inode       INTEGER NOT NULL,
  offset      INTEGER NOT NULL,         -- byte offset of the line's first byte
  length      INTEGER NOT NULL,         -- bytes the line takes in the file, newline included
  ingest_time INTEGER NOT NULL,         -- unix time, milliseconds, when it was read
  payload     BLOB    NOT NULL,         -- the line, without its line terminator
  attempts    INTEGER NOT NULL DEFAULT 0,  -- failed delivery attempts so far
  last_error  TEXT,                     -- the sink's message for the last failure
  state       TEXT    NOT NULL DEFAULT 'pending'
              CHECK (state IN ('pending', 'dead')),  -- dead: kept until replayed or purged
  UNIQUE (file, inode, offset)
);

-- What a sink committed together with the deletion of the rows it delivered
-- (e.g. the file sink's durable size). Written in the same transaction as the
-- DELETE, so it can never disagree with the outbox after a crash.
CREATE TABLE sink_state (
  sink    TEXT PRIMARY KEY,             -- the sink's name, e.g. "file:/var/log/out.ndjson"
  value   TEXT NOT NULL,
  updated INTEGER NOT NULL              -- unix time, milliseconds
);

-- Ready-made views for people with the sqlite3 CLI.
-- Backlog per file: what is waiting and how old the oldest line is.
CREATE VIEW backlog AS
  SELECT f.source, f.path, o.state, count(*) AS rows, sum(length(o.payload)) AS bytes,
         datetime(min(o.ingest_time) / 1000, 'unixepoch') AS oldest
  FROM outbox o JOIN files f ON f.id = o.file
  GROUP BY f.id, o.state;

-- Dead rows grouped by their error.
CREATE VIEW dead_by_error AS
  SELECT last_error, count(*) AS rows, min(id) AS first_id, max(id) AS last_id
  FROM outbox WHERE state = 'dead' GROUP BY last_error;
