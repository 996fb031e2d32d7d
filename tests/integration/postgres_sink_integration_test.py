#!/usr/bin/env python3
"""The postgres sink against a real PostgreSQL 15 server, exactly once.

A throwaway server (pg_server.py: own data directory, 127.0.0.1, a free port)
serves every case; each case has its own database, work directory and tailbox.
The destination is read back with psql and compared line by line (key, path,
offset, exact bytes) with the source files.

1. 200,000 lines in 4 files (50,000 before start, the rest in bursts, some torn,
   CRLF, tabs, backslashes, control characters, non-ASCII UTF-8 and one 1 MiB
   line): the table holds every line exactly once; SIGTERM exits 0.
2. Outage: the table is made by hand with the documented DDL; the server is
   stopped (pg_ctl -m fast) for 10 s while lines are written, then started
   again: every line arrives exactly once, nothing is dead-lettered.
3. kill -9 five times at random moments (seeded; the seed is printed) while
   lines are written: exactly once.
4. Poisoned rows: a line with a NUL byte and one that is not UTF-8, among
   5,000 good lines in the same batches: the two rows are dead in the outbox
   with PostgreSQL's message, every other line arrives.
5. Password: a role that must log in with its password. A wrong password_file
   delivers nothing (retries); the right one delivers; password_env too; no
   password ever appears in tailbox's log (log_level debug) or in `check`.
6. JSON lines: fields land in the jsonb column and a valid "time" becomes
   event_time (an invalid one leaves it NULL).
7. A frozen server (SIGSTOP on the postmaster and every backend) for 6 s:
   deliveries and connects hit their deadline (timeout = "2s"), the connection
   is dropped and the batch retried; after SIGCONT every line is there once.
8. Redelivery: lines with every byte a UTF-8 text can hold (0x01..0x7f, 2- to
   4-byte characters up to U+10FFFF), JSON lines with event times, and one line
   that is not UTF-8, wait in the outbox (no table yet); the outbox is saved,
   then delivered (by COPY: the server's statement log shows no INSERT). A
   third of the rows is deleted, a few others marked, and the saved outbox put
   back: every batch is sent again; its COPY is refused (duplicate key) and it
   goes again by INSERT ... ON CONFLICT DO NOTHING. The table then equals its
   first state in every column (the deleted rows back, byte for byte, from the
   other path), the marked rows are untouched, nothing twice; the non-UTF-8 line
   is dead-lettered both times.
9. A table whose columns are not the documented types (fields json, file_offset
   numeric, ingest_time timestamp): batches go by INSERT from the start; every
   line once, nothing dead.
10. A table partitioned by HASH (key) (the only partitioning the unique key
   allows): batches go by COPY into its partitions.
11. A documented table altered while tailbox runs (fields jsonb -> json): the
   first COPY refused is inserted instead, later batches go by INSERT; every
   line once, nothing dead.

Exit 77 (skip) when PostgreSQL 15 is not installed.
Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/postgres_sink_integration_test.py
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import pg_server  # noqa: E402

HOST = "edge1"
FILES = ["a.log", "b.log", "c.log", "d.log"]
TABLE_DDL = """CREATE TABLE {table} (
  key         text PRIMARY KEY,
  host        text NOT NULL,
  source      text NOT NULL,
  path        text NOT NULL,
  file_offset bigint NOT NULL,
  ingest_time timestamptz NOT NULL,
  event_time  timestamptz,
  message     text NOT NULL,
  fields      jsonb
)"""


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def write_pg_config(wd, conninfo, sink_extra=None, **kwargs):
    """harness.write_config with a [sink] table for the postgres sink."""
    sink = {"type": "postgres", "conninfo": conninfo, "create_table": True, "timeout": "10s"}
    sink.update(sink_extra or {})
    return h.write_sink_config(wd, sink, **kwargs)


def good_line(rng, tag, seq):
    """harness.make_line's variety, minus what PostgreSQL text refuses (case 4 tests that)."""
    line = h.make_line(rng, tag, seq)
    try:
        line.decode("utf-8")
        return line
    except UnicodeDecodeError:
        return h.make_line(rng, tag, seq, variety=False)


def Writer(wd, rng, files=FILES):
    """harness.Writer with lines PostgreSQL text accepts."""
    return h.Writer(wd, rng, files=files, line=good_line)


def read_table(pg, db, table="tailbox_logs"):
    """Every row as harness.Rec (line = the message's UTF-8 bytes)."""
    rows = pg.rows(f"SELECT key, path, file_offset, encode(convert_to(message, 'UTF8'), 'hex'), "
                   f"host, source FROM {table}", db)
    return [h.Rec(k, p, int(o), bytes.fromhex(m), host, src) for k, p, o, m, host, src in rows]


def count_rows(pg, db, table="tailbox_logs"):
    try:
        return int(pg.scalar(f"SELECT count(*) FROM {table}", db))
    except RuntimeError:   # the table does not exist yet, or the server is down
        return -1


def wait_all(pg, db, wd, tb, expected, timeout, what):
    def done():
        return h.pending_rows(wd) == 0 and count_rows(pg, db) == expected
    h.wait_until(done, timeout, what, interval=0.5, tailbox=tb,
                 progress=lambda: f"{count_rows(pg, db)} of {expected} rows in the table, "
                                  f"{h.pending_rows(wd)} pending in the outbox")


def check_exact(pg, db, paths, drop=()):
    expected = h.expected_from_files(paths)
    for po in drop:
        expected.pop(po)
    h.log(h.check_exact(expected, read_table(pg, db), host_id=HOST, label=f"table {db}.tailbox_logs"))


class PgCase:
    """What a case body gets: the server, the case's own database, and the work
    directory and tailbox of its harness.case."""

    def __init__(self, pg, c):
        self.pg, self.db = pg, c.name
        pg.psql(f"CREATE DATABASE {c.name}")
        self.wd, self.tb = c.wd, c.tailbox()
        self.conninfo = pg.conninfo(c.name)


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

def case_200k(c, rng):
    w = Writer(c.wd, rng)
    write_pg_config(c.wd, c.conninfo)
    w.spread(50_000, 3)
    c.tb.start()
    appended, big_done = 0, False
    while appended < 150_000:
        if not big_done and appended >= 60_000:
            path = w.paths[2]
            big = b"big " + bytes(rng.choice(b"xyz\\\t") for _ in range(64)) * ((1 << 20) // 64)
            w.src.write(path, big[:(1 << 20)] + b"\n", 1, split_at=300_000, pause=0.05)
            big_done = True
        n = rng.randint(500, 3000)
        w.burst(n, torn=rng.random() < 0.2)
        appended += n
        time.sleep(rng.uniform(0, 0.02))
    total = 50_000 + appended + 1
    h.log(f"{total} lines written; waiting for delivery")
    t0 = time.monotonic()
    wait_all(c.pg, c.db, c.wd, c.tb, total, 180, "200k lines in PostgreSQL")
    h.log(f"delivered within {time.monotonic() - t0:.1f}s of the last write")
    h.stop_clean(c.tb)
    w.close()
    check_exact(c.pg, c.db, w.paths)
    if h.dead_rows(c.wd):
        h.fail(f"dead rows: {h.dead_rows(c.wd)[:5]}")


def case_outage(c, rng):
    c.pg.psql(TABLE_DDL.format(table="tailbox_logs"), c.db)
    write_pg_config(c.wd, c.conninfo, sink_extra={"create_table": False, "timeout": "3s"},
                    delivery={"backoff_min": "100ms", "backoff_max": "1s"})
    w = Writer(c.wd, rng)
    w.spread(4_000, 4)
    c.tb.start()
    wait_all(c.pg, c.db, c.wd, c.tb, 4_000, 60, "the first 4,000 lines")
    h.log("stopping PostgreSQL for 10 s while lines are written")
    c.pg.stop("fast")
    t_end = time.monotonic() + 10
    while time.monotonic() < t_end:
        w.burst(rng.randint(100, 600))
        time.sleep(0.25)
    c.tb.assert_alive("PostgreSQL was down")
    waiting = h.pending_rows(c.wd)
    h.log(f"{w.seq} lines written; {waiting} wait in the outbox; starting PostgreSQL")
    if waiting <= 0:
        h.fail("no rows waited in the outbox during the outage")
    c.pg.start()
    w.burst(2_000)
    wait_all(c.pg, c.db, c.wd, c.tb, w.seq, 90, "every line after the outage")
    h.stop_clean(c.tb)
    w.close()
    check_exact(c.pg, c.db, w.paths)
    if h.dead_rows(c.wd):
        h.fail(f"the outage dead-lettered rows: {h.dead_rows(c.wd)[:5]}")


def case_kill9(c, rng):
    write_pg_config(c.wd, c.conninfo, delivery={"backoff_max": "1s"})
    w = Writer(c.wd, rng)
    w.spread(5_000, 4)
    c.tb.start()
    for k in range(5):
        t_kill = time.monotonic() + rng.uniform(0.3, 2.0)
        while time.monotonic() < t_kill:
            w.burst(rng.randint(50, 1500), torn=rng.random() < 0.2)
            time.sleep(rng.uniform(0, 0.05))
        c.tb.kill9()
        h.log(f"kill -9 #{k + 1}: {w.seq} lines written, {count_rows(c.pg, c.db)} rows in the table")
        if rng.random() < 0.5:
            w.burst(rng.randint(100, 2000))
        c.tb.start()
    w.burst(1_000)
    wait_all(c.pg, c.db, c.wd, c.tb, w.seq, 120, "every line after five kill -9")
    h.stop_clean(c.tb)
    w.close()
    check_exact(c.pg, c.db, w.paths)
    audit_postgres(c)


def audit_postgres(c):
    """`tailbox audit` against the table: clean, then a deleted row reported at its offset."""
    def audit():
        r = subprocess.run([h.tailbox_bin(), "audit", "-c", c.wd.config, "--json"],
                           capture_output=True, text=True, timeout=120)
        try:
            return r.returncode, json.loads(r.stdout)
        except ValueError:
            h.fail(f"audit printed no JSON (exit {r.returncode}): {r.stdout!r} {r.stderr!r}")
    rc, rep = audit()
    if rc != 0 or not rep["clean"]:
        h.fail(f"audit of an exact table should be clean: exit {rc}, {rep}")
    path, offset = c.pg.rows("SELECT path, file_offset FROM tailbox_logs ORDER BY key LIMIT 1",
                             c.db)[0]
    c.pg.psql(f"DELETE FROM tailbox_logs WHERE path = '{path}' AND file_offset = {offset}", c.db)
    rc, rep = audit()
    f = next(f for f in rep["files"] if f["path"] == path)
    if rc != 1 or f["missing"] != 1 or f["missing_offsets"] != [int(offset)]:
        h.fail(f"audit should report the deleted row missing at {path}@{offset}: exit {rc}, {f}")
    h.log(f"audit: clean, then the deleted row reported missing at {os.path.basename(path)}@{offset}")


def case_poison(c, rng):
    write_pg_config(c.wd, c.conninfo)
    path = c.wd.log_path("poison.log")
    data, poisoned, seq = b"", {}, 0
    for i in range(5_000):
        if i == 1_234:
            poisoned[(path, len(data))] = "0x00"
            data += b"poisoned: a NUL \x00 byte in the middle\n"
        if i == 3_210:
            poisoned[(path, len(data))] = "0xff"
            data += b"poisoned: not UTF-8 \xff\xfe here\n"
        data += good_line(rng, "p", seq)
        seq += 1
    with open(path, "wb") as f:
        f.write(data)
    c.tb.start()
    wait_all(c.pg, c.db, c.wd, c.tb, 5_000, 90, "the good lines around the poisoned ones")
    dead = h.dead_rows(c.wd)
    got = {(p, off): err for off, p, err in dead}
    if set(got) != set(poisoned):
        h.fail(f"dead rows at {sorted(got)}, expected exactly the poisoned lines at "
               f"{sorted(poisoned)}")
    for po, byte in poisoned.items():
        err = got[po] or ""
        if 'invalid byte sequence for encoding "UTF8"' not in err or byte not in err:
            h.fail(f"the dead row at {po} does not carry PostgreSQL's message about {byte}: {err!r}")
    h.log(f"dead rows: {[e for _, _, e in dead]}")
    h.stop_clean(c.tb)
    check_exact(c.pg, c.db, [path], drop=poisoned)


def case_password(c, rng):
    password = "pw-" + secrets.token_hex(12)
    wrong = "wrong-" + secrets.token_hex(12)
    user = pg_server.PASSWORD_USER
    c.pg.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
    c.pg.psql(f"CREATE DATABASE {c.db}_pw OWNER {user}")
    db = f"{c.db}_pw"
    pw_file = os.path.join(c.wd.root, "pg-password")
    with open(pw_file, "w") as f:
        f.write(wrong + "\n")
    os.chmod(pw_file, 0o600)
    conninfo = c.pg.conninfo(db, user=user)
    check = write_pg_config(c.wd, conninfo, sink_extra={"password_file": pw_file},
                            top={"log_level": "debug"}, delivery={"backoff_max": "500ms"})
    w = Writer(c.wd, rng, files=["a.log"])
    w.burst(500)

    # A wrong password: nothing arrives, tailbox keeps the rows and says why.
    c.tb.start()
    time.sleep(3)
    c.tb.assert_alive("the password was wrong")
    if count_rows(c.pg, db) > 0:
        h.fail("rows arrived with a wrong password")
    h.stop_clean(c.tb)
    with open(c.wd.tailbox_log, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    if "password authentication failed" not in text:
        h.fail("the log does not say that password authentication failed")

    # The right password from password_file.
    with open(pw_file, "w") as f:
        f.write(password + "\n")
    c.tb.start()
    wait_all(c.pg, db, c.wd, c.tb, 500, 60, "the lines with the right password")
    h.stop_clean(c.tb)

    # password_env.
    env_name = "TAILBOX_TEST_PG_PASSWORD"
    write_pg_config(c.wd, conninfo, sink_extra={"password_env": env_name},
                    top={"log_level": "debug"})
    os.environ[env_name] = password
    try:
        w.burst(200)
        c.tb.start()
        wait_all(c.pg, db, c.wd, c.tb, 700, 60, "the lines with password_env")
        h.stop_clean(c.tb)
    finally:
        del os.environ[env_name]
    w.close()
    check_exact(c.pg, db, w.paths)

    with open(c.wd.tailbox_log, "rb") as f:
        log_bytes = f.read()
    for secret in (password, wrong):
        if secret.encode() in log_bytes or secret in check.stdout + check.stderr:
            h.fail(f"a password appears in tailbox's output: {secret}")
    h.log(f"no password in {len(log_bytes)} bytes of tailbox log (debug level)")


def case_json(c, rng):
    write_pg_config(c.wd, c.conninfo, source={"parser": "json"})
    path = c.wd.log_path("j.log")
    lines = [b'{"time":"2026-11-27T10:00:00.250Z","level":"info","msg":"a"}',
             b'{"timestamp":"2026-11-27T11:00:00+01:00","n":2}',
             b'{"time":"not a time","msg":"c"}',
             b'not json at all']
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    c.tb.start()
    wait_all(c.pg, c.db, c.wd, c.tb, 4, 30, "the JSON lines")
    h.stop_clean(c.tb)
    rows = c.pg.rows("SELECT file_offset, coalesce(to_char(event_time AT TIME ZONE 'UTC', "
                     "'YYYY-MM-DD HH24:MI:SS.MS'), 'NULL'), coalesce(fields->>'msg', 'NULL'), "
                     "fields IS NULL FROM tailbox_logs ORDER BY file_offset", c.db)
    got = [(t, m, n) for _, t, m, n in rows]
    want = [("2026-11-27 10:00:00.250", "a", "f"), ("2026-11-27 10:00:00.000", "NULL", "f"),
            ("NULL", "c", "f"), ("NULL", "NULL", "t")]
    if got != want:
        h.fail(f"event_time/fields: got {got}, expected {want}")
    check_exact(c.pg, c.db, [path])


def case_stall(c, rng):
    write_pg_config(c.wd, c.conninfo, sink_extra={"timeout": "2s"},
                    delivery={"backoff_min": "100ms", "backoff_max": "500ms"})
    w = Writer(c.wd, rng)
    w.spread(2_000, 4)
    c.tb.start()
    wait_all(c.pg, c.db, c.wd, c.tb, 2_000, 60, "the first 2,000 lines")
    pids = c.pg.pids()
    h.log(f"freezing PostgreSQL ({len(pids)} processes) for 6 s while lines are written")
    def signal_all(sig):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:   # a backend that has just exited
                pass
    try:
        signal_all(signal.SIGSTOP)
        t_end = time.monotonic() + 6
        while time.monotonic() < t_end:
            w.burst(rng.randint(100, 500))
            time.sleep(0.2)
        c.tb.assert_alive("PostgreSQL was frozen")
    finally:
        signal_all(signal.SIGCONT)
    wait_all(c.pg, c.db, c.wd, c.tb, w.seq, 90, "every line after the freeze")
    h.stop_clean(c.tb)
    w.close()
    with open(c.wd.tailbox_log, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    if "no answer within 2000 ms" not in text:
        h.fail("the log does not show a delivery or connect that hit its deadline")
    check_exact(c.pg, c.db, w.paths)


class ServerLog:
    """The server log from a point on (log_statement = 'all' for one database)."""

    def __init__(self, pg):
        self.path = pg.logfile
        self.mark()

    def mark(self):
        self.at = os.path.getsize(self.path)

    def since_mark(self):
        with open(self.path, "rb") as f:
            f.seek(self.at)
            return f.read().decode("utf-8", "replace")


def all_columns(pg, db):
    """{key: every column as text (the message as hex)}."""
    rows = pg.rows("SELECT key, host, source, path, file_offset, "
                   "to_char(ingest_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), "
                   "coalesce(to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), "
                   "'NULL'), encode(convert_to(message, 'UTF8'), 'hex'), "
                   "coalesce(fields::text, 'NULL') FROM tailbox_logs", db)
    return {r[0]: r[1:] for r in rows}


def every_text_byte_lines():
    """Lines that hold every byte value a UTF-8 text line can: 0x01..0x7f but the
    newline, and 2-, 3- and 4-byte characters at their edges."""
    ascii_bytes = bytes(b for b in range(1, 0x80) if b not in (0x0A, 0x0D)) + b"\r in \r middle"
    chars = "\u0080\u00ff\u07ff\u0800\u0fff\ud7ff\ue000\ufffd\uffff\U00010000\U0001F600\U0010FFFF"
    return [b"all ascii " + ascii_bytes, ("all widths " + chars).encode("utf-8"),
            b"\\N \\. \\x00 \\ copy escapes \t\t", b"", b"   ", b"\x7f" * 300]


def case_redelivery(c, rng):
    c.pg.psql(f"ALTER DATABASE {c.db} SET log_statement = 'all'")
    write_pg_config(c.wd, c.conninfo, sink_extra={"create_table": False},
                    source={"parser": "json"}, delivery={"backoff_min": "100ms", "backoff_max": "500ms"})
    path = c.wd.log_path("r.log")
    lines, bad = [], None
    for i in range(4_000):
        if i % 500 == 7:
            lines += every_text_byte_lines()
        if i % 400 == 3:
            lines.append(json.dumps({"time": f"2026-11-27T10:{i % 60:02d}:00.{i:06d}Z", "i": i,
                                     "s": "caf\u00e9 \"q\" \\"}, ensure_ascii=False).encode())
            lines.append(json.dumps({"timestamp": "2026-11-27 11:00:00-02:30", "n": None}).encode())
        if i == 2_345:
            bad = sum(len(x) + 1 for x in lines)
            lines.append(b"not UTF-8: \xc3\x28 \xff")
        lines.append(good_line(rng, "r", i).rstrip(b"\n"))
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    expected_dead = {(path, bad)}

    # No table yet: the set-up fails and every line waits in the outbox.
    c.tb.start()
    h.wait_until(lambda: h.caught_up_reading(c.wd, [path]), 30, "the file read into the outbox",
                 tailbox=c.tb)
    h.stop_clean(c.tb)
    saved = {}
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(c.wd.outbox + suffix):
            with open(c.wd.outbox + suffix, "rb") as f:
                saved[suffix] = f.read()
    total = len(lines) - 1

    def deliver(what):
        c.tb.start()
        wait_all(c.pg, c.db, c.wd, c.tb, total, 90, what)
        h.stop_clean(c.tb)
        dead = {(p, off) for off, p, _ in h.dead_rows(c.wd)}
        if dead != expected_dead:
            h.fail(f"{what}: dead rows at {sorted(dead)}, expected {sorted(expected_dead)}")

    c.pg.psql(TABLE_DDL.format(table="tailbox_logs"), c.db)
    log = ServerLog(c.pg)
    deliver("the first delivery")
    first_log = log.since_mark()
    check_exact(c.pg, c.db, [path], drop=expected_dead)
    copies = first_log.count("statement: COPY tailbox_logs")
    refused = first_log.count("STATEMENT:  COPY tailbox_logs")
    # An INSERT is logged when it runs, or (STATEMENT:) when its parameters
    # were refused already (the non-UTF-8 line, at Bind).
    inserts = (first_log.count("execute <unnamed>: INSERT INTO tailbox_logs") +
               first_log.count("STATEMENT:  INSERT INTO tailbox_logs"))
    h.log(f"first delivery: {copies} COPY ({refused} refused: the non-UTF-8 line), {inserts} INSERT")
    if copies < 4 or "duplicate key" in first_log or inserts > refused or refused < 1:
        h.fail(f"the first delivery should go by COPY, with an INSERT only after a refused "
               f"COPY: {copies} COPY, {refused} refused, {inserts} INSERT")
    before = all_columns(c.pg, c.db)
    event_times = sum(1 for v in before.values() if v[5] != "NULL")
    if event_times < 10:
        h.fail(f"only {event_times} rows have an event time")

    # A third of the rows gone, a few marked; then every batch again.
    c.pg.psql("DELETE FROM tailbox_logs WHERE abs(hashtext(key)) % 3 = 0", c.db)
    marked = c.pg.rows("UPDATE tailbox_logs SET message = 'marked ' || key "
                       "WHERE abs(hashtext(key)) % 50 = 1 RETURNING key", c.db)
    marked = {k for (k,) in marked}
    left = count_rows(c.pg, c.db)
    h.log(f"{total - left} rows deleted, {len(marked)} marked; putting the saved outbox back")
    if not marked or left >= total or left <= 0:
        h.fail(f"test bug: {left} rows left, {len(marked)} marked")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(c.wd.outbox + suffix):
            os.unlink(c.wd.outbox + suffix)
    for suffix, data in saved.items():
        with open(c.wd.outbox + suffix, "wb") as f:
            f.write(data)
    log.mark()
    deliver("the redelivery")
    second_log = log.since_mark()
    dup = second_log.count("duplicate key value violates unique constraint")
    inserts = second_log.count("execute <unnamed>: INSERT INTO tailbox_logs")
    h.log(f"redelivery: {dup} COPY refused for a duplicate key, {inserts} INSERT")
    if dup < 4 or inserts < dup:
        h.fail(f"every batch sent again should have its COPY refused and go by INSERT: "
               f"{dup} refused, {inserts} INSERT")

    after = all_columns(c.pg, c.db)
    if set(after) != set(before):
        h.fail(f"keys differ after the redelivery: {len(set(before) - set(after))} missing, "
               f"{len(set(after) - set(before))} new")
    diff = []
    for k, cols in after.items():
        want = before[k]
        if k in marked:
            want = want[:6] + (("marked " + k).encode().hex(),) + want[7:]
        if cols != want:
            diff.append(k)
    if diff:
        k = diff[0]
        h.fail(f"{len(diff)} rows differ after the redelivery, e.g. {k}: {after[k]} != {before[k]}")
    h.log(f"redelivery: {total} rows equal to the first delivery in every column "
          f"({total - left} back by INSERT, {len(marked)} marked rows untouched)")


def case_other_types(c, rng):
    c.pg.psql(TABLE_DDL.format(table="tailbox_logs")
              .replace("fields      jsonb", "fields      json")
              .replace("file_offset bigint", "file_offset numeric")
              .replace("ingest_time timestamptz", "ingest_time timestamp"), c.db)
    write_pg_config(c.wd, c.conninfo, sink_extra={"create_table": False},
                    source={"parser": "json"})
    w = Writer(c.wd, rng, files=["a.log"])
    w.burst(2_000)
    c.tb.start()
    wait_all(c.pg, c.db, c.wd, c.tb, 2_000, 60, "the lines into a table of other types")
    h.stop_clean(c.tb)
    w.close()
    with open(c.wd.tailbox_log, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    if "batches go by INSERT ... ON CONFLICT, not COPY" not in text:
        h.fail("tailbox did not say that this table takes INSERT, not COPY")
    if h.dead_rows(c.wd):
        h.fail(f"dead rows: {h.dead_rows(c.wd)[:5]}")
    check_exact(c.pg, c.db, w.paths)


def case_partitioned(c, rng):
    c.pg.psql(TABLE_DDL.format(table="tailbox_logs") + " PARTITION BY HASH (key);\n"
              "CREATE TABLE tailbox_logs_0 PARTITION OF tailbox_logs "
              "FOR VALUES WITH (MODULUS 2, REMAINDER 0);\n"
              "CREATE TABLE tailbox_logs_1 PARTITION OF tailbox_logs "
              "FOR VALUES WITH (MODULUS 2, REMAINDER 1)", c.db)
    c.pg.psql(f"ALTER DATABASE {c.db} SET log_statement = 'all'")
    log = ServerLog(c.pg)
    write_pg_config(c.wd, c.conninfo, sink_extra={"create_table": False})
    w = Writer(c.wd, rng, files=["a.log"])
    w.burst(3_000)
    c.tb.start()
    wait_all(c.pg, c.db, c.wd, c.tb, 3_000, 60, "the lines into a table partitioned by hash")
    h.stop_clean(c.tb)
    w.close()
    text = log.since_mark()
    if "statement: COPY tailbox_logs" not in text or "duplicate key" in text:
        h.fail("a table partitioned by HASH (key) should take COPY, without a refusal")
    parts = c.pg.rows("SELECT count(*) FROM tailbox_logs_0 UNION ALL "
                      "SELECT count(*) FROM tailbox_logs_1", c.db)
    if any(int(n) == 0 for (n,) in parts):
        h.fail(f"rows per partition: {parts}")
    check_exact(c.pg, c.db, w.paths)


def case_altered(c, rng):
    c.pg.psql(TABLE_DDL.format(table="tailbox_logs"), c.db)
    write_pg_config(c.wd, c.conninfo, sink_extra={"create_table": False},
                    source={"parser": "json"})
    path = c.wd.log_path("j.log")
    n = 0

    def json_lines(k):
        nonlocal n
        with open(path, "ab") as f:
            for _ in range(k):
                f.write(json.dumps({"time": "2026-11-27T10:00:00Z", "n": n}).encode() + b"\n")
                n += 1
    json_lines(1_000)
    c.tb.start()
    wait_all(c.pg, c.db, c.wd, c.tb, 1_000, 60, "the lines before the ALTER")
    c.pg.psql("ALTER TABLE tailbox_logs ALTER COLUMN fields TYPE json", c.db)
    json_lines(3_000)
    wait_all(c.pg, c.db, c.wd, c.tb, 4_000, 60, "the lines after the ALTER")
    h.stop_clean(c.tb)
    with open(c.wd.tailbox_log, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    if "where INSERT works: this connection inserts from now on" not in text:
        h.fail("tailbox did not say that COPY stopped fitting the altered table")
    if h.dead_rows(c.wd):
        h.fail(f"dead rows: {h.dead_rows(c.wd)[:5]}")
    got = c.pg.scalar("SELECT count(DISTINCT (fields->>'n')) FROM tailbox_logs", c.db)
    if int(got) != 4_000:
        h.fail(f"{got} distinct JSON lines of 4,000 in the altered table")
    check_exact(c.pg, c.db, [path])


def test():
    seed = h.seed_from_env()
    h.tailbox_bin()
    with pg_server.PgServer() as pg:
        h.log(f"PostgreSQL 15 on 127.0.0.1:{pg.port} ({pg.root})")
        h.run_cases((("pg_200k", case_200k), ("pg_outage", case_outage),
                     ("pg_kill9", case_kill9), ("pg_poison", case_poison),
                     ("pg_password", case_password), ("pg_json", case_json),
                     ("pg_stall", case_stall), ("pg_redelivery", case_redelivery),
                     ("pg_other_types", case_other_types), ("pg_partitioned", case_partitioned),
                     ("pg_altered", case_altered)),
                    seed, lambda c: (PgCase(pg, c), c.rng),
                    context=[("PostgreSQL server log", pg.server_log_tail)])


if __name__ == "__main__":
    pg_server.require_postgres()
    h.main(test, "postgres_sink_integration_test")
