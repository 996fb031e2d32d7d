#!/usr/bin/env python3
"""Hostile input and bad configuration: a line the multiline pattern cannot
decide on, the metrics endpoint out of file descriptors (EMFILE), a read-only
outbox, another program's SQLite database as the outbox, a source that would
read tailbox's own output, and the messages of the command line. Real binary,
real files, real sockets on loopback; the cases that need another user run
tailbox as `nobody` and are skipped when not root.

Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/hostile_input_integration_test.py
"""

import hashlib
import os
import resource
import socket
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from ops_integration_test import metric, parse_metrics  # noqa: E402

NOBODY = 65534


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def log_text(wd):
    with open(wd.tailbox_log, errors="replace") as f:
        return f.read()


def run_once(args, timeout=20, preexec_fn=None):
    """`tailbox ARGS` that must exit by itself: (exit code, stdout + stderr)."""
    try:
        r = subprocess.run([h.tailbox_bin()] + args, capture_output=True, text=True,
                           timeout=timeout, preexec_fn=preexec_fn)
    except subprocess.TimeoutExpired:
        h.fail(f"tailbox {' '.join(args)} kept running for {timeout} s; it should have refused")
    return r.returncode, r.stdout + r.stderr


def as_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def open_to_nobody(wd):
    """Lets `nobody` into the work directory (mkdtemp makes it 0700)."""
    os.chmod(wd.root, 0o777)
    os.chmod(wd.logs, 0o777)
    os.chmod(wd.config, 0o644)


class LimitedTailbox(h.Tailbox):
    """A Tailbox started with RLIMIT_NOFILE = `nofile` (soft and hard: tailbox
    raises its soft limit to the hard one)."""

    def __init__(self, wd, nofile):
        super().__init__(wd)
        self.nofile = nofile

    def start(self):
        self.starts += 1
        if self.logf is None:
            self.logf = open(self.wd.tailbox_log, "ab", buffering=0)
        n = self.nofile
        self.proc = subprocess.Popen(
            [self.binary, "run", "-c", self.config], stdin=subprocess.DEVNULL, stdout=self.logf,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)))
        return self.proc


def case(fn):
    """Runs one case (harness.case: its own work directory, kept when the case fails)."""
    with h.case(fn.__name__, None, prefix=f"tailbox-hostile-{fn.__name__}-") as c:
        wd = c.wd
        tb = c.tailbox()
        fn(wd, tb)


# --------------------------------------------------------------------------- 11

def multiline_undecidable(wd, tb):
    """A line on which ^(a+)+$ gives up (complexity exceeded) used to stop the
    file's reader for good, on every restart, with /readyz ready."""
    port = h.free_port()
    h.write_config(wd, source={"multiline.start_pattern": "^(a+)+$", "multiline.timeout": "200ms"},
                   metrics={"listen": f"127.0.0.1:{port}"})
    path = wd.log_path("hostile.log")
    hostile = b"a" * 30000 + b"b"
    starts = [b"a" * (i + 1) for i in range(100)]
    with open(path, "wb") as f:
        f.write(b"aaa\n" + hostile + b"\n" + b"".join(s + b"\n" for s in starts))
    tb.start()
    h.wait_until(lambda: h.inbox_count(wd.inbox) == 101, 60,
                 "the hostile line's record and the 100 records after it", tailbox=tb)
    lines = sorted((r[0] for r in sqlite3.connect(wd.inbox).execute("SELECT line FROM inbox")), key=len)
    want = sorted([b"aaa\n" + hostile] + starts, key=len)
    if [bytes(x) for x in lines] != want:
        h.fail("the records are not the hostile line joined to the one before it plus one per start line")
    m = parse_metrics(h.http_get(f"http://127.0.0.1:{port}/metrics")[1])
    if metric(m, "tailbox_multiline_pattern_errors_total", source="app") < 1:
        h.fail("tailbox_multiline_pattern_errors_total did not count the undecidable line")
    code, body = h.http_get(f"http://127.0.0.1:{port}/readyz")
    if code != 200:
        h.fail(f"/readyz: {code} {body}")
    text = log_text(wd)
    if "could not decide" not in text:
        h.fail("no warning about the undecidable line")
    if "reader for" in text:
        h.fail("a reader stopped")
    if tb.stop() != 0:
        h.fail("tailbox did not exit 0")
    h.log("multiline: an undecidable line is 'no match', counted, warned; the file is read on")


def reader_stops_not_ready(wd, tb):
    """A reader that stops on an error must make /readyz fail. The fault is
    real: under RLIMIT_AS, the 64 MiB read buffer of a big file cannot be
    allocated (std::bad_alloc) while everything else still fits."""
    port = h.free_port()
    h.write_config(wd, tail={"read_chunk_bytes": "64MiB"}, metrics={"listen": f"127.0.0.1:{port}"})
    with open(wd.log_path("small.log"), "wb") as f:
        f.write(b"small\n")
    with open(wd.log_path("big.log"), "wb") as f:
        f.truncate(80 << 20)   # sparse: 80 MiB of zeros, read in 64 MiB chunks
    limit = 100 << 20
    env = dict(os.environ, MALLOC_ARENA_MAX="1")   # one malloc arena: a small, steady VmSize
    with open(wd.tailbox_log, "ab") as log:
        proc = subprocess.Popen(
            [h.tailbox_bin(), "run", "-c", wd.config], stdout=log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    try:
        h.wait_until(lambda: "reader for" in log_text(wd) or proc.poll() is not None, 30,
                     "the big file's reader to fail")
        if proc.poll() is not None:
            h.fail(f"tailbox exited ({proc.returncode}) instead of losing one reader")
        h.wait_until(lambda: h.inbox_count(wd.inbox) == 1, 30, "the small file's line")
        code, body = h.http_get(f"http://127.0.0.1:{port}/readyz")
        if code != 503 or "reader" not in body:
            h.fail(f"/readyz with a stopped reader: {code} {body}")
        m = parse_metrics(h.http_get(f"http://127.0.0.1:{port}/metrics")[1])
        if metric(m, "tailbox_readers_failed") != 1:
            h.fail("tailbox_readers_failed is not 1")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    h.log("a reader that stopped (bad_alloc) makes /readyz fail and is counted")


# --------------------------------------------------------------------------- 12

def metrics_emfile(wd, tb):
    """Out of descriptors, accept() fails at once while a connection waits:
    the old loop logged it tens of thousands of times a second."""
    port = h.free_port()
    h.write_config(wd, metrics={"listen": f"127.0.0.1:{port}"})
    path = wd.log_path("a.log")
    with open(path, "wb") as f:
        f.write(b"".join(b"before %d\n" % i for i in range(100)))
    tb = LimitedTailbox(wd, 64)
    clients = []
    try:
        tb.start()
        h.wait_until(lambda: h.inbox_count(wd.inbox) == 100, 30, "the first 100 lines", tailbox=tb)
        for _ in range(120):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            clients.append(s)
        h.wait_until(lambda: "accept failed" in log_text(wd), 15, "accept to fail (EMFILE)", tailbox=tb)
        size_then = os.path.getsize(wd.tailbox_log)
        with open(path, "ab") as f:
            f.write(b"".join(b"after %d\n" % i for i in range(100)))
        h.wait_until(lambda: h.inbox_count(wd.inbox) == 200, 30,
                     "the lines written while out of descriptors", tailbox=tb)
        time.sleep(3)
        tb.assert_alive("out of descriptors")
        grown = os.path.getsize(wd.tailbox_log) - size_then
        failures = log_text(wd).count("accept failed")
        if grown > 20000 or failures > 5:
            h.fail(f"the log grew by {grown} bytes ({failures} 'accept failed' lines) in ~3 s")
        for s in clients:
            s.close()
        clients = []
        h.wait_until(lambda: h.http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 30,
                     "the endpoint to answer again once descriptors are free", tailbox=tb)
        if tb.stop() != 0:
            h.fail("tailbox did not exit 0")
        h.check_exact(h.expected_from_files([path]), h.read_inbox(wd.inbox), host_id="edge1",
                      label="inbox with the metrics endpoint out of descriptors")
        h.log(f"EMFILE: {failures} 'accept failed' line(s), log grew {grown} bytes; lines kept flowing")
    finally:
        for s in clients:
            s.close()
        tb.close()


# --------------------------------------------------------------------------- 13

def readonly_outbox(wd, tb):
    h.write_config(wd)
    with open(wd.log_path("a.log"), "wb") as f:
        f.write(b"one\n")
    tb.start()
    h.wait_until(lambda: h.inbox_count(wd.inbox) == 1, 30, "a first run", tailbox=tb)
    if tb.stop() != 0:
        h.fail("tailbox did not exit 0")
    os.chmod(wd.outbox, 0o444)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(wd.outbox + suffix):
            os.remove(wd.outbox + suffix)
    code, out = run_once(["run", "-c", wd.config])
    if code != 1 or wd.outbox not in out or "read-only" not in out or "0444" not in out:
        h.fail(f"a 0444 outbox: exit {code}: {out}")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(wd.outbox + suffix):
            h.fail(f"{suffix} was created beside the refused outbox")
    os.chmod(wd.outbox, 0o600)
    h.log("read-only outbox: refused at start, naming the file and its mode")


# --------------------------------------------------------------------------- 15

def foreign_database(wd, tb):
    db = os.path.join(wd.root, "customers.db")
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    digest = sha256(db)
    h.write_config(wd, outbox={"path": db})
    code, out = run_once(["run", "-c", wd.config])
    if code != 1 or "not a tailbox outbox" not in out or db not in out:
        h.fail(f"another program's database as the outbox: exit {code}: {out}")
    if sha256(db) != digest:
        h.fail("the foreign database's bytes changed")
    if os.path.exists(db + "-wal"):
        h.fail("the foreign database was switched to WAL")
    h.log("foreign database: refused, byte for byte unchanged")


# --------------------------------------------------------------------------- 18

def feedback_loop(wd, tb):
    h.write_config(wd, sink="file", source={"paths": [os.path.join(wd.root, "*")]})
    for command in (["check", "-c", wd.config], ["run", "-c", wd.config]):
        code, out = run_once(command)
        if code != 2 or '"app"' not in out or os.path.join(wd.root, "*") not in out:
            h.fail(f"{command[0]}: a glob matching the sink's output: exit {code}: {out}")
        if wd.ndjson not in out and wd.outbox not in out:
            h.fail(f"{command[0]}: the message does not name the file: {out}")
    if os.path.exists(wd.ndjson) and os.path.getsize(wd.ndjson) > 0:
        h.fail("the refused configuration wrote output")
    h.log("feedback loop: refused at load time, naming source, glob and file")


# --------------------------------------------------------------------------- 19

def cli_messages(wd, tb):
    h.write_config(wd)
    code, out = run_once(["check", "-c", wd.root])
    if code != 2 or "is a directory" not in out or "at least one [[source]]" in out:
        h.fail(f"check -c DIRECTORY: exit {code}: {out}")

    outbox_dir = os.path.join(wd.root, "outbox-dir")
    os.mkdir(outbox_dir)
    h.write_config(wd, outbox={"path": outbox_dir})
    code, out = run_once(["check", "-c", wd.config])
    if code != 2 or "is a directory" not in out or outbox_dir not in out:
        h.fail(f"check with an outbox path that is a directory: exit {code}: {out}")

    h.write_config(wd)
    code, out = run_once(["check", "-c", wd.config, "--outbox"])
    if code != 1 or "does not exist" not in out or ".recover" in out:
        h.fail(f"check --outbox on a missing outbox: exit {code}: {out}")
    if os.path.exists(wd.outbox):
        h.fail("check --outbox created the outbox")
    h.log("check: directory config, directory outbox and missing outbox explained")


def run_messages(wd, tb):
    """Warnings while running, and the stop line's count."""
    missing = os.path.join(wd.root, "nowhere", "*.log")
    h.write_config(wd, source={"paths": [os.path.join(wd.logs, "*.log"), missing]})
    with open(wd.log_path("a.log"), "wb") as f:
        f.write(b"".join(b"line %d\n" % i for i in range(3000)))
    tb.start()
    h.wait_until(lambda: h.inbox_count(wd.inbox) == 3000, 60, "3000 lines", tailbox=tb)
    h.wait_until(lambda: h.outbox_count(wd.outbox) == 0, 30, "an empty outbox", tailbox=tb)
    time.sleep(1)   # a few more scans: the warning must stay single
    if tb.stop() != 0:
        h.fail("tailbox did not exit 0")
    text = log_text(wd)
    warned = [line for line in text.splitlines() if missing in line]
    if len(warned) != 1 or "app" not in warned[0] or "matches no file" not in warned[0]:
        h.fail(f"a glob that matches nothing: {warned}")
    stop = [line for line in text.splitlines() if "stopped:" in line]
    if not stop or " 0 rows left in the outbox" not in stop[-1]:
        h.fail(f"the stop line does not count the empty outbox: {stop}")
    h.log("run: an empty glob warned once; the stop line counts the outbox")


def stop_line_counts_the_outbox(wd, tb):
    """Rows purged by hand (tools/replay --purge) just before a stop: the
    stop line must count what the outbox holds, not a running tally."""
    h.write_config(wd, delivery={"max_attempts": 1, "backoff_min": "50ms", "backoff_max": "100ms"})
    path = wd.log_path("a.log")
    with open(path, "wb") as f:
        f.write(b"first\n")
    tb.start()
    h.wait_until(lambda: h.inbox_count(wd.inbox) == 1, 30, "the sink to open", tailbox=tb)
    lock = h.InboxLock(wd.inbox)
    try:
        with open(path, "ab") as f:
            f.write(b"".join(b"doomed %d\n" % i for i in range(500)))
        h.wait_until(lambda: len(h.dead_rows(wd)) == 500, 60, "500 dead rows (inbox locked)", tailbox=tb)
    finally:
        lock.release()
    r = subprocess.run([os.path.join(h.REPO_ROOT, "tools", "replay"), "--db", wd.outbox, "--purge",
                        "--yes"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        h.fail(f"tools/replay --purge: {r.stdout}{r.stderr}")
    if tb.stop() != 0:
        h.fail("tailbox did not exit 0")
    if h.outbox_count(wd.outbox) != 0:
        h.fail("the outbox is not empty after the purge")
    stop = [line for line in log_text(wd).splitlines() if "stopped:" in line]
    if not stop or " 0 rows left in the outbox" not in stop[-1]:
        h.fail(f"the stop line does not count the empty outbox: {stop}")
    h.log("the stop line counts the rows the outbox holds (0 after a purge)")


def other_user_messages(wd, tb):
    if os.geteuid() != 0:
        h.log("other user: SKIPPED (needs root to run tailbox as nobody)")
        return
    h.write_config(wd)
    secret = wd.log_path("secret.log")
    with open(secret, "wb") as f:
        f.write(b"root only\n")
    os.chmod(secret, 0o600)
    with open(wd.log_path("open.log"), "wb") as f:
        f.write(b"anyone\n")
    os.chmod(wd.log_path("open.log"), 0o644)
    # A root-owned outbox (created by a run as root) given to nobody.
    tb.start()
    h.wait_until(lambda: h.inbox_count(wd.inbox) == 2, 30, "a first run as root", tailbox=tb)
    if tb.stop() != 0:
        h.fail("tailbox did not exit 0")
    open_to_nobody(wd)
    code, out = run_once(["run", "-c", wd.config], preexec_fn=as_nobody)
    if code != 1 or "permission denied" not in out or wd.outbox not in out:
        h.fail(f"a root-owned outbox run as nobody: exit {code}: {out}")
    if "unable to open database file" in out:
        h.fail(f"SQLite's message instead of ours: {out}")
    h.log("other user: a root-owned outbox is refused with 'permission denied', naming it")

    # The same files, a fresh outbox and inbox nobody owns: the unreadable file is warned once.
    for p in (wd.outbox, wd.outbox + ".lock", wd.inbox):
        if os.path.exists(p):
            os.remove(p)
    log = open(wd.tailbox_log, "ab")
    proc = subprocess.Popen([h.tailbox_bin(), "run", "-c", wd.config], stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=as_nobody, start_new_session=True)
    try:
        h.wait_until(lambda: os.path.exists(wd.inbox) and h.inbox_count(wd.inbox) == 1, 30,
                     "the readable file as nobody")
        time.sleep(1.5)   # several scans
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    warned = [line for line in log_text(wd).splitlines() if "cannot open" in line and secret in line]
    if len(warned) != 1 or "warn" not in warned[0].lower():
        h.fail(f"an unreadable log file should be warned about once: {warned}")
    h.log("other user: an unreadable log file is warned about once")


def test():
    for fn in (multiline_undecidable, reader_stops_not_ready, metrics_emfile, readonly_outbox, foreign_database,
               feedback_loop, cli_messages, run_messages, stop_line_counts_the_outbox,
               other_user_messages):
        case(fn)


if __name__ == "__main__":
    h.main(test, "hostile_input_integration_test")
