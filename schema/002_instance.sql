-- tailbox outbox schema, version 2 (PRAGMA user_version = 2).
--
-- A random salt minted once per outbox. Every file uid tailbox mints from now
-- on hashes it in, so that a new outbox (the old one damaged and moved away,
-- or deleted) never mints a uid an earlier outbox of the same host may have
-- used: with an inode reused by a file with the same first bytes, the same uid
-- would make the destination drop the new file's lines as copies of the old
-- one's (a silent loss). A different uid at worst duplicates. Uids minted
-- before this migration stay as they are (they are stored in files.uid).
CREATE TABLE meta (
  key   TEXT PRIMARY KEY,               -- 'instance': the salt, 16 hex digits
  value TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('instance', lower(hex(randomblob(8))));
