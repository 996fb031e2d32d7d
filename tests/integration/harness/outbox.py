"""The outbox and the sqlite sink's inbox, read with SQL; the outbox schema from schema/*.sql."""

import glob
import os
import sqlite3

from .env import REPO_ROOT

SCHEMA_DIR = os.path.join(REPO_ROOT, "schema")


def schema_files():
    """schema/*.sql in the order tailbox applies them (file i upgrades user_version i -> i+1)."""
    files = sorted(glob.glob(os.path.join(SCHEMA_DIR, "*.sql")))
    if not files:
        raise FileNotFoundError(f"no schema/*.sql under {SCHEMA_DIR}")
    return files


def create_outbox_schema(conn, user_version=None):
    """Applies every schema/*.sql to `conn` in order, as tailbox does, and sets
    PRAGMA user_version to the number applied (or to `user_version`)."""
    files = schema_files()
    for path in files:
        with open(path) as f:
            conn.executescript(f.read())
    conn.execute(f"PRAGMA user_version = {int(len(files) if user_version is None else user_version)}")


def sqlite_connect(path, timeout=30.0):
    conn = sqlite3.connect(path, timeout=timeout)
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    return conn


def _count(path, table):
    if not os.path.exists(path):
        return 0
    conn = sqlite_connect(path)
    try:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return 0
        raise
    finally:
        conn.close()


def inbox_count(path):
    return _count(path, "inbox")


def outbox_count(path):
    return _count(path, "outbox")


def outbox_states(path):
    """{state: rows} of the outbox table."""
    conn = sqlite_connect(path)
    try:
        return dict(conn.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
    finally:
        conn.close()



def pending_rows(wd):
    """Rows pending in the outbox; -1 while it (or its schema) is not there yet."""
    if not os.path.exists(wd.outbox):
        return -1
    try:
        return outbox_states(wd.outbox).get("pending", 0)
    except Exception:
        return -1


def dead_rows(wd):
    """[(offset, path, last_error)] of the dead rows, by offset."""
    conn = sqlite_connect(wd.outbox)
    try:
        return conn.execute("SELECT o.offset, f.path, o.last_error FROM outbox o "
                            "JOIN files f ON f.id = o.file WHERE o.state = 'dead' "
                            "ORDER BY o.offset").fetchall()
    finally:
        conn.close()



def caught_up(wd, paths):
    """Every file read to its end (read_offset = size) and no row pending.

    In that order: rows pending counted after the offsets were seen at the end
    include every row read. (Counted first, a relay that read the files between
    the two looks caught up with all its rows still pending.)
    """
    return caught_up_reading(wd, paths) and pending_rows(wd) == 0


def caught_up_reading(wd, paths):
    """Every file read to its end (read_offset = size)."""
    if not os.path.exists(wd.outbox):
        return False
    conn = sqlite_connect(wd.outbox)
    try:
        offsets = dict(conn.execute("SELECT path, read_offset FROM files"))
    finally:
        conn.close()
    return all(offsets.get(p, -1) == os.path.getsize(p) for p in paths if os.path.exists(p))


class InboxLock:
    """Holds the sqlite inbox's write lock, so the sink fails (busy) until released.

    mark=True also switches the inbox to WAL and writes a row in the locking
    transaction (a lock a reader of the inbox can see); mark=False only takes
    BEGIN IMMEDIATE. release() (or close()) twice is fine.
    """

    def __init__(self, path, mark=True):
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        if mark:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("CREATE TABLE IF NOT EXISTS tailbox_test_lock (x)")
        self.conn.execute("BEGIN IMMEDIATE")
        if mark:
            self.conn.execute("INSERT INTO tailbox_test_lock VALUES (1)")

    def release(self):
        if self.conn is not None:
            self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None

    close = release
