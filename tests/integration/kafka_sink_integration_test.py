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
   keeps reading (rows wait in the outbox), /metrics shows the retries and the
   last error, then each line is delivered once (and counted as delivered).
3. A record larger than message.max.bytes is dead-lettered with the reason;
   the lines around it arrive.
4. Commit timeouts (EndTxn answered with COORDINATOR_LOAD_IN_PROGRESS for longer
   than `timeout`): the sink learns from its progress record whether the
   transaction committed and sends nothing twice.
5. mode = "idempotent" (no transactions): 20,000 lines, each exactly once
   when nothing crashes.
6. key = "file" and format = "ndjson": the Kafka key is "<host>/<file uid>"
   for every record of a file, and the value is the NDJSON object.

Usage: TAILBOX_BIN=build/tailbox KAFKA_MOCK_BIN=build/tests/kafka_mock \\
       python3 tests/integration/kafka_sink_integration_test.py
"""

import json
import os
import re
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import kafka_mock as km  # noqa: E402

HOST = km.HOST
SETTLED = "the transaction whose commit timed out did commit"


def case_broker_errors(wd, cluster, tb, rng):
    km.write_kafka_config(wd, cluster.bootstrap,
                          delivery={"backoff_min": "100ms", "backoff_max": "1s"})
    w = h.Writer(wd, rng)
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
    km.wait_drained(wd, w, tb)
    h.stop_clean(tb)
    w.close()
    km.check_exact(cluster, w.paths)
    if h.dead_rows(wd):
        h.fail(f"dead rows: {h.dead_rows(wd)[:5]}")


def scrape(port):
    """{metric name: [(labels text, value)]} from tailbox's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'^(\w+)(\{.*\})? (\S+)$', line)
        if m:
            out.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
    return out


def case_outage(wd, cluster, tb, rng):
    port = h.free_port()
    km.write_kafka_config(wd, cluster.bootstrap, sink_extra={"timeout": "3s"},
                          delivery={"backoff_min": "100ms", "backoff_max": "1s"},
                          metrics={"listen": f"127.0.0.1:{port}"})
    w = h.Writer(wd, rng)
    w.burst(3_000)
    tb.start()
    h.wait_until(lambda: h.caught_up(wd, w.paths), 60, "the first 3,000 lines", tailbox=tb)
    h.log("all three brokers down for 6 s while lines are written")
    for b in (1, 2, 3):
        cluster.broker_down(b)
    t_end = time.monotonic() + 6
    while time.monotonic() < t_end:
        w.burst(rng.randint(100, 500))
        time.sleep(0.2)
    tb.assert_alive("the brokers were down")
    waiting = h.pending_rows(wd)
    h.log(f"{w.seq} lines written; {waiting} rows wait in the outbox; brokers up")
    if waiting <= 0:
        h.fail("no rows waited in the outbox while every broker was down")
    m = scrape(port)
    retries = sum(v for _, v in m.get("tailbox_sink_retries_total", []))
    errors = [lab for lab, _ in m.get("tailbox_sink_last_error", [])]
    if retries <= 0 or not errors or 'sink="kafka:' not in errors[0]:
        h.fail(f"/metrics during the outage: retries {retries}, last error {errors}")
    h.log(f"/metrics during the outage: {retries:.0f} retries, last error {errors[0][:160]}")
    for b in (1, 2, 3):
        cluster.broker_up(b)
    w.burst(1_000)
    km.wait_drained(wd, w, tb)
    delivered = sum(v for _, v in scrape(port).get("tailbox_sink_delivered_rows_total", []))
    if delivered != w.seq:
        h.fail(f"tailbox_sink_delivered_rows_total is {delivered}, {w.seq} lines were delivered")
    h.stop_clean(tb)
    w.close()
    km.check_exact(cluster, w.paths)
    if h.dead_rows(wd):
        h.fail(f"the outage dead-lettered rows: {h.dead_rows(wd)[:5]}")


def case_too_large(wd, cluster, tb, rng):
    km.write_kafka_config(wd, cluster.bootstrap, sink_extra={"properties": ["message.max.bytes=20000"]})
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
    h.wait_until(lambda: h.caught_up(wd, [path]) and len(h.dead_rows(wd)) == 1, 60,
                 "the big line dead-lettered and the rest delivered", tailbox=tb,
                 progress=lambda: f"{h.pending_rows(wd)} pending, {len(h.dead_rows(wd))} dead")
    off, p, err = h.dead_rows(wd)[0]
    if (p, off) != big_at or "message.max.bytes" not in (err or ""):
        h.fail(f"dead row {(p, off, err)}, expected the 50 KB line at {big_at} with the size reason")
    h.log(f"dead row: {err}")
    h.stop_clean(tb)
    km.check_exact(cluster, [path], drop=[big_at])


def case_commit_timeout(wd, cluster, tb, rng):
    """Commits that time out (the coordinator answers EndTxn with a retriable
    error for longer than `timeout`): the outcome is unknown to the sink; it
    makes a new producer, reads its progress back and learns whether the
    transaction committed, and sends nothing twice."""
    km.write_kafka_config(wd, cluster.bootstrap, sink_extra={"timeout": "2s"},
                          delivery={"backoff_min": "100ms", "backoff_max": "500ms"})
    w = h.Writer(wd, rng, files=["a.log"])
    w.burst(2_000)
    tb.start()
    km.wait_drained(wd, w, tb, timeout=60)
    for _ in range(3):
        cluster.request_errors(km.API_END_TXN, 60, km.COORDINATOR_LOAD_IN_PROGRESS)
        w.burst(1_000)
        h.wait_until(lambda: SETTLED in open(wd.tailbox_log, errors="replace").read()
                     or h.caught_up(wd, w.paths), 60, "the commit timing out", tailbox=tb)
    km.wait_drained(wd, w, tb, timeout=120)
    h.stop_clean(tb)
    w.close()
    text = open(wd.tailbox_log, errors="replace").read()
    settled = text.count(SETTLED)
    h.log(f"commits that timed out and were found committed on the next attempt: {settled}")
    if "cannot commit the transaction" not in text:
        h.fail("no commit timed out: the test did not test what it is about")
    km.check_exact(cluster, w.paths)


def case_idempotent(wd, cluster, tb, rng):
    km.write_kafka_config(wd, cluster.bootstrap, sink_extra={"mode": "idempotent"})
    w = h.Writer(wd, rng)
    for p in w.paths:
        w.burst(5_000, path=p)
    tb.start()
    km.wait_drained(wd, w, tb)
    h.stop_clean(tb)
    w.close()
    expected = h.expected_from_files(w.paths)
    h.log(h.check_exact(expected, cluster.read_all(), host_id=HOST, label="topic logs (idempotent)"))


def case_key_file_ndjson(wd, cluster, tb, rng):
    km.write_kafka_config(wd, cluster.bootstrap, sink_extra={"key": "file", "format": "ndjson"})
    w = h.Writer(wd, rng, files=["a.log", "b.log"])
    for p in w.paths:
        w.burst(1_000, path=p)
    tb.start()
    km.wait_drained(wd, w, tb)
    h.stop_clean(tb)
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
    seed = h.seed_from_env()
    h.run_cases((("errors", case_broker_errors), ("outage", case_outage),
                 ("too_large", case_too_large), ("commit_timeout", case_commit_timeout),
                 ("idempotent", case_idempotent), ("key_file", case_key_file_ndjson)),
                seed, km.case_args())
    h.log("PASS")


if __name__ == "__main__":
    h.main(main, "integration_kafka")
