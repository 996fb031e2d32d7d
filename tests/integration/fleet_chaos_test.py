#!/usr/bin/env python3
"""Chaos: a small fleet (tools/fleet) on real servers: 4 hosts, each with its own host_id,
log directory (steady writes, rename rotation) and one relay per destination (own config and
outbox), for 30 s into ONE PostgreSQL table and ONE R3 stream on a 3-node JetStream cluster,
while relays are killed with kill -9 and started again, PostgreSQL is stopped and started,
and the NATS node leading the stream is killed with kill -9 and started again. The stream's
duplicate window is 1 s, so a relay restarted after kill -9 must read the stream back (its
own subject, in a stream every host writes to) rather than rely on the window. Every host's lines must be at
each destination exactly once (read back, grouped by host, compared line by line with the
host's files by harness.check_exact). Seeded (TAILBOX_SEED); the seed is printed.

Exit 77 (skip) when PostgreSQL 15 or nats-server is not installed.
Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/fleet_chaos_test.py
"""

import importlib.machinery
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import nats_server  # noqa: E402
import pg_server  # noqa: E402


def load_fleet():
    path = os.path.join(h.REPO_ROOT, "tools", "fleet")
    loader = importlib.machinery.SourceFileLoader("tailbox_fleet", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def test():
    fleet = load_fleet()
    args = fleet.parse_args(["--relays", "4", "--seconds", "30", "--rate", "150",
                             "--dest", "both", "--kills", "6", "--outage", "6",
                             "--rotate-every", "8", "--drain-timeout", "90",
                             "--duplicate-window", "1", "--node-kill9"])
    fleet.run(args)


if __name__ == "__main__":
    pg_server.require_postgres()
    nats_server.require_nats_server()
    h.main(test, "fleet_chaos_test")
