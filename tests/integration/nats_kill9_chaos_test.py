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
3. Replayed dead rows beyond the window (duplicate_window = "1s"): rows R are
   dead-lettered while the server is down (max_attempts = 2); rows P are
   published and stored while another connection holds the outbox's write
   lock (so their rows stay pending), then kill -9. R is replayed with
   tools/replay: R comes first in its file and is delivered first after the
   restart, past the window. Once some of R is confirmed the outbox is locked
   again and tailbox killed, with P still pending; after a second restart past
   the window the stream must hold every line exactly once. The committed
   state must never pass a message of P before P's rows are confirmed
   (a sink that lets R's batches release P's read-back holds publishes P
   twice here).

4. An outage beyond the window while tailbox keeps running
   (duplicate_window = "1s", timeout = "2s"): tailbox talks to the server
   through a proxy that, for a while, drops everything the server sends (the
   PubAcks) but passes what tailbox sends. A batch is then stored in the
   stream without any answer, the attempt fails, and the retries come more
   than the window later. When the proxy cuts the connections and passes
   answers again, tailbox reconnects; the stream must hold every line exactly
   once (a sink that publishes the unanswered lines again stores them twice).

Exit 77 (skip) when nats-server is not installed.
Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/nats_kill9_chaos_test.py
"""

import os
import sqlite3
import subprocess
import sys
import threading
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
    w = h.Writer(wd, rng)
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
    h.stop_clean(tb)
    w.close()
    nc.check_exact(ns.port, stream, w.paths)
    nc.delete_stream(ns.port, stream)


def case_beyond_window(ns, wd, tb, rng):
    stream = "WINDOW"
    nc.write_nats_config(wd, ns.url, stream,
                         sink_extra={"create_stream": True, "duplicate_window": "1s"})
    w = h.Writer(wd, rng)
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
    h.stop_clean(tb)
    w.close()
    nc.check_exact(ns.port, stream, w.paths)
    nc.delete_stream(ns.port, stream)


REPLAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "replay")


def outbox_ids(wd, state):
    """The rows in `state`, each by its key in the outbox: (file, inode, offset)."""
    conn = h.sqlite_connect(wd.outbox)
    try:
        return set(conn.execute("SELECT file, inode, offset FROM outbox WHERE state = ?", (state,)))
    finally:
        conn.close()


def committed_state(wd, stream):
    conn = h.sqlite_connect(wd.outbox)
    try:
        row = conn.execute("SELECT value FROM sink_state WHERE sink = ?",
                           (f"nats:{stream}",)).fetchone()
        return row[0] if row else None
    finally:
        conn.close()


class OutboxLock:
    """Another connection's write lock on the outbox: tailbox can lease and
    publish, but not delete delivered rows (nor commit its state)."""

    def __init__(self, wd):
        self.conn = sqlite3.connect(wd.outbox, timeout=30, isolation_level=None)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self):
        self.conn.execute("ROLLBACK")
        self.conn.close()


def case_dead_replayed(ns, wd, tb, rng):
    stream, warm, n_dead, n_stored = "REPLAYED", 500, 4_000, 3_000

    def config(**delivery):
        d = {"backoff_min": "100ms", "backoff_max": "500ms"}
        d.update(delivery)
        nc.write_nats_config(wd, ns.url, stream, delivery=d,
                             sink_extra={"create_stream": True, "duplicate_window": "1s"})

    config(max_attempts=2)
    w = h.Writer(wd, rng)
    w.burst(warm, path=w.paths[0])
    tb.start()
    nc.wait_all(ns.port, stream, wd, tb, warm, 30, f"the first {warm} lines")

    # R: dead-lettered while the server is down.
    ns.stop()
    w.burst(n_dead, path=w.paths[1])
    h.wait_until(lambda: len(outbox_ids(wd, "dead")) == n_dead, 30,
                 f"{n_dead} rows dead-lettered (max_attempts = 2, server down)", tailbox=tb)
    tb.kill9()
    dead = outbox_ids(wd, "dead")

    # P: published and stored, never confirmed. Same file as R, after it: a
    # file's rows are leased in the order they were read.
    config(max_attempts=0)
    tb.start()
    w.burst(n_stored, path=w.paths[1])
    h.wait_until(lambda: h.pending_rows(wd) == n_stored, 30, f"{n_stored} more lines in the outbox",
                 tailbox=tb)
    lock = OutboxLock(wd)
    try:
        ns.start()
        h.wait_until(lambda: nc.stream_count(ns.port, stream) > warm, 60,
                     "messages stored while the outbox is locked", interval=0.2, tailbox=tb)
        time.sleep(1.0)
        tb.kill9()
    finally:
        lock.release()
    stored = nc.stream_count(ns.port, stream) - warm
    p_ids = outbox_ids(wd, "pending")
    if len(p_ids) != n_stored or outbox_ids(wd, "dead") != dead:
        h.fail(f"{len(p_ids)} pending (expected {n_stored}), {len(outbox_ids(wd, 'dead'))} dead "
               f"(expected {n_dead}) after the kill: the lock did not hold the acks back")
    if max(dead) >= min(p_ids):
        h.fail("test bug: the dead rows must come first in the file")
    h.log(f"{stored} of {n_stored} lines stored in the stream but pending in the outbox; "
          f"{n_dead} dead rows; state {committed_state(wd, stream)}")

    r = subprocess.run([REPLAY, "--db", wd.outbox], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or h.pending_rows(wd) != n_stored + n_dead:
        h.fail(f"tools/replay exited {r.returncode}, {h.pending_rows(wd)} pending: "
               f"{r.stdout}{r.stderr}")
    h.log(f"replayed: {r.stdout.strip()}")

    # Restart past the window: R (earlier in the file) goes first. Lock once some of R
    # is confirmed, while P is still pending, and kill.
    time.sleep(2.5)
    config(max_attempts=0, batch_rows=50, linger="0ms")
    before = len(nc.read_backs(wd))
    tb.start()
    h.wait_until(lambda: 0 <= h.pending_rows(wd) <= n_stored + n_dead - 100, 30,
                 "the first replayed rows confirmed", interval=0.01, tailbox=tb)
    lock = OutboxLock(wd)
    try:
        time.sleep(1.0)
        tb.kill9()
    finally:
        lock.release()
    backs = nc.read_backs(wd)
    if len(backs) <= before or backs[-1][2] < stored:
        h.fail(f"the restart did not find the {stored} stored lines in the stream: "
               f"{backs[before:]}")
    left = outbox_ids(wd, "pending")
    if not p_ids <= left:
        h.fail(f"{len(p_ids - left)} of P's rows were confirmed before the lock: the test did not "
               "make the gap it is about")
    h.log(f"restart #1 read back {backs[-1][0]} messages after sequence {backs[-1][1]}, "
          f"{backs[-1][2]} held; killed with {len(left)} rows pending ({len(left & p_ids)} of P); "
          f"state {committed_state(wd, stream)}")

    # Past the window again: only the read-back keeps P from a second copy.
    time.sleep(2.5)
    tb.start()
    nc.wait_all(ns.port, stream, wd, tb, w.seq, 60, "every line after the second restart")
    h.stop_clean(tb)
    w.close()
    nc.check_exact(ns.port, stream, w.paths[:2])
    nc.delete_stream(ns.port, stream)


class AnswerDropProxy(h.TcpProxy):
    """A TCP proxy to a nats-server. drop(True): what the server sends is read
    and thrown away (the client's messages still reach it, their PubAcks never
    come back). drop(False): the open connections are cut (their byte streams
    are no longer whole) and answers pass again for the next ones."""

    def __init__(self, target_port):
        self.dropping = False
        self.socks = []
        super().__init__(target_port)

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def connected(self, client, server):
        with self.lock:
            self.socks += [client, server]
        threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
        threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src, dst, answers):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                break
            if answers and self.dropping:
                continue
            try:
                dst.sendall(data)
            except OSError:
                break
        self.shut(src, dst)

    def drop(self, on):
        self.dropping = on
        if not on:
            with self.lock:
                socks, self.socks = self.socks, []
            for s in socks:
                self.shut(s)
                s.close()

    def close(self):
        self.listener.close()
        self.drop(False)


def log_count(wd, text):
    try:
        with open(wd.tailbox_log, "rb") as f:
            return f.read().decode("utf-8", "replace").count(text)
    except OSError:
        return 0


def case_outage_beyond_window(ns, wd, tb, rng):
    stream, warm, n = "OUTAGE", 300, 3_000
    proxy = AnswerDropProxy(ns.port)
    try:
        nc.write_nats_config(wd, proxy.url, stream,
                             delivery={"backoff_min": "100ms", "backoff_max": "500ms"},
                             sink_extra={"create_stream": True, "duplicate_window": "1s",
                                         "timeout": "2s"})
        w = h.Writer(wd, rng)
        w.spread(warm, 4)
        tb.start()
        nc.wait_all(ns.port, stream, wd, tb, warm, 30, f"the first {warm} lines")

        # The outage: messages reach the server, the answers do not.
        proxy.drop(True)
        failed = log_count(wd, "no PubAck for")
        w.spread(n, 4)
        h.wait_until(lambda: nc.stream_count(ns.port, stream) > warm, 30,
                     "messages stored without an answer", interval=0.1, tailbox=tb)
        h.wait_until(lambda: log_count(wd, "no PubAck for") > failed, 30,
                     "the attempt to fail without PubAcks", interval=0.1, tailbox=tb)
        stored = nc.stream_count(ns.port, stream) - warm
        h.log(f"{stored} messages stored while their attempt failed without an answer; "
              f"keeping the answers away 3 s (beyond the 1 s duplicate window)")
        time.sleep(3)
        h.log(f"{nc.stream_count(ns.port, stream) - warm} messages stored after the outage")
        proxy.drop(False)
        nc.wait_all(ns.port, stream, wd, tb, w.seq, 60, "every line after the outage")
        h.wait_until(lambda: sum(h.outbox_states(wd.outbox).values()) == 0, 30,
                     "an empty outbox", interval=0.2, tailbox=tb)
        h.stop_clean(tb)
        w.close()
        h.log(f"{log_count(wd, 'were stored and will not be published again')} read-backs "
              f"before publishing again")
        nc.check_exact(ns.port, stream, w.paths)
        nc.delete_stream(ns.port, stream)
    finally:
        proxy.close()


def test():
    nc.run(nats_server.NatsServer,
           (("nats_kill9", case_kill9), ("nats_beyond_window", case_beyond_window),
            ("nats_dead_replayed", case_dead_replayed),
            ("nats_outage_beyond_window", case_outage_beyond_window)))


if __name__ == "__main__":
    nats_server.require_nats_server()
    h.main(test, "nats_kill9_chaos_test")
