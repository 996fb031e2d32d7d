#!/usr/bin/env python3
"""Power-cut chaos, local destinations: the file sink (NDJSON) and the sqlite
inbox, each with [outbox] synchronous = "normal" (the default) and "full".

tailbox runs with tests/powercut/powercut_shim.so preloaded; at random moments
(seeded) it is killed with SIGKILL and every write to the outbox, its WAL, the
sqlite inbox and its WAL, or the NDJSON output that had not been fsynced is
dropped or torn (powercut.py: per 512-byte sector, any version since the last
fsync; the size any size since then), the -shm files are deleted, and tailbox
starts again. Meanwhile writer threads append lines (CRLF, empty, non-UTF-8,
JSON-hostile lines included) to app.log, which is rename-rotated
(app.log -> app-NNNN.log, a new app.log) every few thousand lines, and to
b.log. At the end tailbox drains and stops (exit 0); the destination must hold
every line of every file exactly once with its exact bytes (harness.check_exact;
a record's path is mapped to its file's final name), and the outbox must be
empty. For the file sink a duplicate is a repeated NDJSON line.

Scenarios: file_normal, file_full, sqlite_normal, sqlite_full (8 cuts each),
and file_young_1..3: a fresh outbox cut once 0.8-2 s after its first start
(the sink's first state; first-use paths). TAILBOX_CASE runs one. TAILBOX_SEED reruns a run; POWERCUT_CUTS sets the cuts per scenario.
Usage: TAILBOX_BIN=build/tailbox POWERCUT_SHIM=build/tests/powercut_shim.so \
       python3 tests/integration/powercut_local_chaos_test.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import powercut_chaos as pcc  # noqa: E402


def scenario(sink, sync, name=None, cuts=8, gap=(0.3, 2.5)):
    def configure(wd):
        h.write_config(wd, sink=sink, host_id=pcc.HOST, outbox={"synchronous": sync},
                       tail={"rotate_wait": "1s"}, delivery={"workers": 2, "linger": "20ms"})

    def writers(wd, rng):
        return [pcc.LogWriter(wd, "app.log", rng.randrange(1 << 30), rate=1500,
                              rotate_every=rng.randint(2000, 5000)),
                pcc.LogWriter(wd, "b.log", rng.randrange(1 << 30), rate=600)]

    read = pcc.read_ndjson if sink == "file" else pcc.read_inbox
    return pcc.Scenario(name or f"{sink}_{sync}", configure, writers, read, cuts=cuts, gap=gap)


def test():
    scenarios = [scenario(s, y) for s in ("file", "sqlite") for y in ("normal", "full")]
    # A young outbox: one cut 0.8-2 s after the first start, in a fresh directory,
    # three times (first-use paths: the sink's first committed state).
    scenarios += [scenario("file", "normal", f"file_young_{i}", cuts=1, gap=(0.8, 2.0))
                  for i in range(1, 4)]
    pcc.run_scenarios(scenarios, "powercut_local")


if __name__ == "__main__":
    h.main(test, "powercut_local_chaos_test")
