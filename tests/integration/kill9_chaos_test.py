#!/usr/bin/env python3
"""kill -9 chaos: lines keep being appended while tailbox is SIGKILLed and restarted.

For each sink (the sqlite inbox, then the file sink writing NDJSON):
  - a writer thread appends 200,000 lines to 4 files in paced bursts (some bursts
    torn in two write() calls; CRLF, empty, non-UTF-8 and JSON-hostile lines
    included; the 4th file only appears after a while);
  - tailbox is killed with SIGKILL at 5 random moments and restarted after a
    random pause (0-0.5 s) each time;
  - then it drains, is stopped with SIGTERM (exit 0), and the destination must hold
    every line exactly once with its exact bytes, and the outbox must be empty.

For the file sink a duplicate is a real repeated "_id" line in the NDJSON file: the
strongest check. For the sqlite inbox (PRIMARY KEY = idempotency key) a duplicate
shows as one line stored under two keys, or as a row count that differs.

The seed (TAILBOX_SEED, or random) drives line contents, burst sizes and kill
times; thread timing still varies between runs.
Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/kill9_chaos_test.py
"""

import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

TOTAL_LINES = 200_000
FILES = ["a.log", "b.log", "c.log", "d.log"]
KILLS = 5
WRITE_RATE = 10_000          # lines per second, on average
DRAIN_TIMEOUT = 90
HOST = "chaos1"


class Writer(threading.Thread):
    def __init__(self, wd, seed):
        super().__init__(name="writer", daemon=True)
        self.wd = wd
        self.rng = random.Random(seed)
        self.src = h.SourceFiles([wd.log_path(n) for n in FILES])
        self.written = 0
        self.error = None
        self.stop_flag = threading.Event()

    def prefill(self, n_per_file):
        for name in FILES[:3]:
            self.burst(name, n_per_file)

    def burst(self, name, n, torn=False):
        path = self.wd.log_path(name)
        data = b"".join(h.make_line(self.rng, name[0], self.written + i) for i in range(n))
        split = self.rng.randrange(1, len(data)) if torn and len(data) > 1 else None
        self.src.write(path, data, n, split_at=split, pause=0.02 if split else 0.0)
        self.written += n

    def run(self):
        try:
            t0 = time.monotonic()
            while self.written < TOTAL_LINES and not self.stop_flag.is_set():
                n = min(self.rng.randint(50, 2000), TOTAL_LINES - self.written)
                names = FILES if self.written > TOTAL_LINES // 4 else FILES[:3]
                self.burst(self.rng.choice(names), n, torn=self.rng.random() < 0.15)
                # Pace: stay near WRITE_RATE lines/s.
                ahead = self.written / WRITE_RATE - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as e:   # reported by the main thread
            self.error = e
        finally:
            self.src.close()


def scenario(sink, seed):
    with h.case(f"kill9_{sink}", seed, prefix=f"tailbox-chaos-{sink}-") as c:
        rng = random.Random(seed)
        wd = c.wd
        tb = c.tailbox()
        writer = Writer(wd, seed * 7919 + 1)
        h.log(f"--- sink = {sink}: {TOTAL_LINES} lines, {KILLS} x SIGKILL, dir {wd.root}")
        h.write_config(wd, sink=sink, host_id=HOST)
        writer.prefill(500)
        tb.start()
        writer.start()

        def stop_writer():
            writer.stop_flag.set()
            if writer.is_alive():
                writer.join(timeout=30)
        c.defer(stop_writer)

        # SIGKILL at random moments, restart after a random pause.
        t0 = time.monotonic()
        for k in range(KILLS):
            # Mostly spread over the writer's ~20 s; sometimes right after a
            # (re)start, while tailbox opens the outbox and scans.
            if rng.random() < 0.2:
                gap = rng.uniform(0.01, 0.2)
            else:
                gap = rng.uniform(0.2, 2.0 * TOTAL_LINES / WRITE_RATE / KILLS)
            end = time.monotonic() + gap
            while time.monotonic() < end:
                tb.assert_alive(f"running before kill #{k + 1}")
                time.sleep(min(0.05, max(0.0, end - time.monotonic())))
            status = tb.kill9()
            if status != -9:
                h.fail(f"kill #{k + 1}: tailbox had already exited with status {status}")
            pause = rng.uniform(0.0, 0.5)
            h.log(f"kill #{k + 1} at {time.monotonic() - t0:.2f}s (after {gap:.2f}s of running; "
                  f"{writer.written} lines written); restart in {pause:.2f}s")
            time.sleep(pause)
            tb.start()

        writer.join(timeout=120)
        if writer.is_alive():
            writer.stop_flag.set()
            h.fail("the writer did not finish within 120 s")
        if writer.error:
            h.fail(f"the writer failed: {writer.error!r}")
        h.log(f"writer done: {writer.written} lines in {time.monotonic() - t0:.1f}s; draining")

        paths = [wd.log_path(n) for n in FILES]
        expected = h.expected_from_files(paths)
        if len(expected) != writer.written:
            h.fail(f"test bug: wrote {writer.written} lines, the files hold {len(expected)}")

        if sink == "sqlite":
            count = lambda: h.inbox_count(wd.inbox)  # noqa: E731
        else:
            counter = h.NewlineCounter(wd.ndjson)
            count = counter.poll
        h.wait_until(lambda: count() >= len(expected), DRAIN_TIMEOUT,
                     f"{len(expected)} records at the destination", interval=0.5, tailbox=tb,
                     progress=lambda: f"destination has {count()}, status "
                                      f"{h.status_json(wd.config)}")

        def drained():
            s = h.status_json(wd.config)
            return s["pending_rows"] == 0 and s["dead_rows"] == 0
        h.wait_until(drained, 30, "the outbox to drain (pending_rows = 0)", interval=0.3,
                     tailbox=tb, progress=lambda: str(h.status_json(wd.config)))
        rc = tb.stop()
        if rc != 0:
            h.fail(f"tailbox exited {rc} after SIGTERM, expected 0")

        if sink == "sqlite":
            delivered = h.read_inbox(wd.inbox)
            problems = []
        else:
            delivered, problems = h.read_ndjson(wd.ndjson)
        if problems:
            h.fail("the NDJSON output has malformed lines:\n  - "
                   + "\n  - ".join(problems[:10]))
        h.log(h.check_exact(expected, delivered, HOST, f"{sink} destination"))

        left = h.outbox_count(wd.outbox)
        if left != 0:
            h.fail(f"`select count(*) from outbox` = {left} after draining and a graceful stop "
                   f"({h.outbox_states(wd.outbox)})")
        if sink == "sqlite":
            types = h.inbox_type_problems(wd.inbox)
            if types:
                h.fail("every line arrived exactly once, but the inbox stores values with the "
                       "wrong SQLite type:\n  - " + "\n  - ".join(types))


def test():
    seed = h.seed_from_env()
    failures = []
    for i, sink in enumerate(("sqlite", "file")):
        try:
            scenario(sink, seed + i)
        except h.TestFailure as e:
            failures.append(f"[sink {sink}] {e}")
            h.log(f"sink {sink}: FAILED: {e}")
    if failures:
        h.fail(f"(seed {seed})\n" + "\n".join(failures))


if __name__ == "__main__":
    h.main(test, "kill9_chaos_test")
