#!/usr/bin/env python3
"""Chaos: tailbox publishing to a 3-node JetStream cluster (real nats-server
processes, each with its own store directory, routed to each other) into an
R3 stream, with tailbox's url listing all three servers.

While lines are written (seeded; the seed is printed): one node is killed with
kill -9 (the one holding the stream leadership when it can be told, else a
random one), tailbox is killed with kill -9 and restarted while that node is
down, then the node is started again. The stream must hold every line exactly
once, read back from whichever nodes are up.

Exit 77 (skip) when nats-server is not installed.
Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/nats_cluster_chaos_test.py
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import nats_case as nc  # noqa: E402
import nats_server  # noqa: E402

STREAM = "CLUSTER"


def write_for(w, rng, seconds):
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        w.burst(rng.randint(100, 1500), torn=rng.random() < 0.2)
        time.sleep(rng.uniform(0.01, 0.06))


def create_stream(ports):
    def attempt():
        try:
            c = nc.client(ports)
            try:
                c.add_stream({"name": STREAM, "subjects": ["logs.*.*"], "num_replicas": 3,
                              "storage": "file", "duplicate_window": 120 * 10**9})
                return True
            finally:
                c.close()
        except (nats_server.NatsError, OSError) as e:
            h.log(f"stream not created yet: {e}")
            return False
    h.wait_until(attempt, 60, "the R3 stream to be created", interval=1.0)


def leader(ports):
    try:
        c = nc.client(ports)
        try:
            return c.stream_info(STREAM).get("cluster", {}).get("leader")
        finally:
            c.close()
    except (nats_server.NatsError, OSError):
        return None


def case_cluster(cl, wd, tb, rng):
    ports = [s.port for s in cl.servers]
    nats_server.wait_jetstream(ports, 60)
    create_stream(ports)
    nc.write_nats_config(wd, cl.url, STREAM, sink_extra={"timeout": "3s"})
    w = h.Writer(wd, rng)
    w.spread(5_000, 4)
    tb.start()
    write_for(w, rng, rng.uniform(1.0, 2.0))
    name = leader(ports)
    victim = next((s for s in cl.servers if s.name == name), None) or rng.choice(cl.servers)
    victim.kill9()
    up = [s.port for s in cl.servers if s is not victim]
    h.log(f"kill -9 node {victim.name} (stream leader: {name}); {w.seq} lines written, "
          f"{nc.stream_count(up, STREAM)} messages in the stream")
    write_for(w, rng, rng.uniform(1.0, 2.0))
    tb.kill9()
    h.log(f"kill -9 tailbox; {w.seq} lines written, {nc.stream_count(up, STREAM)} in the stream")
    w.burst(rng.randint(100, 2000))
    tb.start()
    write_for(w, rng, rng.uniform(1.0, 2.0))
    h.log(f"starting node {victim.name} again")
    victim.start()
    write_for(w, rng, 1.0)
    w.burst(1_000)
    nc.wait_all(up, STREAM, wd, tb, w.seq, 120, "every line in the R3 stream")
    h.stop_clean(tb)
    w.close()
    nc.check_exact(up, STREAM, w.paths)
    if h.dead_rows(wd):
        h.fail(f"dead rows: {h.dead_rows(wd)[:5]}")


def test():
    nc.run(lambda: nats_server.NatsCluster(3), (("nats_cluster", case_cluster),))


if __name__ == "__main__":
    nats_server.require_nats_server()
    h.main(test, "nats_cluster_chaos_test")
