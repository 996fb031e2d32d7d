#!/usr/bin/env python3
"""The kafka sink against librdkafka's mock cluster (3 brokers), exactly once.

Every check reads the topic back (kafka_mock.py; records of transactions that
never wrote their progress record are hidden, emulating read_committed, which
the mock does not implement) and compares it line by line with the files.

1. Broker errors: 60,000 lines in 4 files into a 32-partition topic while the
   mock fails Produce requests (NOT_LEADER_FOR_PARTITION, NOT_ENOUGH_REPLICAS),
   EndTxn requests (COORDINATOR_NOT_AVAILABLE) and takes broker 2 down for 1.5 s:
   each line exactly once, nothing dead-lettered.
2. Outage: all three brokers down for 6 s while lines are written: tailbox
   keeps reading (rows wait in the outbox), then delivers each line once.
3. A record larger than message.max.bytes is dead-lettered with the reason;
   the lines around it arrive.
4. mode = "idempotent" (no transactions): 20,000 lines, each exactly once
   when nothing crashes.
5. key = "file" and format = "ndjson": the Kafka key is "<host>/<file uid>"
   for every record of a file, and the value is the NDJSON object.

Usage: TAILBOX_BIN=build/tailbox KAFKA_MOCK_BIN=build/tests/kafka_mock \\
       python3 tests/integration/kafka_sink_integration_test.py
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import kafka_mock as km  # noqa: E402

HOST = "edge1"
FILES = ["a.log", "b.log", "c.log", "d.log"]


def write_kafka_config(wd, bootstrap, sink_extra=None, **kwargs):
    h.write_config(wd, host_id=HOST, **kwargs)
    with open(wd.config) as f:
        text = f.read()
    text = text[:text.index("\n[sink]\n")]
    sink = {"type": "kafka", "brokers": bootstrap, "topic": km.TOPIC, "format": "raw",
            "timeout": "10s"}
    sink.update(sink_extra or {})
    text += "\n[sink]\n" + "".join(f"{k} = {h._toml_value(v)}\n" for k, v in sink.items())
    with open(wd.config, "w") as f:
        f.write(text)
    r = h.run_cli(["check", "-c", wd.config])
    if r.returncode != 0:
        h.fail(f"tailbox check rejected the test config: {r.stdout}{r.stderr}")


class Writer:
    def __init__(self, wd, rng, files=FILES):
        self.rng = rng
        self.paths = [wd.log_path(n) for n in files]
        self.src = h.SourceFiles(self.paths)
        self.seq = 0

    def burst(self, n, path=None, torn=False):
        path = path or self.rng.choice(self.paths)
        tag = os.path.basename(path)[0]
        data = b"".join(h.make_line(self.rng, tag, self.seq + i) for i in range(n))
        self.seq += n
        split = self.rng.randrange(1, len(data)) if torn and len(data) > 1 else None
        self.src.write(path, data, n, split_at=split, pause=0.02 if split else 0.0)

    def close(self):
        self.src.close()


def pending(wd):
    if not os.path.exists(wd.outbox):
        return -1
    try:
        return h.outbox_states(wd.outbox).get("pending", 0)
    except Exception:
        return -1


def dead_rows(wd):
    conn = h.sqlite_connect(wd.outbox)
    try:
        return conn.execute("SELECT o.offset, f.path, o.last_error FROM outbox o "
                            "JOIN files f ON f.id = o.file WHERE o.state = 'dead'").fetchall()
    finally:
        conn.close()


def stop_clean(tb):
    rc = tb.stop()
    if rc != 0:
        h.fail(f"tailbox exited {rc} after SIGTERM")


def check_exact(cluster, paths, drop=()):
    recs, hidden = cluster.read_committed()
    expected = h.expected_from_files(paths)
    for po in drop:
        expected.pop(po)
    h.log(h.check_exact(expected, recs, host_id=HOST, label="topic logs (read_committed)"))
    h.log(f"{hidden} records of transactions that did not commit were hidden")
    return recs


def run_case(name, body, rng, cluster_kwargs=None):
    h.log(f"--- {name} ---")
    wd = h.Workdir(f"tailbox-kafka-{name}-")
    cluster = km.MockCluster(log_path=os.path.join(wd.root, "mock.log"), **(cluster_kwargs or {}))
    tb = h.Tailbox(wd)
    passed = False
    try:
        body(wd, cluster, tb, rng)
        passed = True
    except h.TestFailure:
        h.report_failure_context(wd)
        raise
    finally:
        tb.close()
        cluster.close()
        wd.cleanup(passed)


def wait_lines_in_outbox_or_done(wd, w, tb):
    h.wait_until(lambda: pending(wd) == 0, 120, f"all {w.seq} lines delivered", interval=0.5,
                 tailbox=tb, progress=lambda: f"{pending(wd)} rows pending")


def case_broker_errors(wd, cluster, tb, rng):
    write_kafka_config(wd, cluster.bootstrap, delivery={"backoff_min": "100ms", "backoff_max": "1s"})
    w = Writer(wd, rng)
    for p in w.paths:
        w.burst(5_000, path=p)
    tb.start()
    t_end = time.monotonic() + 12
    step = 0
    while time.monotonic() < t_end:
        w.burst(rng.randint(500, 2000), torn=rng.random() < 0.2)
        if step == 2:
            cluster.produce_errors(10, km.NOT_LEADER_FOR_PARTITION)
        if step == 5:
            cluster.produce_errors(10, km.NOT_ENOUGH_REPLICAS)
        if step == 8:
            cluster.request_errors(km.API_END_TXN, 3, km.COORDINATOR_NOT_AVAILABLE)
        if step == 11:
            cluster.broker_down(2)
        if step == 20:
            cluster.broker_up(2)
        step += 1
        time.sleep(0.15)
    cluster.broker_up(2)
    h.log(f"{w.seq} lines written")
    wait_lines_in_outbox_or_done(wd, w, tb)
    stop_clean(tb)
    w.close()
    check_exact(cluster, w.paths)
    if dead_rows(wd):
        h.fail(f"dead rows: {dead_rows(wd)[:5]}")


def case_outage(wd, cluster, tb, rng):
    write_kafka_config(wd, cluster.bootstrap, sink_extra={"timeout": "3s"},
                       delivery={"backoff_min": "100ms", "backoff_max": "1s"})
    w = Writer(wd, rng)
    w.burst(3_000)
    tb.start()
    h.wait_until(lambda: pending(wd) == 0, 60, "the first 3,000 lines", tailbox=tb)
    h.log("all three brokers down for 6 s while lines are written")
    for b in (1, 2, 3):
        cluster.broker_down(b)
    t_end = time.monotonic() + 6
    while time.monotonic() < t_end:
        w.burst(rng.randint(100, 500))
        time.sleep(0.2)
    tb.assert_alive("the brokers were down")
    waiting = pending(wd)
    h.log(f"{w.seq} lines written; {waiting} rows wait in the outbox; brokers up")
    if waiting <= 0:
        h.fail("no rows waited in the outbox while every broker was down")
    for b in (1, 2, 3):
        cluster.broker_up(b)
    w.burst(1_000)
    wait_lines_in_outbox_or_done(wd, w, tb)
    stop_clean(tb)
    w.close()
    check_exact(cluster, w.paths)
    if dead_rows(wd):
        h.fail(f"the outage dead-lettered rows: {dead_rows(wd)[:5]}")


def case_too_large(wd, cluster, tb, rng):
    write_kafka_config(wd, cluster.bootstrap, sink_extra={"properties": ["message.max.bytes=20000"]})
    path = wd.log_path("big.log")
    data, big_at = b"", None
    for i in range(3_000):
        if i == 1_500:
            big_at = (path, len(data))
            data += b"B" * 50_000 + b"\n"
        data += h.make_line(rng, "b", i, variety=False)
    with open(path, "wb") as f:
        f.write(data)
    tb.start()
    h.wait_until(lambda: pending(wd) == 0 and len(dead_rows(wd)) == 1, 60,
                 "the big line dead-lettered and the rest delivered", tailbox=tb,
                 progress=lambda: f"{pending(wd)} pending, {len(dead_rows(wd))} dead")
    off, p, err = dead_rows(wd)[0]
    if (p, off) != big_at or "message.max.bytes" not in (err or ""):
        h.fail(f"dead row {(p, off, err)}, expected the 50 KB line at {big_at} with the size reason")
    h.log(f"dead row: {err}")
    stop_clean(tb)
    check_exact(cluster, [path], drop=[big_at])


def case_idempotent(wd, cluster, tb, rng):
    write_kafka_config(wd, cluster.bootstrap, sink_extra={"mode": "idempotent"})
    w = Writer(wd, rng)
    for p in w.paths:
        w.burst(5_000, path=p)
    tb.start()
    wait_lines_in_outbox_or_done(wd, w, tb)
    stop_clean(tb)
    w.close()
    expected = h.expected_from_files(w.paths)
    h.log(h.check_exact(expected, cluster.read_all(), host_id=HOST, label="topic logs (idempotent)"))


def case_key_file_ndjson(wd, cluster, tb, rng):
    write_kafka_config(wd, cluster.bootstrap, sink_extra={"key": "file", "format": "ndjson"})
    w = Writer(wd, rng, files=["a.log", "b.log"])
    for p in w.paths:
        w.burst(1_000, path=p)
    tb.start()
    wait_lines_in_outbox_or_done(wd, w, tb)
    stop_clean(tb)
    w.close()
    keys_by_path = {}
    n = 0
    for m in cluster.dump(km.TOPIC):
        hd = m["headers"]
        keys_by_path.setdefault(hd["tailbox-path"], set()).add(m["key"])
        obj = json.loads(m["value"])
        if obj["_id"] != hd["tailbox-key"] or obj["offset"] != int(hd["tailbox-offset"]):
            h.fail(f"NDJSON value does not match its headers: {obj} vs {hd}")
        n += 1
    for path, keys in keys_by_path.items():
        if len(keys) != 1 or not next(iter(keys)).startswith(HOST + "/"):
            h.fail(f"records of {path} carry keys {sorted(keys)[:3]}, expected one '<host>/<uid>'")
    if n != w.seq:
        h.fail(f"{n} records in the topic, {w.seq} lines written")
    h.log(f"{n} NDJSON records, one key per file")


def main():
    import random
    seed = h.seed_from_env()
    rng = random.Random(seed)
    only = os.environ.get("TAILBOX_CASE")
    for name, body in (("errors", case_broker_errors), ("outage", case_outage),
                       ("too_large", case_too_large), ("idempotent", case_idempotent),
                       ("key_file", case_key_file_ndjson)):
        if not only or only == name:
            run_case(name, body, rng)
    h.log("PASS")


if __name__ == "__main__":
    try:
        main()
    except h.TestFailure as e:
        h.log(f"FAIL: {e}")
        sys.exit(1)
