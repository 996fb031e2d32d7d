#!/usr/bin/env python3
"""The http sink against tools/receiver (real processes, loopback), exactly once.

Each case has its own receiver (free port, own SQLite database), work directory
and tailbox. The receiver upserts by the id field and counts deliveries, so its
table must end holding every source line once (compared by id, path, offset and
the exact bytes); redeliveries show up as deliveries > 1, never as extra rows.

1. 100,000 lines in 4 files (60,000 before start, the rest in bursts, some torn,
   CRLF, non-UTF-8 ...) while the receiver answers 20% of the requests with 503
   and Retry-After: 1 without storing: exact; nothing dead; SIGTERM exits 0.
2. Stalls: the receiver stores, then answers 3 s late on 5% of the requests;
   the sink's timeout is 1 s, so those batches are sent again: exact, and some
   records show deliveries > 1.
3. --reject-substring POISON: the one line with POISON is dead in the outbox with
   last_error naming HTTP 400; every other line arrives.
4. TLS with a test CA and mutual TLS (client certificate): a wrong CA, then a
   wrong tls_server_name: nothing is delivered, nothing is dead, rows stay
   pending and the log says "certificate verify failed"; with the right CA (the
   IP address in the certificate) everything arrives; then tls_server_name =
   "localhost" (SNI + DNS name) delivers more lines.
5. compression = "gzip", format = "json_array", id_field = "doc_id": exact, and
   every request was gzip'd. The receiver closes connections idle for 0.5 s and
   the lines come in bursts 1.5 s apart: pooled connections found closed are
   replaced without a failed delivery.

Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/http_sink_integration_test.py
       (TAILBOX_HTTP_CASES=4,5 runs only those cases)
"""

import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from receiver_proc import ReceiverProcess, make_certs, recs_of  # noqa: E402

HOST = "edge1"
FILES = ["a.log", "b.log", "c.log", "d.log"]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def write_http_config(wd, url, sink_extra=None, **kwargs):
    """harness.write_config with an http [sink] table; `tailbox check` must accept it."""
    h.write_config(wd, host_id=HOST, **kwargs)
    with open(wd.config) as f:
        text = f.read()
    text = text[:text.index("\n[sink]\n")]
    sink = {"type": "http", "url": url}
    sink.update(sink_extra or {})
    text += "\n[sink]\n" + "".join(f"{k} = {h._toml_value(v)}\n" for k, v in sink.items())
    with open(wd.config, "w") as f:
        f.write(text)
    r = h.run_cli(["check", "-c", wd.config])
    if r.returncode != 0:
        h.fail(f"tailbox check rejected the test config: {r.stdout}{r.stderr}")


class Lines:
    """Writes numbered lines (harness.make_line variety) into the case's files."""

    def __init__(self, wd, rng, tag):
        self.wd, self.rng, self.tag, self.seq = wd, rng, tag, 0
        self.src = h.SourceFiles([wd.log_path(n) for n in FILES])

    def burst(self, name, n, torn=False, poison_at=None):
        lines = []
        for i in range(n):
            if poison_at is not None and self.seq + i == poison_at:
                lines.append(f"{self.tag} {self.seq + i:09d} this line is POISON\n".encode())
            else:
                lines.append(h.make_line(self.rng, self.tag, self.seq + i))
        data = b"".join(lines)
        self.seq += n
        split = self.rng.randrange(1, len(data)) if torn and len(data) > 1 else None
        self.src.write(self.wd.log_path(name), data, n, split_at=split, pause=0.02 if split else 0)

    def spread(self, total, burst=(200, 3000), torn=0.0, sleep=0.0, tb=None, poison_at=None):
        written = 0
        while written < total:
            n = min(self.rng.randint(*burst), total - written)
            self.burst(self.rng.choice(FILES), n, torn=self.rng.random() < torn, poison_at=poison_at)
            written += n
            if sleep:
                time.sleep(self.rng.uniform(0, sleep))
            if tb is not None:
                tb.assert_alive("lines were written")

    def expected(self):
        return h.expected_from_files([self.wd.log_path(n) for n in FILES if
                                      os.path.exists(self.wd.log_path(n))])

    def close(self):
        self.src.close()


def wait_delivered(wd, rx, tb, expected_count, timeout, dead=0):
    h.wait_until(lambda: rx.count() >= expected_count, timeout,
                 f"{expected_count} records at the receiver", interval=0.3, tailbox=tb,
                 progress=lambda: f"receiver has {rx.count()}, stats {rx.stats()}")

    def drained():
        s = h.status_json(wd.config)
        return s["pending_rows"] == 0 and s["dead_rows"] == dead
    h.wait_until(drained, 60, "the outbox to drain", interval=0.3, tailbox=tb,
                 progress=lambda: str(h.status_json(wd.config)))


def stop_ok(tb):
    rc = tb.stop()
    if rc != 0:
        h.fail(f"tailbox exited {rc} after SIGTERM, expected 0")


def log_text(wd):
    with open(wd.tailbox_log, "rb") as f:
        return f.read().decode("utf-8", "replace")


def redeliveries(records):
    return sum(1 for _, d in records.values() if d > 1)


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

def case_failures(seed):
    """1. 100k lines, 20% 503 with Retry-After."""
    with h.case("failures", seed, prefix="tailbox-http1-") as c:
        rng = random.Random(seed)
        wd = c.wd
        tb = c.tailbox()
        lines = c.add(Lines(wd, rng, "f"))
        rx = ReceiverProcess(os.path.join(wd.root, "recv.db"),
                             ["--fail-rate", "0.2", "--fail-status", "503", "--retry-after", "1",
                              "--seed", str(seed), "--verbose"])
        c.add(rx, close=rx.stop)
        rx.start()
        write_http_config(wd, rx.url("/bulk?pipeline=test"))
        lines.spread(60_000)
        tb.start()
        lines.spread(40_000, burst=(100, 2000), torn=0.2, sleep=0.02, tb=tb)
        expected = lines.expected()
        if len(expected) != 100_000:
            h.fail(f"test bug: the files hold {len(expected)} lines, expected 100000")
        t0 = time.monotonic()
        wait_delivered(wd, rx, tb, len(expected), 150)
        h.log(f"case 1: {len(expected)} lines delivered {time.monotonic() - t0:.1f}s after the "
              f"last write; stats {rx.stats()}")
        stop_ok(tb)
        records = rx.records()
        h.log("case 1: " + h.check_exact(expected, recs_of(records), HOST, "receiver"))
        stats = rx.stats()
        if stats.get("failed_injected", 0) < 3:
            h.fail(f"case 1: the receiver injected only {stats.get('failed_injected', 0)} failures")
        if stats.get("idempotency_keys") != stats.get("requests"):
            h.fail(f"case 1: not every request had an Idempotency-Key: {stats}")
        h.log(f"case 1: ok ({stats['failed_injected']} injected 503s, "
              f"{redeliveries(records)} records delivered more than once)")


def case_stalls(seed):
    """2. Stored, then answered after the sink's timeout."""
    with h.case("stalls", seed, prefix="tailbox-http2-") as c:
        rng = random.Random(seed + 1)
        wd = c.wd
        tb = c.tailbox()
        lines = c.add(Lines(wd, rng, "s"))
        rx = ReceiverProcess(os.path.join(wd.root, "recv.db"),
                             ["--stall-rate", "0.05", "--stall-seconds", "3", "--seed", str(seed),
                              "--verbose"])
        c.add(rx, close=rx.stop)
        rx.start()
        write_http_config(wd, rx.url("/"), {"timeout": "1s"}, delivery={"batch_rows": 200})
        lines.spread(20_000)
        tb.start()
        expected = lines.expected()
        wait_delivered(wd, rx, tb, len(expected), 120)
        stop_ok(tb)
        records = rx.records()
        h.log("case 2: " + h.check_exact(expected, recs_of(records), HOST, "receiver"))
        stats = rx.stats()
        if stats.get("stalled", 0) == 0 or redeliveries(records) == 0:
            h.fail(f"case 2: no stalled request was redelivered (stats {stats}); "
                   f"the case tested nothing")
        if "no answer within the timeout of 1000 ms" not in log_text(wd):
            h.fail("case 2: the log does not mention the timeout")
        h.log(f"case 2: ok ({stats['stalled']} stalls, {redeliveries(records)} records stored "
              f"twice and kept once)")


def case_reject(seed):
    """3. One poisoned line is dead-lettered; the rest arrives."""
    with h.case("reject", seed, prefix="tailbox-http3-") as c:
        rng = random.Random(seed + 2)
        wd = c.wd
        tb = c.tailbox()
        lines = c.add(Lines(wd, rng, "r"))
        rx = ReceiverProcess(os.path.join(wd.root, "recv.db"), ["--reject-substring", "POISON"])
        c.add(rx, close=rx.stop)
        rx.start()
        write_http_config(wd, rx.url("/"))
        poison_at = rng.randrange(1000, 4000)
        lines.spread(5_000, burst=(500, 1500), poison_at=poison_at)
        expected = lines.expected()
        poisoned = [po for po, line in expected.items() if b"POISON" in line]
        if len(poisoned) != 1:
            h.fail(f"test bug: {len(poisoned)} poisoned lines")
        del expected[poisoned[0]]
        tb.start()
        wait_delivered(wd, rx, tb, len(expected), 60, dead=1)
        stop_ok(tb)
        h.log("case 3: " + h.check_exact(expected, recs_of(rx.records()), HOST, "receiver"))
        conn = h.sqlite_connect(wd.outbox)
        try:
            rows = conn.execute("SELECT f.path, o.offset, o.state, o.last_error FROM outbox o "
                                "JOIN files f ON f.id = o.file").fetchall()
        finally:
            conn.close()
        if len(rows) != 1:
            h.fail(f"case 3: the outbox holds {len(rows)} rows, expected the 1 dead one: {rows[:5]}")
        path, offset, state, error = rows[0]
        if (path, offset) != poisoned[0] or state != "dead" or "400" not in (error or ""):
            h.fail(f"case 3: expected {poisoned[0]} dead with HTTP 400, got {rows[0]}")
        h.log(f"case 3: ok (the POISON line is dead: {error!r})")


def case_tls(seed):
    """4. TLS: wrong CA and wrong name retry (pending, logged); right CA delivers."""
    with h.case("tls", seed, prefix="tailbox-http4-") as c:
        rng = random.Random(seed + 3)
        wd = c.wd
        tb = c.tailbox()
        lines = c.add(Lines(wd, rng, "t"))
        certs = make_certs(wd.root)
        rx = ReceiverProcess(os.path.join(wd.root, "recv.db"),
                             ["--tls-cert", certs["server.pem"], "--tls-key", certs["server.key"],
                              "--tls-client-ca", certs["ca.pem"], "--verbose"], tls=True)
        client = {"tls_cert_file": certs["client.pem"], "tls_key_file": certs["client.key"]}
        c.add(rx, close=rx.stop)
        rx.start()
        lines.spread(2_000, burst=(400, 800))
        expected = lines.expected()

        for label, extra, reason in (
                ("another CA", {"tls_ca_file": certs["other-ca.pem"]}, "certificate verify failed"),
                ("a wrong tls_server_name", {"tls_ca_file": certs["ca.pem"],
                                             "tls_server_name": "wrong.example"}, "hostname mismatch")):
            write_http_config(wd, rx.url("/"), {**client, **extra})
            start_of_run = os.path.getsize(wd.tailbox_log) if os.path.exists(wd.tailbox_log) else 0
            tb.start()

            def logged():
                with open(wd.tailbox_log, "rb") as f:
                    f.seek(start_of_run)
                    text = f.read().decode("utf-8", "replace")
                return "certificate verify failed" in text and reason in text
            h.wait_until(logged, 30, f"the log to say certificate verify failed ({reason})",
                         interval=0.2, tailbox=tb)
            time.sleep(1.0)
            s = h.status_json(wd.config)
            if rx.count() != 0 or s["dead_rows"] != 0 or s["pending_rows"] != len(expected):
                h.fail(f"case 4, {label}: receiver has {rx.count()} records, outbox {s['pending_rows']} "
                       f"pending / {s['dead_rows']} dead (expected 0, {len(expected)} / 0)")
            stop_ok(tb)
            h.log(f"case 4: with {label} nothing is delivered, {len(expected)} rows pending, "
                  f"logged \"{reason}\"")

        write_http_config(wd, rx.url("/"), {**client, "tls_ca_file": certs["ca.pem"]})
        tb.start()
        wait_delivered(wd, rx, tb, len(expected), 60)
        stop_ok(tb)
        lines.spread(500, burst=(100, 200))
        expected = lines.expected()
        write_http_config(wd, rx.url("/"), {**client, "tls_ca_file": certs["ca.pem"],
                                            "tls_server_name": "localhost"})
        tb.start()
        wait_delivered(wd, rx, tb, len(expected), 60)
        stop_ok(tb)
        h.log("case 4: " + h.check_exact(expected, recs_of(rx.records()), HOST, "receiver"))
        h.log("case 4: ok (right CA, IP and DNS names, mutual TLS)")


def case_gzip(seed):
    """5. gzip'd JSON arrays with another id field."""
    with h.case("gzip", seed, prefix="tailbox-http5-") as c:
        rng = random.Random(seed + 4)
        wd = c.wd
        tb = c.tailbox()
        lines = c.add(Lines(wd, rng, "g"))
        rx = ReceiverProcess(os.path.join(wd.root, "recv.db"), ["--id-field", "doc_id",
                                                                "--idle-timeout", "0.5", "--verbose"])
        c.add(rx, close=rx.stop)
        rx.start()
        write_http_config(wd, rx.url("/"), {"compression": "gzip", "format": "json_array",
                                            "id_field": "doc_id", "connections": 4})
        lines.spread(14_000)
        tb.start()
        for _ in range(3):
            expected = lines.expected()
            wait_delivered(wd, rx, tb, len(expected), 60)
            time.sleep(1.5)   # the receiver closes the idle connections meanwhile
            lines.spread(2_000)
        expected = lines.expected()
        wait_delivered(wd, rx, tb, len(expected), 60)
        stop_ok(tb)
        if " failed (" in log_text(wd):
            h.fail("case 5: a delivery failed (a pooled connection closed by the receiver "
                   "should be replaced without a failure)")
        h.log("case 5: " + h.check_exact(expected, recs_of(rx.records(), "doc_id"), HOST, "receiver"))
        stats = rx.stats()
        if stats.get("gzip_requests") != stats.get("requests"):
            h.fail(f"case 5: not every request was gzip'd: {stats}")
        if not stats.get("idle_closed"):
            h.fail(f"case 5: the receiver closed no idle connection; the case tested nothing: {stats}")
        h.log(f"case 5: ok ({stats['requests']} gzip'd requests, {stats['idle_closed']} idle "
              f"connections closed by the receiver)")


def test():
    seed = h.seed_from_env()
    cases = [case_failures, case_stalls, case_reject, case_tls, case_gzip]
    only = os.environ.get("TAILBOX_HTTP_CASES", "")   # e.g. "4,5" while working on those
    for n, case in enumerate(cases, 1):
        if not only or str(n) in only.split(","):
            case(seed)


if __name__ == "__main__":
    h.main(test, "http_sink_integration_test")
