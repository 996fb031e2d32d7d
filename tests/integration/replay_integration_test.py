#!/usr/bin/env python3
"""tools/replay: moves dead outbox rows back to pending, or purges them.

Part 1 (no relay): outboxes built with the real schema (every schema/*.sql in
order, as tailbox applies them; WAL) holding pending and dead rows of several files, sources,
errors and ingest times. Each filter (--error, --source, --since, --until and
combinations) must move exactly the matching dead rows to pending with
attempts = 0 and last_error = NULL, and leave every other row (pending rows
above all) and the files table byte for byte as they were. --dry-run changes
nothing; --purge --yes deletes exactly the matching dead rows; --purge without
--yes and without a terminal refuses and deletes nothing; quotes in values are
quoted for SQL; bad times, unknown options, missing values, a non-outbox file
and a missing file are rejected with exit 2 (and the missing file is not
created).

Part 2 (end to end): `tailbox run` with a file sink idles on a log directory
(one real line is delivered first, to show the relay works). While it runs,
dead rows are inserted with the sqlite3 CLI (WAL: concurrent writers are
fine); they must not be delivered while dead. `tools/replay` then puts them
back to pending and the running relay must deliver them within 30 s, once for
rows above its lease cursor and once for rows below it (those are only found
by its periodic rescan from the start of the outbox).

Usage: python3 tests/integration/replay_integration_test.py
Environment: TAILBOX_REPO (default: derived from this file's path), TAILBOX_BIN
(default: $TAILBOX_REPO/build/tailbox), TAILBOX_KEEP=1 keeps the temp dirs.
"""

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

REPO = os.path.abspath(os.environ.get("TAILBOX_REPO") or
                       os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
REPLAY = os.path.join(REPO, "tools", "replay")

CHECKS = 0


Failure = h.TestFailure
log = h.log


def check(cond, msg):
    global CHECKS
    CHECKS += 1
    if not cond:
        raise Failure(msg)


def replay(*args, timeout=60):
    """Runs tools/replay without a terminal (stdin /dev/null, own session)."""
    return subprocess.run([REPLAY, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, start_new_session=True)


def show(r):
    return f"exit {r.returncode}\n--- stdout\n{r.stdout}--- stderr\n{r.stderr}"


# ---------------------------------------------------------------------------
# Test outbox
# ---------------------------------------------------------------------------

NOW = int(time.time())
T0 = (NOW - 30 * 86400) // 60 * 60          # whole minute, a month ago (seconds)

FILES = [  # id, source, path
    (1, "app", "/var/log/app.log"),
    (2, "web", "/var/log/web/access.log"),
    (3, "web", "/var/log/web/error.log"),
    (4, "db's", "/var/log/db.log"),          # a quote in a source name
]
ERRORS = [
    "connection refused",
    "HTTP 413: payload too large",
    "can't parse record: bad byte",
    "quota 50% used_up",                     # % and _ must be literal ...
    "quota 50x usedXup",                     # ... so these never match "50%" / "d_u"
    None,
]


def make_rows():
    # A row is (file, inode, offset, length, ingest_time, payload, attempts, last_error,
    # state); (file, inode, offset) identifies it (the outbox's unique key).
    rows = []
    for i in range(36):
        fid = FILES[i % 4][0]
        err = ERRORS[i % 6]
        state = "pending" if i % 5 == 0 else "dead"
        attempts = 0 if (state == "pending" and err is None) else 1 + i % 7
        ingest = (T0 + i * 60) * 1000 + 250   # minutes apart, off the whole second
        payload = f"line {i} from {fid}".encode()
        rows.append((fid, 1000 + fid, i * 100, len(payload) + 1, ingest, payload,
                     attempts, err, state))
    # Two recent rows (for "1 hour ago"), one dead, one pending.
    for k, state in enumerate(("dead", "pending")):
        ingest = (NOW - 600) * 1000
        payload = f"recent {k}".encode()
        rows.append((1, 1001, 10_000 + k * 100, len(payload) + 1, ingest, payload,
                     3, "connection refused", state))
    return sorted(rows)   # in the order snapshot() reads them


ROWS = make_rows()


OUTBOX_COLUMNS = ("file, inode, offset, length, ingest_time, payload, attempts, last_error,"
                  " state")


def build_outbox(path, user_version=None, rows=ROWS):
    """An outbox with the schema of schema/*.sql (user_version: as applied, unless given)."""
    db = sqlite3.connect(path)
    try:
        h.create_outbox_schema(db, user_version)
        db.execute("PRAGMA journal_mode = WAL")
        for fid, source, p in FILES:
            db.execute("INSERT INTO files (id, source, path, dev, inode, fingerprint, fingerprint_len,"
                       " uid, read_offset, first_seen, last_seen) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (fid, source, p, 64769, 1000 + fid, "cbf29ce484222325", 64,
                        f"uid-{fid}", 4096, T0 * 1000, T0 * 1000))
        db.executemany(f"INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", rows)
        db.commit()
    finally:
        db.close()


def snapshot(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = db.execute(f"SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY file, inode, offset"
                         ).fetchall()
        files = db.execute("SELECT * FROM files ORDER BY id").fetchall()
        return out, files
    finally:
        db.close()


def source_of(fid):
    return next(s for i, s, _ in FILES if i == fid)


def expect_replay(rows, pred):
    """rows after replaying the dead rows that satisfy pred."""
    out = []
    for r in rows:
        if r[8] == "dead" and pred(r):
            r = r[:6] + (0, None, "pending")
        out.append(r)
    return out


def expect_purge(rows, pred):
    return [r for r in rows if not (r[8] == "dead" and pred(r))]


def diff(got, want):
    g, w = dict((r[:3], r) for r in got), dict((r[:3], r) for r in want)
    lines = []
    for i in sorted(set(g) | set(w)):
        if g.get(i) != w.get(i):
            lines.append(f"  (file, inode, offset) {i}: got {g.get(i)}\n"
                         f"         want {w.get(i)}")
    return "\n".join(lines[:10]) + (f"\n  ... {len(lines) - 10} more" if len(lines) > 10 else "")


def local_time(unix_s):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_s))


# ---------------------------------------------------------------------------
# Part 1: the script against hand-built outboxes
# ---------------------------------------------------------------------------

def part1(tmp):
    template = os.path.join(tmp, "template.db")
    build_outbox(template)
    base_rows, base_files = snapshot(template)
    check(base_rows == ROWS, "test bug: the template outbox does not hold ROWS")
    n = [0]

    def fresh():
        n[0] += 1
        p = os.path.join(tmp, f"outbox-{n[0]}.db")
        shutil.copyfile(template, p)
        return p

    def err_has(s):
        return lambda r: r[7] is not None and s in r[7]

    since_s, until_s = T0 + 10 * 60, T0 + 25 * 60
    cases = [
        ("no filter", [], lambda r: True),
        ("--error plain", ["--error", "connection refused"], err_has("connection refused")),
        ("--error with %", ["--error", "50%"], err_has("50%")),
        ("--error with _", ["--error", "d_u"], err_has("d_u")),
        ("--error with a quote", ["--error", "can't parse"], err_has("can't parse")),
        ("--error=VALUE form", ["--error=HTTP 413"], err_has("HTTP 413")),
        ("--error injection attempt", ["--error", "x'); DELETE FROM outbox; --"], lambda r: False),
        ("--error case-sensitive", ["--error", "CONNECTION"], lambda r: False),
        ("--source web", ["--source", "web"], lambda r: source_of(r[0]) == "web"),
        ("--source with a quote", ["--source", "db's"], lambda r: source_of(r[0]) == "db's"),
        ("--source unknown", ["--source", "nope"], lambda r: False),
        ("--since unix seconds", ["--since", str(since_s)], lambda r: r[4] >= since_s * 1000),
        ("--until date string", ["--until", local_time(until_s)], lambda r: r[4] < until_s * 1000),
        ("--since/--until window", ["--since", local_time(since_s), "--until", str(until_s)],
         lambda r: since_s * 1000 <= r[4] < until_s * 1000),
        ("--since relative", ["--since", "1 hour ago"], lambda r: r[4] >= (NOW - 3600) * 1000),
        ("all filters", ["--source", "web", "--error", "refused", "--since", str(T0),
                         "--until", str(T0 + 30 * 60)],
         lambda r: source_of(r[0]) == "web" and r[7] is not None and "refused" in r[7]
         and T0 * 1000 <= r[4] < (T0 + 30 * 60) * 1000),
    ]
    for name, args, pred in cases:
        db = fresh()
        want = expect_replay(base_rows, pred)
        moved = sum(1 for a, b in zip(base_rows, want) if a != b)
        r = replay("--db", db, *args)
        check(r.returncode == 0, f"{name}: replay failed\n{show(r)}")
        check(f"replayed {moved} dead rows to pending" in r.stdout,
              f"{name}: expected 'replayed {moved} dead rows to pending'\n{show(r)}")
        got, files = snapshot(db)
        check(got == want, f"{name}: outbox differs from the expected result:\n{diff(got, want)}")
        check(files == base_files, f"{name}: the files table changed")
        log(f"ok  replay {name}: {moved} rows moved")
        # Running it again finds nothing more to do.
        r = replay("--db", db, *args)
        check(r.returncode == 0 and "replayed 0 dead rows" in r.stdout,
              f"{name}: a second replay was not a no-op\n{show(r)}")
        check(snapshot(db)[0] == want, f"{name}: a second replay changed rows")

    # Some filters must actually select something, or the cases prove little.
    dead = [r for r in base_rows if r[8] == "dead"]
    for s in ("connection refused", "50%", "d_u", "can't parse"):
        k = sum(1 for r in dead if r[7] and s in r[7])
        check(0 < k < len(dead), f"test bug: --error {s!r} selects {k} of {len(dead)} dead rows")
    check(any(r[8] == "pending" and r[7] == "connection refused" for r in base_rows),
          "test bug: no pending row shares an error with dead rows")

    # --dry-run: counts and groups by error, changes nothing.
    db = fresh()
    r = replay("--db", db, "--dry-run", "--source", "web")
    check(r.returncode == 0, f"dry run failed\n{show(r)}")
    web_dead = [x for x in dead if source_of(x[0]) == "web"]
    check(re.search(rf"\b{len(web_dead)} dead rows\b.*\bmatch", r.stdout) is not None,
          f"dry run: expected the count {len(web_dead)}\n{show(r)}")
    for e in set(x[7] for x in web_dead):
        k = sum(1 for x in web_dead if x[7] == e)
        label = re.escape(e if e is not None else "(no error recorded)")
        check(re.search(rf"^\s*{k}\s+{label}\s*$", r.stdout, re.M) is not None,
              f"dry run: expected a preview line '{k}  {e}'\n{show(r)}")
    check(snapshot(db) == (base_rows, base_files), "dry run changed the outbox")
    r = replay("--db", db, "--dry-run", "--purge", "--yes")
    check(r.returncode == 0 and f"{len(dead)} dead rows" in r.stdout and "deleted" in r.stdout,
          f"--purge --dry-run: unexpected output\n{show(r)}")
    check(snapshot(db) == (base_rows, base_files), "--purge --dry-run changed the outbox")
    log("ok  --dry-run (replay and purge) changes nothing and previews by error")

    # --purge --yes: deletes exactly the matching dead rows.
    for name, args, pred in [
        ("--error", ["--error", "HTTP 413"], err_has("HTTP 413")),
        ("--source + --until", ["--source", "app", "--until", str(until_s)],
         lambda r: source_of(r[0]) == "app" and r[4] < until_s * 1000),
        ("quote in --error", ["--error", "can't"], err_has("can't")),
        ("no filter", [], lambda r: True),
    ]:
        db = fresh()
        want = expect_purge(base_rows, pred)
        k = len(base_rows) - len(want)
        r = replay("--db", db, "--purge", "--yes", *args)
        check(r.returncode == 0 and f"deleted {k} dead rows" in r.stdout,
              f"purge {name}: expected 'deleted {k} dead rows'\n{show(r)}")
        got, files = snapshot(db)
        check(got == want, f"purge {name}: outbox differs:\n{diff(got, want)}")
        check(files == base_files, f"purge {name}: the files table changed")
        log(f"ok  purge --yes {name}: {k} rows deleted")
    db = fresh()
    r = replay("--db", db, "--purge", "--yes", "--error", "no such error anywhere")
    check(r.returncode == 0 and snapshot(db) == (base_rows, base_files),
          f"purge with no match failed or changed rows\n{show(r)}")

    # --purge without --yes and without a terminal: refuses, deletes nothing.
    db = fresh()
    try:
        r = replay("--db", db, "--purge", timeout=30)
    except subprocess.TimeoutExpired:
        raise Failure("--purge without --yes and without a terminal hung (waited 30 s)")
    check(r.returncode != 0, f"--purge without --yes and without a tty did not refuse\n{show(r)}")
    check("--yes" in r.stderr, f"--purge refusal should mention --yes\n{show(r)}")
    check(snapshot(db) == (base_rows, base_files), "--purge without --yes deleted rows")
    log(f"ok  --purge without --yes and without a terminal refuses (exit {r.returncode})")

    # Bad times.
    db = fresh()
    for args in (["--since", "not a time at all"], ["--until", "32/13/2026 25:99"],
                 ["--since", "12abc"], ["--since", ""]):
        r = replay("--db", db, *args)
        check(r.returncode == 2, f"bad time {args} not rejected with exit 2\n{show(r)}")
        check(args[0] in r.stderr, f"bad time {args}: message should name {args[0]}\n{show(r)}")
    r = replay("--db", db, "--since", str(until_s), "--until", str(since_s))
    check(r.returncode == 2, f"--since after --until not rejected\n{show(r)}")
    check(snapshot(db) == (base_rows, base_files), "a rejected command changed the outbox")
    log("ok  unparseable --since/--until rejected (exit 2)")

    # Usage errors.
    for args, what in [([], "no --db"), (["--db"], "--db without value"),
                       (["--db", db, "--error"], "--error without value"),
                       (["--db", db, "--source", "--dry-run"], "--source followed by an option"),
                       (["--db", db, "--frobnicate"], "unknown option"),
                       (["--db", db, "stray"], "stray argument"),
                       (["--db", db, "--dry-run=1"], "value for a flag")]:
        r = replay(*args)
        check(r.returncode == 2 and r.stderr.strip(), f"{what}: expected exit 2 and a message\n{show(r)}")
    check(snapshot(db) == (base_rows, base_files), "a usage error changed the outbox")
    r = replay("--help")
    check(r.returncode == 0 and "Usage" in r.stdout and "Examples" in r.stdout and "--purge" in r.stdout,
          f"--help\n{show(r)}")
    log("ok  usage errors exit 2; --help prints usage with examples")

    # Files that are not an outbox.
    other = os.path.join(tmp, "other.db")
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE t (a)")
    c.execute("PRAGMA user_version = 3")
    c.commit()
    c.close()
    v0 = os.path.join(tmp, "v0.db")
    build_outbox(v0, user_version=0)
    text = os.path.join(tmp, "notes.txt")
    with open(text, "w") as f:
        f.write("this is not a database\n" * 100)
    for path, what in [(other, "an SQLite db without outbox"), (v0, "user_version 0"),
                       (text, "a text file")]:
        before = open(path, "rb").read()
        for extra in ([], ["--dry-run"], ["--purge", "--yes"]):
            r = replay("--db", path, *extra)
            check(r.returncode == 2 and "outbox" in r.stderr,
                  f"{what} {extra}: expected exit 2 naming the outbox\n{show(r)}")
        check(open(path, "rb").read() == before, f"{what}: the file was modified")
    v0_rows = snapshot(v0)[0]
    check(v0_rows == ROWS, "user_version 0 outbox: rows changed")
    log("ok  non-outbox files rejected (exit 2) and left alone")

    # A missing file: rejected and not created.
    missing = os.path.join(tmp, "missing", "outbox.db")
    missing2 = os.path.join(tmp, "missing.db")
    for path in (missing, missing2):
        for extra in ([], ["--dry-run"], ["--purge", "--yes"]):
            r = replay("--db", path, *extra)
            check(r.returncode == 2 and r.stderr.strip(), f"missing {path} {extra}: expected exit 2\n{show(r)}")
            for suffix in ("", "-wal", "-shm", "-journal"):
                check(not os.path.exists(path + suffix), f"replay created {path + suffix}")
    check(not os.path.exists(os.path.dirname(missing)), "replay created a directory")
    log("ok  missing --db rejected (exit 2) and not created")


# ---------------------------------------------------------------------------
# Part 2: end to end with the running relay
# ---------------------------------------------------------------------------

def delivered_messages(path):
    out = []
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return out
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line)["message"])
        except (ValueError, KeyError):
            pass   # a batch being written right now
    return out


def cli_sql(db, sql):
    """The sqlite3 CLI as a second writer beside the running relay."""
    r = subprocess.run(["sqlite3", "-bail", "-batch", "-cmd", ".timeout 10000", db, sql],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise Failure(f"sqlite3 failed: {r.stderr}")
    return r.stdout


def insert_outbox_sql(outbox, rows):
    """INSERT INTO outbox for rows [(row id, "values of OUTBOX_COLUMNS")]. The row id is
    written only while the schema has an id column (the order in which the relay's lease
    cursor and its rescan meet rows); otherwise (file, inode, offset) orders the rows."""
    conn = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        with_id = "id" in [r[1] for r in conn.execute("PRAGMA table_info(outbox)")]
    finally:
        conn.close()
    return (f"INSERT INTO outbox ({'id, ' if with_id else ''}{OUTBOX_COLUMNS}) VALUES "
            + ", ".join(f"({row_id}, {v})" if with_id else f"({v})" for row_id, v in rows) + ";")


def part2(c):
    wd = c.wd
    logs, outbox, out, cfg = wd.logs, wd.outbox, wd.ndjson, wd.config
    with open(cfg, "w") as f:
        f.write(f"""host_id = "replay-e2e"

[[source]]
name = "app"
paths = [{json.dumps(os.path.join(logs, "*.log"))}]
read_from = "head"

[tail]
poll_interval = "100ms"
read_interval = "50ms"

[outbox]
path = {json.dumps(outbox)}

[delivery]
linger = "20ms"

[sink]
type = "file"
path = {json.dumps(out)}
format = "ndjson"
""")
    tb = c.tailbox()
    tb.start()
    # 0. The relay works: one real line arrives.
    with open(os.path.join(logs, "a.log"), "ab") as f:
        f.write(b"first real line\n")
    h.wait_until(lambda: "first real line" in delivered_messages(out), 30,
                 "the first real line in the output", tailbox=tb)
    log("ok  relay running; a real line was delivered")

    # 1. Dead rows inserted beside the running relay (a file of their own).
    fid = 900001
    cli_sql(outbox, f"""
        INSERT INTO files (id, source, path, dev, inode, fingerprint, fingerprint_len, uid,
                           read_offset, first_seen, last_seen, state)
          VALUES ({fid}, 'app', '/nonexistent/replay-test.log', 1, 424242,
                  'cbf29ce484222325', 0, 'replay-test-uid', 0, {NOW * 1000}, {NOW * 1000},
                  'released');
        """ + insert_outbox_sql(outbox, [
        (1000001, f"{fid}, 424242, 0, 20, {NOW * 1000}, CAST('replayed line one' AS BLOB), "
                  "5, 'HTTP 503: it''s down', 'dead'"),
        (1000002, f"{fid}, 424242, 20, 20, {NOW * 1000}, CAST('replayed line two' AS BLOB), "
                  "5, 'HTTP 503: it''s down', 'dead'")]))
    wanted = {"replayed line one", "replayed line two"}
    time.sleep(6.5)   # longer than the relay's rescan period: dead rows stay put
    tb.assert_alive("dead rows were in the outbox")
    check(not wanted & set(delivered_messages(out)), "the relay delivered dead rows")
    r = replay("--db", outbox, "--error", "it's down", "--dry-run")
    check(r.returncode == 0 and "2 dead rows" in r.stdout, f"e2e dry run\n{show(r)}")

    t = time.monotonic()
    r = replay("--db", outbox, "--yes")
    check(r.returncode == 0 and "replayed 2 dead rows to pending" in r.stdout,
          f"e2e replay while tailbox runs\n{show(r)}")
    h.wait_until(lambda: wanted <= set(delivered_messages(out)), 30,
                 "the 2 replayed rows (after the lease cursor) in the output", tailbox=tb)
    log(f"ok  relay delivered 2 replayed rows (after its cursor) "
        f"{time.monotonic() - t:.1f}s after the replay")

    # 2. Dead rows *behind* the relay's lease cursor (now past offset 20 of that
    #    file): only the periodic rescan from the start of the outbox finds them.
    cli_sql(outbox, insert_outbox_sql(outbox, [
        (500001, f"{fid}, 424242, 5, 20, {NOW * 1000}, CAST('behind cursor one' AS BLOB), "
                 "2, 'timeout', 'dead'"),
        (500002, f"{fid}, 424242, 10, 20, {NOW * 1000}, CAST('behind cursor two' AS BLOB), "
                 "2, 'timeout', 'dead'")]))
    wanted2 = {"behind cursor one", "behind cursor two"}
    t = time.monotonic()
    r = replay("--db", outbox, "--error", "timeout", "--source", "app", "--since", "1 hour ago")
    check(r.returncode == 0 and "replayed 2 dead rows to pending" in r.stdout,
          f"e2e replay (behind the cursor)\n{show(r)}")
    h.wait_until(lambda: wanted2 <= set(delivered_messages(out)), 30,
                 "the 2 replayed rows (behind the lease cursor) in the output", tailbox=tb)
    log(f"ok  relay delivered 2 replayed rows (behind its cursor) "
        f"{time.monotonic() - t:.1f}s after the replay")

    # Delivered exactly once, and acked (deleted from the outbox).
    msgs = delivered_messages(out)
    for m in wanted | wanted2 | {"first real line"}:
        check(msgs.count(m) == 1, f"{m!r} delivered {msgs.count(m)} times")
    h.wait_until(lambda: cli_sql(outbox, "SELECT count(*) FROM outbox;").strip() == "0", 15,
                 "the outbox to be empty after delivery", tailbox=tb)
    check(cli_sql(outbox, f"SELECT count(*) FROM files WHERE id = {fid};").strip() == "1",
          "the files row vanished")
    log("ok  each line delivered exactly once; outbox empty")

    rc = tb.stop(timeout=30)
    check(rc == 0, f"tailbox exited {rc} after SIGTERM")
    log("ok  tailbox stopped cleanly")


def test():
    if not os.path.exists(REPLAY):
        h.fail(f"tools/replay not found at {REPLAY}")
    if not os.access(REPLAY, os.X_OK):
        h.fail(f"{REPLAY} is not executable")
    log(f"repo {REPO}")
    with h.case("replay_tool", None, prefix="tailbox-replay-") as c:
        part1(c.wd.root)
    with h.case("replay_e2e", None, prefix="tailbox-replay-e2e-") as c:
        part2(c)
    log(f"{CHECKS} checks passed")


if __name__ == "__main__":
    h.main(test, "replay_integration_test")
