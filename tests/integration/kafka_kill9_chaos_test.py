#!/usr/bin/env python3
"""kill -9 against the kafka sink (librdkafka's mock cluster, 3 brokers): exactly once.

1. Random kills: lines are written to 4 files while tailbox is killed with
   SIGKILL at 6 random moments (seeded; brokers made slow at times so that
   kills land inside transactions), restarted each time; at the end the topic,
   read as read_committed, holds each line exactly once.
2. The gap, made on purpose: every line is read into the outbox while the
   brokers are down; another process then locks the outbox and the brokers come
   back, so transactions commit in Kafka but their rows cannot be deleted; then
   tailbox is killed. The restarted tailbox must read its progress record back and
   acknowledge those rows WITHOUT sending them again, also when its first
   attempts fail and are retried (Produce errors injected): exactly once, and
   its log says how many rows it skipped.
3. The same gap with mode = "idempotent": the rows ARE sent again, and the
   topic holds duplicates, which is what docs/sinks/kafka.md says of that mode
   (at-least-once across crashes). This also shows that case 2 can fail.

The mock ignores isolation.level; kafka_mock.py emulates read_committed (see there).
"""

import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import kafka_mock as km  # noqa: E402

SKIP_LOG = "were committed to Kafka before the last stop"


def case_random_kills(wd, cluster, tb, rng):
    km.write_kafka_config(wd, cluster.bootstrap, sink_extra={"timeout": "5s"},
                          delivery={"backoff_min": "100ms", "backoff_max": "1s", "batch_rows": 500})
    w = h.Writer(wd, rng)
    for p in w.paths:
        w.burst(2_000, path=p)
    tb.start()
    for k in range(6):
        slow = rng.random() < 0.5
        for b in (1, 2, 3):
            cluster.command(f"rtt {b} {rng.choice([20, 50]) if slow else 0}")
        t_kill = time.monotonic() + rng.uniform(0.3, 2.0)
        while time.monotonic() < t_kill:
            w.burst(rng.randint(50, 1500), torn=rng.random() < 0.2)
            time.sleep(rng.uniform(0, 0.05))
        tb.kill9()
        h.log(f"kill -9 #{k + 1}{' (slow brokers)' if slow else ''}: {w.seq} lines written, "
              f"{h.pending_rows(wd)} rows pending")
        if rng.random() < 0.5:
            w.burst(rng.randint(100, 2000))
        tb.start()
    for b in (1, 2, 3):
        cluster.command(f"rtt {b} 0")
    w.burst(1_000)
    km.wait_drained(wd, w, tb, timeout=180)
    h.stop_clean(tb)
    w.close()
    km.check_exact(cluster, w.paths)
    with open(wd.tailbox_log, errors="replace") as f:
        skips = sum(1 for line in f if SKIP_LOG in line)
    h.log(f"restarts that acknowledged committed rows without sending them: {skips} of 6")


def make_gap(wd, cluster, tb, rng, mode):
    """Delivers with the outbox locked, then kills tailbox; returns the Writer.

    The brokers are down while tailbox reads every line into the outbox; then
    another process takes the outbox's write lock and the brokers come back:
    tailbox delivers (leases need no write) and Kafka commits, but the rows
    cannot be deleted from the outbox. Then kill -9.
    """
    km.write_kafka_config(wd, cluster.bootstrap, sink_extra={"mode": mode, "timeout": "3s"},
                          delivery={"batch_rows": 200, "linger": "0ms", "backoff_max": "500ms"})
    w = h.Writer(wd, rng)
    for p in w.paths:
        w.burst(5_000, path=p)
    for b in (1, 2, 3):
        cluster.broker_down(b)
    tb.start()
    h.wait_until(lambda: h.caught_up_reading(wd, w.paths), 60, "every line in the outbox",
                 tailbox=tb)
    lock = sqlite3.connect(wd.outbox, timeout=30, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        for b in (1, 2, 3):
            cluster.broker_up(b)
        h.wait_until(lambda: len(cluster.dump(km.TOPIC)) > 0, 60,
                     "a transaction committed while the outbox is locked", interval=0.3, tailbox=tb)
        time.sleep(1.0)
        tb.kill9()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    if h.pending_rows(wd) != w.seq:
        h.fail(f"{h.pending_rows(wd)} rows pending after the kill, expected all {w.seq}: the lock did "
               "not hold the acks back")
    return w


def case_gap_transactional(wd, cluster, tb, rng):
    w = make_gap(wd, cluster, tb, rng, "transactional")
    # Restart with bigger batches, so that the first batch mixes rows to skip
    # with rows to send, and make its first attempts fail: a retry must skip
    # the same rows again.
    km.write_kafka_config(wd, cluster.bootstrap, sink_extra={"timeout": "2s"},
                          delivery={"batch_rows": 1000, "linger": "0ms", "backoff_max": "500ms"})
    cluster.produce_errors(40, km.TOPIC_AUTHORIZATION_FAILED)
    h.log(f"killed with {h.pending_rows(wd)} rows pending; restarting with Produce failing for a while")
    tb.start()
    km.wait_drained(wd, w, tb)
    h.stop_clean(tb)
    w.close()
    with open(wd.tailbox_log, errors="replace") as f:
        skipped = [line.strip() for line in f if SKIP_LOG in line]
    if not skipped:
        h.fail("the restarted tailbox did not acknowledge any committed row without sending it: "
               "the test did not make the gap it is about")
    h.log(f"tailbox said: {skipped[0][24:]}")
    with open(wd.tailbox_log, errors="replace") as f:
        retries = sum(1 for line in f if "failed (" in line and "retrying" in line)
    if retries == 0:
        h.fail("no delivery failed after the restart: the retry of skipped rows was not tested")
    h.log(f"{retries} failed attempts logged after the restart")
    km.check_exact(cluster, w.paths)


def case_gap_idempotent(wd, cluster, tb, rng):
    w = make_gap(wd, cluster, tb, rng, "idempotent")
    tb.start()
    km.wait_drained(wd, w, tb)
    h.stop_clean(tb)
    w.close()
    recs = cluster.read_all()
    keys = [r.key for r in recs]
    dups = len(keys) - len(set(keys))
    expected = h.expected_from_files(w.paths)
    if len(set(keys)) != len(expected):
        h.fail(f"idempotent mode lost lines: {len(set(keys))} distinct of {len(expected)}")
    if dups == 0:
        h.fail("idempotent mode sent nothing twice after the gap: the gap was not made")
    h.log(f"idempotent mode, as documented (at-least-once across crashes): {dups} duplicates, "
          f"no line lost")


def main():
    seed = h.seed_from_env()
    h.run_cases((("random_kills", case_random_kills), ("gap", case_gap_transactional),
                 ("gap_idempotent", case_gap_idempotent)), seed, km.case_args())


if __name__ == "__main__":
    h.main(main, "chaos_kafka_kill9")
