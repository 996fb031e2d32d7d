#!/usr/bin/env python3
"""The nats sink against a real nats-server (JetStream), exactly once.

One throwaway nats-server (nats_server.py: -js, its own store directory,
127.0.0.1, a free port, max_payload 64 KiB) serves every case; each case has
its own stream, work directory and tailbox. The check always reads the STREAM
back (every message, by sequence, with $JS.API.STREAM.MSG.GET) and compares
it line by line (key = Nats-Msg-Id, path, offset, exact bytes) with the files.

1. 120,000 lines in 4 files (30,000 before start, the rest in bursts, some
   torn, CRLF, control characters, non-UTF-8 bytes). In the middle the server
   is stopped for 5 s while lines are written (they wait in the outbox), then
   started again on the same store: every line is in the stream exactly once,
   nothing is dead-lettered, SIGTERM exits 0.
2. A line larger than the server's max_payload among 3,000 others: that row
   is dead-lettered with a message naming max_payload, every other line
   arrives exactly once.
3. A connection libnats closes for good: a server of its own with token
   authentication is restarted with a new token (the token file is rewritten),
   so libnats' reconnects fail authorization and it closes the connection.
   The next delivery must open a new connection, reading the token file
   again: every line arrives exactly once, without restarting tailbox.

Exit 77 (skip) when nats-server is not installed.
Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/nats_sink_integration_test.py
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import nats_case as nc  # noqa: E402
import nats_server  # noqa: E402


def case_120k_with_outage(ns, wd, tb, rng):
    stream = "OUTAGE"
    nc.write_nats_config(wd, ns.url, stream, sink_extra={"create_stream": True, "timeout": "3s"})
    w = h.Writer(wd, rng)
    w.spread(30_000, 4)
    tb.start()
    appended, outage_done = 0, False
    while appended < 90_000:
        if not outage_done and appended >= 40_000:
            h.log(f"stopping nats-server for 5 s ({w.seq} lines written, "
                  f"{nc.stream_count(ns.port, stream)} in the stream)")
            ns.stop()
            t_end = time.monotonic() + 5
            while time.monotonic() < t_end:
                n = rng.randint(200, 1000)
                w.burst(n)
                appended += n
                time.sleep(0.1)
            tb.assert_alive("nats-server was down")
            waiting = h.pending_rows(wd)
            h.log(f"{w.seq} lines written; {waiting} wait in the outbox; starting nats-server")
            if waiting <= 0:
                h.fail("no rows waited in the outbox during the outage")
            ns.start()
            outage_done = True
        n = rng.randint(500, 3000)
        w.burst(n, torn=rng.random() < 0.2)
        appended += n
        time.sleep(rng.uniform(0, 0.02))
    h.log(f"{w.seq} lines written; waiting for delivery")
    t0 = time.monotonic()
    nc.wait_all(ns.port, stream, wd, tb, w.seq, 150, f"{w.seq} lines in the stream")
    h.log(f"delivered within {time.monotonic() - t0:.1f}s of the last write")
    h.stop_clean(tb)
    w.close()
    nc.check_exact(ns.port, stream, w.paths)
    if h.dead_rows(wd):
        h.fail(f"dead rows: {h.dead_rows(wd)[:5]}")
    nc.delete_stream(ns.port, stream)   # its subjects are the next case's


def case_too_large(ns, wd, tb, rng):
    stream = "BIG"
    nc.write_nats_config(wd, ns.url, stream, sink_extra={"create_stream": True})
    path = wd.log_path("big.log")
    data, big_at = b"", None
    for i in range(3_000):
        if i == 1_500:
            big_at = len(data)
            data += b"big " + b"x" * (100 * 1024) + b"\n"
        data += h.make_line(rng, "g", i)
    with open(path, "wb") as f:
        f.write(data)
    tb.start()
    nc.wait_all(ns.port, stream, wd, tb, 3_000, 60, "the 3,000 lines around the big one")
    h.stop_clean(tb)
    dead = h.dead_rows(wd)
    if [(p, off) for off, p, _ in dead] != [(path, big_at)]:
        h.fail(f"dead rows {[(p, off) for off, p, _ in dead]}, expected only the big line at "
               f"{big_at}")
    if "max_payload" not in (dead[0][2] or ""):
        h.fail(f"the dead row's error does not name max_payload: {dead[0][2]!r}")
    h.log(f"the big line is dead-lettered: {dead[0][2]}")
    nc.check_exact(ns.port, stream, [path], drop=[(path, big_at)])


def case_closed_connection(_ns, wd, tb, rng):
    stream = "CLOSED"
    token_file = os.path.join(wd.root, "nats.token")
    with open(token_file, "w") as f:
        f.write("first-token\n")
    os.chmod(token_file, 0o600)
    with nats_server.NatsServer(config='authorization { token: "first-token" }') as ts:
        url = f"nats://127.0.0.1:{ts.port}"
        nc.write_nats_config(wd, url, stream, sink_extra={"create_stream": True, "timeout": "3s",
                                                          "token_file": token_file})
        w = h.Writer(wd, rng)
        w.spread(2_000, 2)
        tb.start()
        h.wait_until(lambda: nc.stream_count(ts.port, stream, "first-token") == 2_000, 30,
                     "the first 2,000 lines", tailbox=tb)
        ts.stop()
        ts.config = 'authorization { token: "second-token" }'
        with open(token_file, "w") as f:
            f.write("second-token\n")
        ts.start()
        w.spread(2_000, 2)
        h.wait_until(lambda: h.pending_rows(wd) == 0, 60, "the lines written after the token changed",
                     interval=0.5, tailbox=tb)
        h.stop_clean(tb)
        w.close()
        with open(wd.tailbox_log, errors="replace") as f:
            log = f.read()
        after = log.split("closed the connection", 1)
        if len(after) < 2 or " again" not in after[1]:
            h.fail("tailbox did not log that libnats closed the connection and that it connected "
                   "again")
        h.log("libnats closed the connection; tailbox connected again with the new token")
        nc.check_exact(ts.port, stream, w.paths[:2], token="second-token")


def test():
    nc.run(lambda: nats_server.NatsServer(config="max_payload: 65536"),
           (("nats_120k_outage", case_120k_with_outage),
            ("nats_too_large", case_too_large),
            ("nats_closed_connection", case_closed_connection)))


if __name__ == "__main__":
    nats_server.require_nats_server()
    h.main(test, "nats_sink_integration_test")
