#!/usr/bin/env python3
"""A new outbox under an existing destination, and an outbox deleted while
tailbox runs. Real binary, real files.

1. file sink (NDJSON): lines delivered, tailbox stopped, the outbox moved away
   (docs/operations.md's advice for a damaged one), more lines written, tailbox started
   on a fresh outbox. The files are read again from the start. Every line must
   be in the output; when the fresh outbox gives the files the same uids (the
   same keys) the output must hold each line exactly once (the file sink reads
   the keys already in its output); when the uids differ (salted per outbox),
   duplicates are expected and tailbox must have said so.
2. the outbox deleted while tailbox runs: tailbox must notice within seconds,
   say why, and exit non-zero (it would otherwise go on writing into an
   unlinked database whose rows vanish at exit).

Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/fresh_outbox_integration_test.py
"""

import collections
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def uids(outbox):
    conn = h.sqlite_connect(outbox)
    try:
        return dict(conn.execute("SELECT path, uid FROM files"))
    finally:
        conn.close()


def remove_outbox(wd):
    for suffix in ("", "-wal", "-shm", ".reserve"):
        try:
            os.remove(wd.outbox + suffix)
        except FileNotFoundError:
            pass


def case_file_sink_fresh_outbox():
    with h.case("file_sink_fresh_outbox", None, prefix="tailbox-fresh-file-") as c:
        wd = c.wd
        tb = c.tailbox()
        h.write_config(wd, sink="file")
        w = h.Writer(wd, random.Random(16), files=("a.log", "b.log"))
        w.spread(10000, 10)
        tb.start()
        h.wait_until(lambda: h.caught_up(wd, w.paths), 60, "10000 lines delivered", tailbox=tb)
        h.stop_clean(tb)
        first = uids(wd.outbox)
        remove_outbox(wd)
        w.spread(5000, 4)
        tb.start()
        h.wait_until(lambda: h.caught_up(wd, w.paths), 60, "15000 lines through a fresh outbox",
                     tailbox=tb)
        h.stop_clean(tb)
        second = uids(wd.outbox)
        records, problems = h.read_ndjson(wd.ndjson)
        if problems:
            h.fail("; ".join(problems[:3]))
        expected = h.expected_from_files(w.paths)
        got = collections.Counter((r.path, r.offset) for r in records)
        missing = [k for k in expected if got[k] == 0]
        if missing:
            h.fail(f"{len(missing)} lines missing from the output, e.g. {missing[:3]}")
        if first == second:
            h.check_exact(expected, records, label="NDJSON output after a fresh outbox")
            h.log(f"fresh outbox, same uids: {len(records)} records, each line exactly once")
        else:
            dups = sum(n - 1 for n in got.values() if n > 1)
            h.log(f"fresh outbox with new uids: {dups} duplicates (expected, documented), no loss")
        log_text = open(wd.tailbox_log, errors="replace").read()
        if "already holds" not in log_text:
            h.fail("the file sink did not say that its output already held records")


def case_outbox_deleted_while_running():
    with h.case("outbox_deleted_while_running", None, prefix="tailbox-fresh-deleted-") as c:
        wd = c.wd
        tb = c.tailbox()
        h.write_config(wd)
        w = h.Writer(wd, random.Random(17), files=("a.log",))
        w.burst(2000)
        tb.start()
        h.wait_until(lambda: h.caught_up(wd, w.paths), 60, "2000 lines delivered", tailbox=tb)
        remove_outbox(wd)
        t0 = time.monotonic()
        w.burst(1000)
        try:
            rc = tb.proc.wait(timeout=15)
        except Exception:
            h.fail("tailbox kept running for 15 s after its outbox was deleted")
        took = time.monotonic() - t0
        log_text = open(wd.tailbox_log, errors="replace").read()
        if rc == 0 or "deleted or replaced" not in log_text:
            h.fail(f"outbox deleted: exit {rc}; log:\n{log_text[-1500:]}")
        h.log(f"outbox deleted while running: tailbox stopped after {took:.1f}s with exit {rc}")
        # A restart starts a new outbox; nothing written meanwhile is lost.
        tb.start()
        h.wait_until(lambda: h.caught_up(wd, w.paths), 60, "a restart to catch up", tailbox=tb)
        h.stop_clean(tb)
        delivered = h.read_inbox(wd.inbox)
        got = {(r.path, r.offset) for r in delivered}
        missing = [k for k in h.expected_from_files(w.paths) if k not in got]
        if missing:
            h.fail(f"{len(missing)} lines lost, e.g. {missing[:3]}")


def test():
    case_file_sink_fresh_outbox()
    case_outbox_deleted_while_running()


if __name__ == "__main__":
    h.main(test, "fresh_outbox_integration_test")
