-- tailbox outbox schema, version 3 (PRAGMA user_version = 3).
--
-- The outbox table becomes one B-tree per line: its PRIMARY KEY is the
-- (file, inode, offset) key that refuses a second copy of a line, and the
-- table is stored WITHOUT ROWID, so a row lives in that key's B-tree and
-- nowhere else. Version 1 kept a rowid table plus a UNIQUE index: every line
-- was written to two B-trees on insert and again on delete. Rows of one file
-- sit next to each other in key order, so delivered rows are deleted as
-- ranges (one DELETE per run of consecutive rows of a file) instead of one
-- DELETE per row.
--
-- The migration copies every row (pending and dead) into the new table in
-- one transaction: nothing is lost, nothing changes for the files table or
-- sink_state. The `id` column is gone: rows are named by their key.
CREATE TABLE outbox_v3 (
  file        INTEGER NOT NULL REFERENCES files(id),  -- tracked file (files.id)
  inode       INTEGER NOT NULL,         -- the file's inode when the line was read
  offset      INTEGER NOT NULL,         -- byte offset of the line's first byte
  length      INTEGER NOT NULL,         -- bytes the line takes in the file, newline included
  ingest_time INTEGER NOT NULL,         -- unix time, milliseconds, when it was read
  payload     BLOB    NOT NULL,         -- the line, without its line terminator
  attempts    INTEGER NOT NULL DEFAULT 0,  -- failed delivery attempts so far
  last_error  TEXT,                     -- the sink's message for the last failure
  state       TEXT    NOT NULL DEFAULT 'pending'
              CHECK (state IN ('pending', 'dead')),  -- dead: kept until replayed or purged
  PRIMARY KEY (file, inode, offset)     -- one copy of a line, ever; rows of a file in order
) WITHOUT ROWID;

INSERT INTO outbox_v3 (file, inode, offset, length, ingest_time, payload, attempts, last_error, state)
  SELECT file, inode, offset, length, ingest_time, payload, attempts, last_error, state FROM outbox;

DROP VIEW backlog;
DROP VIEW dead_by_error;
DROP TABLE outbox;
ALTER TABLE outbox_v3 RENAME TO outbox;

-- Backlog per file: what is waiting and how old the oldest line is.
CREATE VIEW backlog AS
  SELECT f.source, f.path, o.state, count(*) AS rows, sum(length(o.payload)) AS bytes,
         datetime(min(o.ingest_time) / 1000, 'unixepoch') AS oldest
  FROM outbox o JOIN files f ON f.id = o.file
  GROUP BY f.id, o.state;

-- Dead rows grouped by their error: how many, the lowest and highest file id
-- they were read from (see the files table for the paths), and the ingest
-- times of the oldest and the newest.
CREATE VIEW dead_by_error AS
  SELECT last_error, count(*) AS rows,
         min(file) AS first_file, max(file) AS last_file,
         datetime(min(ingest_time) / 1000, 'unixepoch') AS oldest,
         datetime(max(ingest_time) / 1000, 'unixepoch') AS newest
  FROM outbox WHERE state = 'dead' GROUP BY last_error;
