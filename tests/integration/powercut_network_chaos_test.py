#!/usr/bin/env python3
"""Power-cut chaos with a network destination: PostgreSQL or NATS JetStream.

tailbox runs under the power-cut shim (see powercut_local_chaos_test.py); only
its own files (the outbox and its WAL) are cut: the server is another machine
and keeps running. [outbox] synchronous = "normal" (the default), so a cut
rolls back the last outbox transactions: lines are read again, rows whose
delivery the server confirmed are delivered again, and the destination must
drop the copies by key.

  postgres          a throwaway PostgreSQL 15 (pg_server.py); lines with rename
                    rotation (app.log -> app-NNNN.log) and b.log
  postgres_partial  the same server; partial_line_timeout = "300ms" and lines
                    written in two pieces 0.6 s apart (see
                    powercut_timers_chaos_test.py for why that is hard)
  nats, nats_full   nats-server -js (nats_server.py); the stream is created by
                    tailbox with duplicate_window = "1s", and tailbox stays
                    down 1.5-3 s after each cut: beyond the window the server no
                    longer drops a redelivered Nats-Msg-Id; only the read-back
                    of the stream at start (against the rolled-back outbox and
                    its rolled-back committed sequence) prevents copies;
                    nats_full: the same with [outbox] synchronous = "full"

The destination is read back and checked line by line, exact bytes
(harness.check_exact; the tiling check for postgres_partial).
Exit 77 (skip) when the server is not installed.
Usage: TAILBOX_BIN=build/tailbox POWERCUT_SHIM=build/tests/powercut_shim.so \
       python3 tests/integration/powercut_network_chaos_test.py postgres|nats
TAILBOX_CASE, TAILBOX_SEED, POWERCUT_CUTS as in the other power-cut tests.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import powercut_chaos as pcc  # noqa: E402


def rotated_writers(line):
    def writers(wd, rng):
        return [pcc.LogWriter(wd, "app.log", rng.randrange(1 << 30), rate=1500,
                              rotate_every=rng.randint(2000, 5000), line=line),
                pcc.LogWriter(wd, "b.log", rng.randrange(1 << 30), rate=600, line=line)]
    return writers


def postgres_scenarios(pg):
    import postgres_sink_integration_test as pgt

    def make(name, partial):
        db = "pc_" + name
        pg.psql(f"CREATE DATABASE {db}")
        source = {"partial_line_timeout": "300ms"} if partial else None

        def configure(wd):
            pgt.write_pg_config(wd, pg.conninfo(db), host_id=pcc.HOST, source=source,
                                tail={"rotate_wait": "1s"},
                                delivery={"workers": 2, "backoff_min": "100ms",
                                          "backoff_max": "1s"})

        def read(wd):
            return pgt.read_table(pg, db)

        if partial:
            def writers(wd, rng):
                return [pcc.LogWriter(wd, n, rng.randrange(1 << 30), style="partial", rate=400,
                                      p_special=0.3, pause=0.6, line=pcc.simple_line)
                        for n in ("a.log", "b.log", "c.log")]
            return pcc.Scenario(name, configure, writers, read, cuts=8, gap=(0.3, 1.5),
                                check=lambda wd, recs: pcc.check_tiling(
                                    wd, recs, False, f"table {db}.tailbox_logs"))
        return pcc.Scenario(name, configure, rotated_writers(pcc.utf8_line), read, cuts=6)

    return [make("postgres", False), make("postgres_partial", True)]


def nats_scenarios(ns):
    import nats_case as nc
    return [nats_scenario(ns, nc, "nats", "normal"), nats_scenario(ns, nc, "nats_full", "full")]


def nats_scenario(ns, nc, name, sync):
    stream = "POWERCUT_" + sync.upper()

    def configure(wd):
        # The scenarios' streams catch the same subjects: only one may exist.
        for other in ("POWERCUT_NORMAL", "POWERCUT_FULL"):
            try:
                nc.delete_stream(ns.port, other)
            except Exception:
                pass
        nc.write_nats_config(wd, ns.url, stream, tail={"rotate_wait": "1s"},
                             outbox={"synchronous": sync},
                             delivery={"workers": 2, "backoff_min": "100ms", "backoff_max": "1s"},
                             sink_extra={"create_stream": True, "duplicate_window": "1s"})

    def read(wd):
        recs = nc.read_records(ns.port, stream)
        # For a failure's post-mortem: the stream's order (seq = line number).
        with open(os.path.join(wd.root, "stream-keys.txt"), "w") as f:
            f.writelines(f"{r.key}\n" for r in recs)
        return recs

    return pcc.Scenario(name, configure, rotated_writers(pcc.plain_line), read, cuts=6,
                        down=(1.5, 3.0))


def test():
    kind = sys.argv[1] if len(sys.argv) > 1 else ""
    h.tailbox_bin()
    if kind == "postgres":
        import pg_server
        pg_server.require_postgres()
        with pg_server.PgServer() as pg:
            h.log(f"PostgreSQL 15 on 127.0.0.1:{pg.port} ({pg.root})")
            pcc.run_scenarios(postgres_scenarios(pg), "powercut_postgres")
    elif kind == "nats":
        import nats_server
        nats_server.require_nats_server()
        with nats_server.NatsServer() as ns:
            h.log(f"nats-server on {ns.url} ({ns.root})")
            pcc.run_scenarios(nats_scenarios(ns), "powercut_nats")
    else:
        h.fail("usage: powercut_network_chaos_test.py postgres|nats")


if __name__ == "__main__":
    h.main(test, "powercut_network_chaos_test " + " ".join(sys.argv[1:]))
