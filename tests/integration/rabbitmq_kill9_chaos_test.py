#!/usr/bin/env python3
"""Chaos: kill -9 tailbox while it publishes to a real rabbitmq-server; the
stream queue must hold every line exactly once, a classic queue every line at
least once. Seeded (the seed is printed; TAILBOX_SEED=N reruns it).

AMQP 0-9-1 has no broker-side dedup: in a stream queue only the sink's
read-back (open(): the stream from the committed offset up to a marker;
before publishing again lines sent without an answer: the same) keeps a
published-but-unconfirmed line from a second copy.

1. stream: kill -9 at 5 random moments while lines are written (some torn),
   the broker stopped and started again after the second; then more kills
   in the middle of heavy deliveries until at least 2 restarts found
   published-but-unconfirmed lines in the stream (tailbox logs how many; at
   most 10 rounds). Exact at the end, line by line.
2. classic queue: kill -9 at 3 random moments; every line at least once
   (copies, counted by message_id, are allowed: that is the guarantee).
3. unroutable lines under kill -9: the sink publishes through amq.direct
   with routing_key "{source}"; "app" is bound to the stream, "orphan" is
   not (mandatory). Orphan lines are mixed into the batches (each such batch
   is rejected, split, its routed part acknowledged without a second copy)
   while tailbox is killed 3 times: the orphan lines end up dead-lettered in
   the outbox with the 312 reason, every app line exactly once in the stream.
4. a confirm that never comes: tailbox talks to the broker through a proxy
   that, for a while, drops everything the broker sends (confirms included)
   but passes what tailbox sends. A batch is then stored without an answer
   and the attempt times out (timeout = "2s"). When answers pass again,
   tailbox reconnects, reads the stream back and must not publish the stored
   lines again: exact at the end.

5. the lock (one connection of a relay at a time): a proxy holds back
   everything tailbox sends on its open connections (new connections pass).
   The batch in flight never reaches the broker, times out, and tailbox opens
   a new connection, which must wait: the broker still holds the old one
   (the proxy keeps it open) and with it the lock queue. Then the proxy
   delivers the held bytes (the batch is stored now) and closes the old
   connection; tailbox gets the lock, reads the stream back and finds the
   batch. Without the lock it would have read back before the late bytes
   arrived and published the batch a second time.

Exit 77 (skip) when rabbitmq-server is not installed (1 under CI=true).
Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/rabbitmq_kill9_chaos_test.py
"""

import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import rabbitmq_case as rc  # noqa: E402
import rabbitmq_server  # noqa: E402
from nats_kill9_chaos_test import AnswerDropProxy, log_count  # noqa: E402  (a plain TCP proxy)

READ_BACK = re.compile(r"read back (\d+) messages from offset (\d+): (\d+) of this host's")
RECHECK = re.compile(r"read back (\d+) messages of stream \S+ from offset (\d+): (\d+) were stored")


def read_backs(wd, pattern=READ_BACK):
    try:
        with open(wd.tailbox_log, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [tuple(int(x) for x in m.groups()) for m in pattern.finditer(text)]


def write_for(w, rng, seconds, big=(50, 1500)):
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        w.burst(rng.randint(*big), torn=rng.random() < 0.2)
        time.sleep(rng.uniform(0, 0.05))


def write_and_kill(w, wd, tb, rng, k, seconds):
    """Kill #k + 1: lines for `seconds`, then kill -9."""
    write_for(w, rng, seconds)
    tb.kill9()
    h.log(f"kill -9 #{k + 1}: {w.seq} lines written, {h.pending_rows(wd)} pending")


def case_stream_kill9(rs, wd, tb, rng):
    queue = "kill9-stream"
    rc.write_rabbitmq_config(wd, rs.port, queue, "stream")
    w = h.Writer(wd, rng)
    w.spread(5_000, 4)
    tb.start()
    for k in range(5):
        write_and_kill(w, wd, tb, rng, k, rng.uniform(0.3, 2.0))
        if k == 1:
            t0 = time.monotonic()
            rs.stop()
            w.burst(rng.randint(500, 3000))
            rs.start()
            h.log(f"rabbitmq-server stopped and started again ({time.monotonic() - t0:.1f}s)")
        elif rng.random() < 0.5:
            w.burst(rng.randint(100, 2000))
        tb.start()
    found = sum(1 for _, _, skipped in read_backs(wd) if skipped > 0)
    for k in range(10):
        if found >= 2:
            break
        write_for(w, rng, rng.uniform(0.5, 1.5), big=(1000, 4000))
        tb.kill9()
        before = len(read_backs(wd))
        tb.start()
        h.wait_until(lambda: len(read_backs(wd)) > before, 60, "tailbox to read the stream back",
                     tailbox=tb)
        seen, after, skipped = read_backs(wd)[-1]
        h.log(f"extra kill -9 #{k + 1}: read back {seen} messages from offset {after}, "
              f"{skipped} published but unconfirmed")
        found += skipped > 0
    backs = read_backs(wd)
    h.log(f"{len(backs)} read-backs at start; {found} found published-but-unconfirmed lines "
          f"({sum(b[2] for b in backs)} lines in all)")
    if found < 2:
        h.fail(f"only {found} restarts found published-but-unconfirmed lines: the test did not "
               "exercise the read-back")
    w.burst(1_000)
    rc.wait_all(rs.port, queue, wd, tb, w.paths, 120, "every line after the kills")
    h.stop_clean(tb)
    w.close()
    rc.check_exact(rs.port, queue, w.paths)


def case_classic_kill9(rs, wd, tb, rng):
    queue = "kill9-classic"
    rc.write_rabbitmq_config(wd, rs.port, queue, "classic")
    w = h.Writer(wd, rng)
    w.spread(3_000, 4)
    tb.start()
    for k in range(3):
        write_and_kill(w, wd, tb, rng, k, rng.uniform(0.3, 1.5))
        tb.start()
    w.burst(1_000)
    rc.wait_all(rs.port, queue, wd, tb, w.paths, 120, "every line after the kills")
    h.stop_clean(tb)
    w.close()
    copies = rc.check_at_least_once(rs.port, queue, w.paths)
    h.log(f"{copies} copies in the classic queue (at-least-once, as documented)")


def case_unroutable_kill9(rs, wd, tb, rng):
    queue = "kill9-routed"
    rc.write_rabbitmq_config(wd, rs.port, queue, "stream",
                             sink_extra={"exchange": "amq.direct", "routing_key": "{source}"})
    orphan_dir = rc.add_orphan_source(wd)
    tb.start()
    h.wait_until(lambda: rc.count(rs.port, queue) >= 0, 60, "the stream declared", tailbox=tb)
    rc.tool(rs.port, "bind", queue, "amq.direct", "app")
    w = h.Writer(wd, rng)
    orphan = h.Writer(wd, rng, files=("o.log",))
    orphan.paths = [os.path.join(orphan_dir, "o.log")]
    orphan.src.close()
    orphan.src = h.SourceFiles(orphan.paths)
    for k in range(3):
        t_end = time.monotonic() + rng.uniform(0.5, 1.5)
        while time.monotonic() < t_end:
            w.burst(rng.randint(100, 1500), torn=rng.random() < 0.2)
            if rng.random() < 0.3:
                orphan.burst(rng.randint(1, 3))
            time.sleep(rng.uniform(0, 0.05))
        tb.kill9()
        h.log(f"kill -9 #{k + 1}: {w.seq} app lines, {orphan.seq} orphan lines written; "
              f"{h.pending_rows(wd)} pending, {len(h.dead_rows(wd))} dead")
        tb.start()
    paths = w.paths + orphan.paths
    h.wait_until(lambda: h.caught_up_reading(wd, paths) and h.pending_rows(wd) == 0, 120,
                 "every line delivered or dead", interval=0.5, tailbox=tb)
    h.stop_clean(tb)
    w.close()
    orphan.close()
    reason = rc.check_dead_are(wd, h.expected_from_files(orphan.paths).keys())
    h.log(f"{orphan.seq} unroutable lines dead-lettered: {reason}")
    rc.check_exact(rs.port, queue, w.paths)


def case_confirm_timeout(rs, wd, tb, rng):
    queue, warm, n = "no-confirm", 300, 3_000
    proxy = AnswerDropProxy(rs.port)
    try:
        rc.write_rabbitmq_config(wd, proxy.port, queue, "stream",
                                 delivery={"backoff_min": "100ms", "backoff_max": "500ms"},
                                 sink_extra={"timeout": "2s"})
        w = h.Writer(wd, rng)
        w.spread(warm, 4)
        tb.start()
        rc.wait_all(rs.port, queue, wd, tb, w.paths, 60, f"the first {warm} lines")
        proxy.drop(True)
        failed = log_count(wd, "no publisher confirm for")
        w.spread(n, 4)
        h.wait_until(lambda: log_count(wd, "no publisher confirm for") > failed, 30,
                     "an attempt to time out without confirms", interval=0.1, tailbox=tb)
        h.log("a batch timed out without confirms; keeping the answers away 3 s more")
        time.sleep(3)
        proxy.drop(False)
        rc.wait_all(rs.port, queue, wd, tb, w.paths, 90, "every line after the confirms came back")
        h.stop_clean(tb)
        w.close()
        rechecks = read_backs(wd, RECHECK)
        stored = sum(r[2] for r in rechecks)
        h.log(f"{len(rechecks)} read-backs before publishing again; {stored} lines were stored "
              f"without an answer and not published again")
        if stored == 0:
            h.fail("no line was found stored without an answer: the test did not exercise the "
                   "read-back before a re-send")
        rc.check_exact(rs.port, queue, w.paths)
    finally:
        proxy.close()


class StallProxy(h.TcpProxy):
    """A TCP proxy. stall(): the connections open now stop forwarding what the
    client sends (it is kept); new connections are not affected. release():
    the kept bytes are sent to the broker, then those connections are closed."""

    def __init__(self, target_port):
        self.conns = []     # [client, server, held (bytearray or None), client_gone]
        super().__init__(target_port)

    def connected(self, client, server):
        c = [client, server, None, False]
        with self.lock:
            self.conns.append(c)
        threading.Thread(target=self._up, args=(c,), daemon=True).start()
        threading.Thread(target=self._down, args=(c,), daemon=True).start()

    def _up(self, c):
        client, server = c[0], c[1]
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            with self.lock:
                if c[2] is not None:        # stalled: keep it, even the end
                    if data:
                        c[2] += data
                        continue
                    c[3] = True
                    return
            if not data:
                break
            try:
                server.sendall(data)
            except OSError:
                break
        self.shut(client, server)

    def _down(self, c):
        client, server = c[0], c[1]
        while True:
            try:
                data = server.recv(65536)
            except OSError:
                return
            if not data:
                break
            try:
                client.sendall(data)
            except OSError:
                pass        # the client is gone; keep reading what the broker says
        self.shut(client)

    def stall(self):
        with self.lock:
            for c in self.conns:
                c[2] = bytearray()

    def release(self):
        """Sends the kept bytes; returns how many."""
        with self.lock:
            stalled = [c for c in self.conns if c[2] is not None]
        sent = 0
        for c in stalled:
            with self.lock:
                data, c[2] = bytes(c[2]), None
            try:
                c[1].sendall(data)
                sent += len(data)
            except OSError:
                pass
        time.sleep(0.5)     # let the broker read them before the connection ends
        for c in stalled:
            self.shut(c[0], c[1])
        return sent

    def close(self):
        self.listener.close()
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            for s in (c[0], c[1]):
                try:
                    s.close()
                except OSError:
                    pass


def case_lock(rs, wd, tb, rng):
    queue, warm, n = "lock", 300, 2_000
    proxy = StallProxy(rs.port)
    try:
        rc.write_rabbitmq_config(wd, proxy.port, queue, "stream",
                                 delivery={"backoff_min": "100ms", "backoff_max": "500ms"},
                                 sink_extra={"timeout": "2s", "heartbeat": "30s"})
        w = h.Writer(wd, rng)
        w.spread(warm, 4)
        tb.start()
        rc.wait_all(rs.port, queue, wd, tb, w.paths, 60, f"the first {warm} lines")
        proxy.stall()
        timeouts = log_count(wd, "no publisher confirm for")
        w.spread(n, 4)
        h.wait_until(lambda: log_count(wd, "no publisher confirm for") > timeouts, 30,
                     "the held batch to time out", interval=0.1, tailbox=tb)
        h.wait_until(lambda: log_count(wd, "is still held by another connection") > 0, 30,
                     "the new connection to wait for the lock", interval=0.2, tailbox=tb)
        before = rc.count(rs.port, queue)
        held = proxy.release()
        h.log(f"the new connection waited for the lock; released {held} held bytes")
        rc.wait_all(rs.port, queue, wd, tb, w.paths, 90, "every line after the release")
        h.stop_clean(tb)
        w.close()
        stored = sum(r[2] for r in read_backs(wd, RECHECK))
        h.log(f"{stored} lines stored by the late bytes were found by the read-back "
              f"(message count before the release: {before})")
        rc.check_exact(rs.port, queue, w.paths)
        if stored == 0:
            h.fail("the read-back found none of the late batch: the test did not make the gap")
    finally:
        proxy.close()


def test():
    rc.run((("rabbitmq_stream_kill9", case_stream_kill9),
            ("rabbitmq_classic_kill9", case_classic_kill9),
            ("rabbitmq_unroutable_kill9", case_unroutable_kill9),
            ("rabbitmq_confirm_timeout", case_confirm_timeout),
            ("rabbitmq_lock", case_lock)))


if __name__ == "__main__":
    rabbitmq_server.require_rabbitmq_server()
    h.main(test, "rabbitmq_kill9_chaos_test")
