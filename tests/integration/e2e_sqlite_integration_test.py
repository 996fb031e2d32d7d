#!/usr/bin/env python3
"""End to end into the sqlite inbox: 200,000 lines in 4 files, exactly once.

1. 50,000 lines are in 3 files before tailbox starts; a 4th file appears later.
2. 150,000 more lines are appended in bursts while tailbox runs (some bursts are
   torn: written in two write() calls with a pause, so tailbox sees half a line),
   among them CRLF lines, empty lines, non-UTF-8 bytes and one 1 MiB line that is
   written in three pieces.
3. Wait for full delivery (inbox count and `tailbox status`), SIGTERM: exit 0, the
   inbox holds every line exactly once with the file's exact bytes, the outbox is
   empty and every file's read_offset equals its size.
4. Restart: for 3 s nothing new may arrive (row count unchanged, and the run must
   read nothing: a graceful stop left the checkpoints at the end of each file).
   Then 2,000 more lines are appended; they arrive, and the whole inbox is
   checked again.

Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/e2e_sqlite_integration_test.py
"""

import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

TOTAL_LINES = 200_000
BEFORE_START = 50_000
FILES = ["a.log", "b.log", "c.log", "d.log"]
BIG_LINE_BYTES = 1 << 20          # the 1 MiB line (exactly max_line_bytes: one record)
DELIVERY_TIMEOUT = 120
HOST = "edge1"


def test():
    seed = h.seed_from_env()
    rng = random.Random(seed)
    with h.case("e2e_sqlite", seed, prefix="tailbox-e2e-") as c:
        wd = c.wd
        tb = c.tailbox()
        src = c.add(h.SourceFiles([wd.log_path(n) for n in FILES]))
        h.write_config(wd, sink="sqlite", host_id=HOST)
        r = h.run_cli(["check", "-c", wd.config])
        if r.returncode != 0:
            h.fail(f"tailbox check rejected the test config: {r.stdout}{r.stderr}")

        seq = 0

        def burst(path, n, torn=False):
            nonlocal seq
            data = b"".join(h.make_line(rng, os.path.basename(path)[0], seq + i) for i in range(n))
            seq += n
            split = rng.randrange(1, len(data)) if torn and len(data) > 1 else None
            src.write(path, data, n, split_at=split, pause=0.05 if split else 0.0)

        # 1. Before start: 3 files (d.log appears later).
        per_file = BEFORE_START // 3
        for k, name in enumerate(FILES[:3]):
            n = per_file if k < 2 else BEFORE_START - 2 * per_file
            burst(wd.log_path(name), n)
        written = BEFORE_START
        h.log(f"{written} lines in 3 files before start; starting tailbox")

        tb.start()
        time.sleep(0.3)
        tb.assert_alive("starting")

        # 2. Bursts while running, including the 1 MiB line and a new file.
        big_at = rng.randrange(30_000, 120_000)    # after this many appended lines
        big_done = False
        appended = 0
        to_append = TOTAL_LINES - BEFORE_START
        t_write = time.monotonic()
        while appended < to_append:
            if not big_done and appended >= big_at:
                path = wd.log_path("c.log")
                burst(path, 3)
                big = b"big " + b"".join(rng.choice([b"x", b"y", b"z"]) for _ in range(64)) * (
                    (BIG_LINE_BYTES - 4) // 64 + 1)
                big = big[:BIG_LINE_BYTES] + b"\n"
                cut1, cut2 = len(big) // 3, 2 * len(big) // 3
                src.write(path, big[:cut1], 0)
                time.sleep(0.1)
                src.write(path, big[cut1:cut2], 0)
                time.sleep(0.1)
                src.write(path, big[cut2:], 1)
                seq += 1
                burst(path, 3)
                appended += 7
                big_done = True
                h.log("wrote the 1 MiB line into c.log")
                continue
            n = min(rng.randint(100, 5000), to_append - appended)
            # d.log only exists once the appending phase is under way.
            name = rng.choice(FILES if appended > 20_000 else FILES[:3])
            burst(wd.log_path(name), n, torn=rng.random() < 0.2)
            appended += n
            time.sleep(rng.uniform(0, 0.03))
            tb.assert_alive("lines were appended")
        written += appended
        h.log(f"appended {appended} lines in {time.monotonic() - t_write:.1f}s "
              f"(total {written}, including the 1 MiB line)")

        paths = [wd.log_path(n) for n in FILES]
        expected = h.expected_from_files(paths)
        if len(expected) != written:
            h.fail(f"test bug: wrote {written} lines but the files hold {len(expected)}")

        # 3. Full delivery, then a graceful stop.
        t0 = time.monotonic()
        h.wait_until(lambda: h.inbox_count(wd.inbox) >= len(expected), DELIVERY_TIMEOUT,
                     f"{len(expected)} rows in the inbox", interval=0.5, tailbox=tb,
                     progress=lambda: f"inbox has {h.inbox_count(wd.inbox)}")

        def drained():
            s = h.status_json(wd.config)
            return s["pending_rows"] == 0 and s["dead_rows"] == 0
        h.wait_until(drained, 30, "the outbox to drain (status pending_rows = 0)", interval=0.3,
                     tailbox=tb, progress=lambda: str(h.status_json(wd.config)))
        h.log(f"all {len(expected)} lines delivered {time.monotonic() - t0:.1f}s after the "
              f"last write; stopping with SIGTERM")
        rc = tb.stop()
        if rc != 0:
            h.fail(f"tailbox exited {rc} after SIGTERM, expected 0")

        delivered = h.read_inbox(wd.inbox)
        h.log(h.check_exact(expected, delivered, HOST, "inbox"))
        check_outbox_at_end(wd, paths)

        # 4. Restart: nothing new may arrive.
        count_before = len(delivered)
        tb.start()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            tb.assert_alive("restarted")
            n = h.inbox_count(wd.inbox)
            if n != count_before:
                h.fail(f"after a restart with nothing new to read the inbox went from "
                       f"{count_before} to {n} rows")
            time.sleep(0.25)
        s = h.status_json(wd.config)
        if s["pending_rows"] != 0:
            h.fail(f"after a restart with nothing new, {s['pending_rows']} rows are pending "
                   f"again in the outbox (lines were read a second time)")

        # ... and lines appended now are delivered.
        for _ in range(4):
            burst(wd.log_path(rng.choice(FILES)), 500, torn=True)
        expected = h.expected_from_files(paths)
        h.wait_until(lambda: h.inbox_count(wd.inbox) >= len(expected), 60,
                     f"{len(expected)} rows after the restart", interval=0.3, tailbox=tb,
                     progress=lambda: f"inbox has {h.inbox_count(wd.inbox)}")
        h.wait_until(drained, 30, "the outbox to drain after the restart", interval=0.3,
                     tailbox=tb)
        rc = tb.stop()
        if rc != 0:
            h.fail(f"tailbox exited {rc} after SIGTERM (second run), expected 0")
        summary = h.stop_summary(wd.tailbox_log, 2)
        if summary is None:
            h.fail("the second run did not log its 'stopped: ...' summary")
        lines_read, rows_delivered = summary
        if lines_read != 2000 or rows_delivered != 2000:
            h.fail(f"the second run read {lines_read} lines and delivered {rows_delivered} rows; "
                   f"only the 2000 new lines should have been read and delivered (the rest "
                   f"was re-read from an old checkpoint)")
        delivered = h.read_inbox(wd.inbox)
        h.log(h.check_exact(expected, delivered, HOST, "inbox after the restart"))
        check_outbox_at_end(wd, paths)
        # Checked last so that a wrong column type does not hide the checks above.
        types = h.inbox_type_problems(wd.inbox)
        if types:
            h.fail("every line arrived exactly once, but the inbox stores values with the "
                   "wrong SQLite type (lookups by key/path as TEXT find nothing):\n  - "
                   + "\n  - ".join(types))


def check_outbox_at_end(wd, paths):
    n = h.outbox_count(wd.outbox)
    if n != 0:
        h.fail(f"the outbox still holds {n} rows after a graceful stop ({h.outbox_states(wd.outbox)})")
    s = h.status_json(wd.config)
    offsets = {f["path"]: (f["read_offset"], f["size"]) for f in s["files"]}
    for p in paths:
        size = os.path.getsize(p)
        if p not in offsets:
            h.fail(f"tailbox status does not list {p}: {s['files']}")
        if offsets[p][0] != size:
            h.fail(f"{p}: read_offset {offsets[p][0]} != file size {size} after full delivery")


if __name__ == "__main__":
    h.main(test, "e2e_sqlite_integration_test")
