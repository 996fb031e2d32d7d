#!/usr/bin/env python3
"""Chaos: kill -9 tailbox while it publishes to a real nats-server (JetStream);
the stream must hold every line exactly once. Seeded (the seed is printed).

1. Inside the duplicate window (2 min): kill -9 at 5 random moments while
   lines are written (some torn), restart each time; exact at the end.
2. Beyond the duplicate window: the stream is created by tailbox with
   duplicate_window = "1s". kill -9 in the middle of deliveries, wait 3 s (the
   window has passed: the server no longer drops a redelivered Nats-Msg-Id),
   restart. Only the read-back at open() (the stream after the last
   acknowledged sequence) keeps the published-but-unconfirmed lines from being
   published twice. Repeated until at least 2 restarts found such lines
   (tailbox logs how many), at most 10 rounds; exact at the end.

Exit 77 (skip) when nats-server is not installed.
Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/nats_kill9_chaos_test.py
"""

import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import nats_case as nc  # noqa: E402
import nats_server  # noqa: E402


def write_for(w, rng, seconds, big=(50, 1500)):
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        w.burst(rng.randint(*big), torn=rng.random() < 0.2)
        time.sleep(rng.uniform(0, 0.05))


def case_kill9(ns, wd, tb, rng):
    stream = "KILL9"
    nc.write_nats_config(wd, ns.url, stream, sink_extra={"create_stream": True})
    w = nc.Writer(wd, rng)
    w.spread(5_000, 4)
    tb.start()
    for k in range(5):
        write_for(w, rng, rng.uniform(0.3, 2.0))
        tb.kill9()
        h.log(f"kill -9 #{k + 1}: {w.seq} lines written, {nc.stream_count(ns.port, stream)} "
              f"messages in the stream")
        if rng.random() < 0.5:
            w.burst(rng.randint(100, 2000))
        tb.start()
    w.burst(1_000)
    nc.wait_all(ns.port, stream, wd, tb, w.seq, 120, "every line after five kill -9")
    nc.stop_clean(tb)
    w.close()
    nc.check_exact(ns.port, stream, w.paths)
    nc.delete_stream(ns.port, stream)


def case_beyond_window(ns, wd, tb, rng):
    stream = "WINDOW"
    nc.write_nats_config(wd, ns.url, stream,
                         sink_extra={"create_stream": True, "duplicate_window": "1s"})
    w = nc.Writer(wd, rng)
    w.spread(20_000, 4)
    tb.start()
    h.wait_until(lambda: nc.read_backs(wd) or nc.stream_count(ns.port, stream) > 0, 30,
                 "the stream to be created", tailbox=tb)
    found = 0
    for k in range(10):
        # Kill while batches are in flight: keep the outbox busy.
        write_for(w, rng, rng.uniform(0.5, 1.5), big=(1000, 4000))
        tb.kill9()
        before = len(nc.read_backs(wd))
        h.log(f"kill -9 #{k + 1}: {w.seq} lines written, {nc.stream_count(ns.port, stream)} "
              f"messages in the stream; waiting 3 s (beyond the 1 s duplicate window)")
        time.sleep(3)   # the scenario itself: let the duplicate window pass
        tb.start()
        h.wait_until(lambda: len(nc.read_backs(wd)) > before, 30, "tailbox to read the stream back",
                     tailbox=tb)
        seen, after, skipped = nc.read_backs(wd)[-1]
        h.log(f"restart #{k + 1}: read back {seen} messages after sequence {after}, "
              f"{skipped} published but unconfirmed")
        if skipped > 0:
            found += 1
        if found >= 2 and k >= 2:
            break
    if found < 2:
        h.fail(f"only {found} restarts found published-but-unconfirmed lines: the test did not "
               f"exercise the read-back")
    w.burst(1_000)
    nc.wait_all(ns.port, stream, wd, tb, w.seq, 120, "every line after the restarts")
    nc.stop_clean(tb)
    w.close()
    nc.check_exact(ns.port, stream, w.paths)
    nc.delete_stream(ns.port, stream)


def test():
    seed = h.seed_from_env()
    rng = random.Random(seed)
    h.tailbox_bin()
    with nats_server.NatsServer() as ns:
        h.log(f"nats-server on {ns.url} ({ns.root})")
        for name, body in (("nats_kill9", case_kill9), ("nats_beyond_window", case_beyond_window)):
            t0 = time.monotonic()
            h.log(f"--- {name} ---")
            wd = h.Workdir(f"tailbox-{name}-")
            tb = h.Tailbox(wd)
            passed = False
            try:
                body(ns, wd, tb, rng)
                passed = True
            except h.TestFailure:
                h.report_failure_context(wd, seed)
                h.log(f"nats-server log:\n{ns.log_tail()}")
                raise
            finally:
                tb.close()
                wd.cleanup(passed)
            h.log(f"{name} passed in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    nats_server.require_nats_server()
    h.main(test, "nats_kill9_chaos_test")
