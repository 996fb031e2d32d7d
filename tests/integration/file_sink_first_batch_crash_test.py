#!/usr/bin/env python3
"""Regression: the file sink must not duplicate a batch written before any ack.

The file sink is exactly-once by "fsync, then commit the new size with the ack";
at start it cuts bytes past the committed size. Before the very first ack there
is no committed size (no sink_state row), so a crash between the first batch's
fdatasync and its ack leaves those bytes in the file while the rows stay in the
outbox: after a restart they are written again.

Deterministic: the worker lingers 2 s before its first batch; meanwhile the test
takes the outbox's write lock (BEGIN IMMEDIATE), so the ack cannot commit; once
the NDJSON file holds the batch, tailbox is SIGKILLed, the lock released, and
tailbox restarted. The NDJSON file must hold each line once.

A control case runs the same crash on a later batch (a committed size exists).
Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/file_sink_first_batch_crash_test.py
"""

import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HOST = "edge1"


def crash_between_write_and_ack(first_batch):
    label = "first batch" if first_batch else "later batch (control)"
    name = "crash_after_first_batch" if first_batch else "crash_after_later_batch"
    with h.case(name, None, prefix="tailbox-fsfirst-") as c:
        wd = c.wd
        tb = c.tailbox()
        h.write_config(wd, sink="file", host_id=HOST,
                       delivery={"linger": "2s", "batch_rows": 1000})
        path = wd.log_path("a.log")
        src = c.add(h.SourceFiles([path]))
        written = 0

        def lines(n):
            nonlocal written
            src.write(path, b"".join(b"line %06d\n" % (written + i) for i in range(n)), n)
            written += n

        lines(10)
        tb.start()
        ndjson = h.NewlineCounter(wd.ndjson)
        if not first_batch:
            h.wait_until(lambda: ndjson.poll() == 10 and h.outbox_count(wd.outbox) == 0, 20,
                         "the first 10 lines delivered and acked", tailbox=tb)
            lines(10)
        h.wait_until(lambda: h.outbox_count(wd.outbox) == 10, 20, "10 rows in the outbox",
                     interval=0.02, tailbox=tb)
        lock = c.add(sqlite3.connect(wd.outbox, timeout=10, isolation_level=None))
        lock.execute("BEGIN IMMEDIATE")   # the ack now waits for this lock
        h.wait_until(lambda: ndjson.poll() == written, 20,
                     f"{written} lines in the NDJSON file (batch written, ack blocked)",
                     interval=0.02, tailbox=tb)
        time.sleep(0.3)
        if h.outbox_count(wd.outbox) != 10:
            h.fail("test bug: the ack committed although the outbox was locked")
        if tb.kill9() != -9:
            h.fail("tailbox had exited before the kill")
        lock.execute("ROLLBACK")
        lock.close()
        lock = None
        src.close()

        tb.start()
        h.wait_until(lambda: h.status_json(wd.config)["pending_rows"] == 0, 30,
                     "the outbox to drain after the restart", interval=0.2, tailbox=tb)
        rc = tb.stop()
        if rc != 0:
            h.fail(f"tailbox exited {rc} after SIGTERM")
        delivered, problems = h.read_ndjson(wd.ndjson)
        if problems:
            h.fail("malformed NDJSON: " + "; ".join(problems[:5]))
        expected = h.expected_from_files([path])
        h.log(h.check_exact(expected, delivered, HOST, f"NDJSON file, crash after the {label}"))


def test():
    failures = []
    for first in (False, True):
        try:
            crash_between_write_and_ack(first)
        except h.TestFailure as e:
            failures.append(str(e))
    if failures:
        h.fail("\n".join(failures))


if __name__ == "__main__":
    h.main(test, "file_sink_first_batch_crash_test")
