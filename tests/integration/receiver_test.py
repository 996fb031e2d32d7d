#!/usr/bin/env python3
"""tools/receiver on its own, driven with urllib over loopback (real processes).

1. NDJSON is stored by _id, 200 {"stored": n}; the same records again (as a gzip'd
   JSON array) leave one row each with deliveries = 2.
2. Bad bodies get 400 and store nothing: not JSON, a record without _id, bad gzip.
3. --fail-rate 1 --fail-status 503 --retry-after 1: 503 with Retry-After, nothing
   stored.
4. --reject-substring POISON: 400 for a batch with a POISON message (nothing of it
   stored); other batches are stored.
5. --stall-rate 1: the records are committed, then the answer is late (a client
   with a short timeout gives up, yet the rows are there).
6. --id-field id; GET /stats; --help.

Usage: python3 tests/integration/receiver_test.py
"""

import gzip
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from receiver_proc import RECEIVER, ReceiverProcess  # noqa: E402


def post(url, body, headers=None, timeout=10):
    """(status, headers, json or text) of a POST; HTTP errors are answers too."""
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read() or b"null")


def ndjson(objs):
    return "".join(json.dumps(o) + "\n" for o in objs).encode()


def rec(i, message="hello"):
    return {"_id": f"edge1/abc/{i}", "path": "/var/log/a.log", "offset": i, "message": message}


def expect(cond, what):
    if not cond:
        h.fail(what)


def test():
    with h.case("receiver", None, prefix="tailbox-receiver-") as c:
        wd = c.wd
        # 1 + 2: storing, dedup, bad bodies.
        with ReceiverProcess(os.path.join(wd.root, "plain.db"), ["--verbose"]) as rx:
            st, _, body = post(rx.url("/ingest"), ndjson([rec(1), rec(2), rec(3)]),
                               {"Content-Type": "application/x-ndjson", "Idempotency-Key": "k1"})
            expect(st == 200 and body == {"stored": 3}, f"NDJSON post answered {st} {body}")
            again = gzip.compress(json.dumps([rec(1), rec(2), rec(3)]).encode())
            st, _, body = post(rx.url("/other/path"), again,
                               {"Content-Type": "application/json", "Content-Encoding": "gzip"})
            expect(st == 200 and body == {"stored": 3}, f"gzip JSON array answered {st} {body}")
            recs = rx.records()
            expect(sorted(recs) == [f"edge1/abc/{i}" for i in (1, 2, 3)], f"rows: {sorted(recs)}")
            expect(all(d == 2 for _, d in recs.values()), f"deliveries: {recs}")
            expect(recs["edge1/abc/2"][0]["message"] == "hello", "body not stored as JSON")

            for bad, hdrs, why in ((b"{not json\n", {}, "not JSON"),
                                   (ndjson([{"path": "x", "message": "no id"}]), {}, "no _id"),
                                   (b"\x1f\x8bnot really gzip", {"Content-Encoding": "gzip"}, "bad gzip"),
                                   (ndjson([rec(9), {"_id": 5}]), {}, "a numeric _id")):
                st, _, body = post(rx.url("/"), bad, hdrs)
                expect(st == 400, f"{why}: answered {st} {body}, expected 400")
            expect(rx.count() == 3, f"a bad request stored something: {rx.count()} rows")
            stats = json.loads(urllib.request.urlopen(rx.url("/stats"), timeout=10).read())
            expect(stats["records"] == 3 and stats["requests"] == 6 and stats["bad_requests"] == 4
                   and stats["gzip_requests"] == 2 and stats["idempotency_keys"] == 1,
                   f"/stats: {stats}")
        h.log("storing, dedup by _id, gzip, JSON arrays and bad bodies: ok")

        # 3: injected failures.
        with ReceiverProcess(os.path.join(wd.root, "fail.db"),
                             ["--fail-rate", "1", "--fail-status", "503", "--retry-after", "1"]) as rx:
            st, hdrs, _ = post(rx.url("/"), ndjson([rec(1)]))
            expect(st == 503 and hdrs.get("Retry-After") == "1", f"answered {st}, {dict(hdrs)}")
            expect(rx.count() == 0, "an injected failure stored records")
            expect(rx.stats().get("failed_injected") == 1, f"stats: {rx.stats()}")
        h.log("--fail-rate: 503 with Retry-After, nothing stored: ok")

        # 4: rejected substring.
        with ReceiverProcess(os.path.join(wd.root, "reject.db"), ["--reject-substring", "POISON"]) as rx:
            st, _, body = post(rx.url("/"), ndjson([rec(1), rec(2, "a POISON line"), rec(3)]))
            expect(st == 400 and "edge1/abc/2" in body["error"], f"answered {st} {body}")
            expect(rx.count() == 0, "a rejected batch stored records")
            st, _, _ = post(rx.url("/"), ndjson([rec(1), rec(3)]))
            expect(st == 200 and rx.count() == 2, f"a clean batch: {st}, {rx.count()} rows")
        h.log("--reject-substring: 400 for the batch with the substring only: ok")

        # 5: stall after storing.
        with ReceiverProcess(os.path.join(wd.root, "stall.db"),
                             ["--stall-rate", "1", "--stall-seconds", "2", "--id-field", "id"]) as rx:
            try:
                post(rx.url("/"), ndjson([{"id": "x1", "message": "m"}]), timeout=0.5)
                h.fail("the stalled request was answered within 0.5 s")
            except (socket.timeout, TimeoutError, urllib.error.URLError):
                pass
            expect(rx.count() == 1, "a stalled request had not stored its records before stalling")
            st, _, body = post(rx.url("/"), ndjson([{"id": "x1", "message": "m"}]), timeout=10)
            expect(st == 200, f"after the stall: {st} {body}")
            expect(rx.records()["x1"][1] == 2, f"deliveries: {rx.records()}")
        h.log("--stall-rate: stored, then answered late; --id-field: ok")

        r = subprocess.run([sys.executable, RECEIVER, "--help"], capture_output=True, text=True,
                           timeout=30)
        expect(r.returncode == 0 and "--fail-rate" in r.stdout and "ON CONFLICT" in r.stdout,
               f"--help: {r.returncode} {r.stdout[:200]}")


if __name__ == "__main__":
    h.main(test, "receiver_test")
