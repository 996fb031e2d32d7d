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
First, without servers, the check itself is shown to report a copy, a loss, changed bytes,
a second key for one line and another host's record.

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


def check_self_test(fleet):
    """The fleet's check itself: records as a relay would deliver them (a rotated file's
    early lines under its old name) pass; a copy, a loss, changed bytes, a second key for
    one line, and another host's line are each reported. No servers."""
    import random
    with h.case("fleet_check", None, prefix="tailbox-fleet-check-") as c:
        root = c.wd.root
        host = fleet.Host(root, 0, random.Random(1), rate=1000, rotate_every=1e9)
        now = 0.0
        host.write(0.1, now)                       # 100 lines into app.log (gen 0)
        read_before_rotation = h.expected_from_files([host.current])
        host.rotate()                              # app.log -> app.0000.log
        host.write(0.1, now)                       # 100 lines into the new app.log (gen 1)
        host.close()
        expected = {host.host_id: h.expected_from_files(host.paths())}
        good = []
        for (path, off), line in sorted(read_before_rotation.items()):
            good.append((h.Rec(f"{host.host_id}/uid0/{off}", path, off, line, host.host_id,
                               "app"), 1.0))
        for (path, off), line in sorted(expected[host.host_id].items()):
            if path == host.current:
                good.append((h.Rec(f"{host.host_id}/uid1/{off}", path, off, line,
                                   host.host_id, "app"), 1.0))
        if fleet.check_destination("t", [host], expected, good, {}):
            h.fail("the fleet's check rejects a correct delivery: "
                   f"{fleet.check_destination('t', [host], expected, good, {})}")
        r0, _ = good[3]
        bad_cases = {
            "a copy": good + [good[7]],
            "a loss": good[:5] + good[6:],
            "changed bytes": good[:4] + [(good[4][0]._replace(line=good[4][0].line + b"x"),
                                          1.0)] + good[5:],
            "a second key": good + [(r0._replace(key=f"{host.host_id}/uid9/{r0.offset}"), 1.0)],
            "another host": good + [(r0._replace(host="fleet-99"), 1.0)],
        }
        for what, got in bad_cases.items():
            if not fleet.check_destination("t", [host], expected, got, {}):
                h.fail(f"the fleet's check does not see {what}")
        h.log(f"the fleet's check: a correct delivery passes; {', '.join(bad_cases)} are seen")


def test():
    fleet = load_fleet()
    check_self_test(fleet)
    args = fleet.parse_args(["--relays", "4", "--seconds", "30", "--rate", "150",
                             "--dest", "both", "--kills", "6", "--outage", "6",
                             "--rotate-every", "8", "--drain-timeout", "90",
                             "--duplicate-window", "1", "--node-kill9"])
    fleet.run(args)


if __name__ == "__main__":
    pg_server.require_postgres()
    nats_server.require_nats_server()
    h.main(test, "fleet_chaos_test")
