#!/usr/bin/env python3
"""The rabbitmq sink against a real rabbitmq-server on loopback.

One throwaway broker (rabbitmq_server.py: own node name, ports, epmd, data
dir) serves every case; each case has its own queue, work directory and
tailbox. The check reads the QUEUE back (build/tests/rabbitmq_tool: a stream
from offset 0 up to a marker; a classic queue with basic.get) and compares it
line by line (key = message_id, path, offset, exact bytes) with the files.

1. stream, exactly once: ~60,000 lines in 4 files (some bursts torn); in the
   middle the broker is stopped for 5 s and started again on the same data
   dir (lines wait in the outbox); SIGTERM; tailbox started again (its
   open() reads the stream back from the committed offset); more lines;
   every line exactly once in the stream, nothing dead-lettered.
2. classic queue, at-least-once: ~20,000 lines and the same outage; every line
   at least once (copies dropped by message_id), nothing lost.
3. mandatory + unroutable: the sink publishes through amq.direct with
   routing_key "{source}"; only source "app" is bound to the stream, source
   "orphan" is not. Every "orphan" line is dead-lettered with the
   basic.return reason (312 NO_ROUTE); every "app" line is in the stream
   exactly once.

4. idle longer than two heartbeats (heartbeat = "2s", 6 s without lines):
   rabbitmq-c answers heartbeats only inside its calls, so the broker has
   closed the connection by then; the sink must open a new one before
   publishing, without a failed attempt, and the stream stays exact.

5. a quorum queue (declared by tailbox): 5,000 lines, at-least-once check.

Exit 77 (skip) when rabbitmq-server is not installed (1 under CI=true).
Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/rabbitmq_sink_integration_test.py
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import rabbitmq_case as rc  # noqa: E402
import rabbitmq_server  # noqa: E402


def outage_run(rs, wd, tb, rng, queue, total):
    w = h.Writer(wd, rng)
    w.spread(total // 4, 4)
    tb.start()
    appended, outage_done = 0, False
    h.wait_until(lambda: 0 <= h.pending_rows(wd) < w.seq - 1000, 60,
                 "the first lines delivered before the outage", tailbox=tb)
    while appended < total // 2:
        if not outage_done and appended >= total // 6:
            h.log(f"stopping rabbitmq-server for 5 s ({w.seq} lines written)")
            rs.stop()
            t_end = time.monotonic() + 5
            while time.monotonic() < t_end:
                n = rng.randint(total // 200, total // 60)
                w.burst(n)
                appended += n
                time.sleep(0.1)
            tb.assert_alive("rabbitmq-server was down")
            waiting = h.pending_rows(wd)
            h.log(f"{w.seq} lines written; {waiting} wait in the outbox; starting rabbitmq-server")
            if waiting <= 0:
                h.fail("no rows waited in the outbox during the outage")
            t0 = time.monotonic()
            rs.start()
            h.log(f"rabbitmq-server up again after {time.monotonic() - t0:.1f}s")
            outage_done = True
        n = rng.randint(500, 3000)
        w.burst(n, torn=rng.random() < 0.2)
        appended += n
        time.sleep(rng.uniform(0, 0.02))
    rc.wait_all(rs.port, queue, wd, tb, w.paths, 180, f"{w.seq} lines delivered")
    h.stop_clean(tb)
    # A restart: open() reads the stream back from the committed offset.
    tb.start()
    w.spread(2_000, 4)
    rc.wait_all(rs.port, queue, wd, tb, w.paths, 120, f"{w.seq} lines delivered after a restart")
    h.stop_clean(tb)
    w.close()
    if h.dead_rows(wd):
        h.fail(f"dead rows: {h.dead_rows(wd)[:5]}")
    return w


def case_stream_outage(rs, wd, tb, rng):
    queue = "logs-stream"
    rc.write_rabbitmq_config(wd, rs.port, queue, "stream")
    w = outage_run(rs, wd, tb, rng, queue, 60_000)
    rc.check_exact(rs.port, queue, w.paths)


def case_classic_outage(rs, wd, tb, rng):
    queue = "logs-classic"
    rc.write_rabbitmq_config(wd, rs.port, queue, "classic")
    w = outage_run(rs, wd, tb, rng, queue, 20_000)
    rc.check_at_least_once(rs.port, queue, w.paths)


def case_unroutable(rs, wd, tb, rng):
    queue = "logs-routed"
    rc.write_rabbitmq_config(wd, rs.port, queue, "stream",
                             sink_extra={"exchange": "amq.direct", "routing_key": "{source}"})
    orphan_dir = rc.add_orphan_source(wd)
    # The stream must exist before the binding: tailbox declares it at open().
    tb.start()
    h.wait_until(lambda: rc.count(rs.port, queue) >= 0, 60, "the stream declared", tailbox=tb)
    rc.tool(rs.port, "bind", queue, "amq.direct", "app")
    w = h.Writer(wd, rng)
    w.spread(4_000, 4)
    orphan = os.path.join(orphan_dir, "o.log")
    with open(orphan, "wb") as f:
        for i in range(7):
            f.write(h.make_line(rng, "o", i))
    paths = w.paths + [orphan]
    h.wait_until(lambda: h.caught_up_reading(wd, paths) and h.pending_rows(wd) == 0, 120,
                 "every line delivered or dead", interval=0.5, tailbox=tb)
    h.stop_clean(tb)
    w.close()
    reason = rc.check_dead_are(wd, h.expected_from_files([orphan]).keys())
    h.log(f"the 7 unroutable lines are dead-lettered: {reason}")
    rc.check_exact(rs.port, queue, w.paths)


def case_idle(rs, wd, tb, rng):
    queue = "logs-idle"
    rc.write_rabbitmq_config(wd, rs.port, queue, "stream", sink_extra={"heartbeat": "2s"})
    w = h.Writer(wd, rng)
    w.spread(1_000, 4)
    tb.start()
    rc.wait_all(rs.port, queue, wd, tb, w.paths, 60, "the first 1,000 lines")
    time.sleep(6)
    w.spread(1_000, 4)
    rc.wait_all(rs.port, queue, wd, tb, w.paths, 60, "the lines after the pause")
    h.stop_clean(tb)
    w.close()
    with open(wd.tailbox_log, errors="replace") as f:
        failed = [line for line in f if " failed (" in line]
    if failed:
        h.fail(f"a delivery failed after the idle pause: {failed[0].strip()}")
    rc.check_exact(rs.port, queue, w.paths)


def case_quorum(rs, wd, tb, rng):
    queue = "logs-quorum"
    rc.write_rabbitmq_config(wd, rs.port, queue, "quorum")
    w = h.Writer(wd, rng)
    w.spread(5_000, 4)
    tb.start()
    rc.wait_all(rs.port, queue, wd, tb, w.paths, 60, "5,000 lines")
    h.stop_clean(tb)
    w.close()
    rc.check_at_least_once(rs.port, queue, w.paths)


def test():
    rc.run((("rabbitmq_stream_outage", case_stream_outage),
            ("rabbitmq_classic_outage", case_classic_outage),
            ("rabbitmq_unroutable", case_unroutable),
            ("rabbitmq_idle", case_idle),
            ("rabbitmq_quorum", case_quorum)))


if __name__ == "__main__":
    rabbitmq_server.require_rabbitmq_server()
    h.main(test, "rabbitmq_sink_integration_test")
