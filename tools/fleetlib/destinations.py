"""tools/fleet's destinations: a PostgreSQL server with one table, and a 3-node NATS
JetStream cluster with one R3 stream; each can be stopped for a while (chaos) and read
back whole (the exactly-once check)."""

import calendar
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tests", "integration"))
import harness as h  # noqa: E402
import nats_case  # noqa: E402
import nats_server  # noqa: E402
import pg_server  # noqa: E402
from fleetlib.sampling import proc_ticks  # noqa: E402

TABLE = "fleet_logs"
DATABASE = "fleet"
STREAM = "FLEET"
TABLE_DDL = f"""CREATE TABLE {TABLE} (
  key         text PRIMARY KEY,
  host        text NOT NULL,
  source      text NOT NULL,
  path        text NOT NULL,
  file_offset bigint NOT NULL,
  ingest_time timestamptz NOT NULL,
  event_time  timestamptz,
  message     text NOT NULL,
  fields      jsonb,
  arrived     timestamptz NOT NULL DEFAULT clock_timestamp()
)"""


# ---------------------------------------------------------------------------
# The destinations
# ---------------------------------------------------------------------------

class PgDest:
    name = "postgres"

    def __init__(self):
        pg_server.require_postgres()
        self.pg = pg_server.PgServer(extra_settings={"max_connections": "100"})
        self.pg.init().start()
        self.pg.psql(f"CREATE DATABASE {DATABASE}")
        self.pg.psql(TABLE_DDL, DATABASE)
        self.lock = threading.Lock()
        self.master_cpu = {}   # postmaster pid -> its CPU with reaped children, last seen
        h.log(f"PostgreSQL 15 on 127.0.0.1:{self.pg.port} ({self.pg.root}), one table "
              f"{DATABASE}.{TABLE}")

    def sink(self):
        return {"type": "postgres", "conninfo": self.pg.conninfo(DATABASE), "table": TABLE,
                "create_table": False, "timeout": "3s"}

    def outage(self, rng, seconds):
        h.log(f"chaos: stopping PostgreSQL (pg_ctl -m fast) for {seconds:.1f} s")
        with self.lock:
            self.pg.stop("fast")
        time.sleep(seconds)
        with self.lock:
            self.pg.start()
        h.log("chaos: PostgreSQL started again")

    def count(self):
        try:
            return int(self.pg.scalar(f"SELECT count(*) FROM {TABLE}", DATABASE))
        except (RuntimeError, ValueError):
            return -1

    def read(self):
        """[(Rec, arrived epoch seconds)] of every row."""
        rows = self.pg.rows(
            f"SELECT key, path, file_offset, encode(convert_to(message, 'UTF8'), 'hex'), host, "
            f"source, (extract(epoch FROM arrived) * 1000000)::bigint FROM {TABLE}", DATABASE)
        return [(h.Rec(k, p, int(o), bytes.fromhex(m), host, src), int(us) / 1e6)
                for k, p, o, m, host, src, us in rows]

    def cpu_ticks(self):
        """CPU of the server so far: every postmaster's own and reaped children's (last
        seen), plus the live backends of the running one."""
        with self.lock:
            if not self.pg.running:
                return sum(self.master_cpu.values())
            try:
                pids = self.pg.pids()
            except (OSError, ValueError):
                return sum(self.master_cpu.values())
        master, children = pids[0], pids[1:]
        own = proc_ticks(master, children_too=True)
        if own is not None:
            self.master_cpu[master] = own + sum(proc_ticks(p) or 0 for p in children)
        return sum(self.master_cpu.values())

    def close(self, keep):
        self.pg.cleanup(keep=keep)


class NatsDest:
    name = "nats"

    def __init__(self, duplicate_window, hard_stop=False):
        nats_server.require_nats_server()
        self.hard_stop = hard_stop
        self.cluster = nats_server.NatsCluster(3)
        self.cluster.start()
        self.ports = [s.port for s in self.cluster.servers]
        nats_server.wait_jetstream(self.ports, 60)
        self.lock = threading.Lock()
        self.cpu = {}   # server pid -> CPU ticks, last seen

        def create():
            try:
                c = nats_server.NatsClient(self.ports)
                try:
                    c.add_stream({"name": STREAM, "subjects": ["logs.*.*"], "num_replicas": 3,
                                  "storage": "file",
                                  "duplicate_window": int(duplicate_window * 1e9)})
                    return True
                finally:
                    c.close()
            except (nats_server.NatsError, OSError) as e:
                h.log(f"stream not created yet: {e}")
                return False
        h.wait_until(create, 60, "the R3 stream to be created", interval=1.0)
        h.log(f"NATS JetStream cluster {self.cluster.url} ({self.cluster.root}), one R3 "
              f"stream {STREAM} on logs.*.*, duplicate window {duplicate_window:g} s")

    def sink(self):
        return {"type": "nats", "url": self.cluster.url, "stream": STREAM, "timeout": "3s"}

    def up_ports(self):
        with self.lock:
            return [s.port for s in self.cluster.servers if s.running()]

    def leader(self):
        try:
            c = nats_server.NatsClient(self.up_ports(), timeout=3)
            try:
                return c.stream_info(STREAM).get("cluster", {}).get("leader")
            finally:
                c.close()
        except (nats_server.NatsError, OSError):
            return None

    def outage(self, rng, seconds):
        name = self.leader()
        victim = (next((s for s in self.cluster.servers if s.name == name), None)
                  or rng.choice(self.cluster.servers))
        how = "kill -9" if self.hard_stop else "stopping"
        h.log(f"chaos: {how} NATS node {victim.name} (stream leader: {name}) for "
              f"{seconds:.1f} s")
        with self.lock:
            if self.hard_stop:
                victim.kill9()
            else:
                victim.stop()
        time.sleep(seconds)
        with self.lock:
            victim.start()
        h.log(f"chaos: NATS node {victim.name} started again")

    def count(self):
        try:
            c = nats_server.NatsClient(self.up_ports(), timeout=5)
            try:
                return c.stream_info(STREAM)["state"]["messages"]
            finally:
                c.close()
        except (nats_server.NatsError, OSError, KeyError):
            return -1

    def read(self):
        """[(Rec, stored epoch seconds)] of every message; problems raise TestFailure."""
        c = nats_server.NatsClient(self.up_ports(), timeout=30)
        try:
            msgs = c.read_stream(STREAM)
        finally:
            c.close()
        return [(rec, rfc3339_seconds(m.get("time")))
                for m, rec in nats_case.checked_records(msgs, STREAM)]

    def cpu_ticks(self):
        with self.lock:
            pids = [s.proc.pid for s in self.cluster.servers if s.running()]
        for pid in pids:
            t = proc_ticks(pid)
            if t is not None:
                self.cpu[pid] = t
        return sum(self.cpu.values())

    def close(self, keep):
        self.cluster.cleanup(keep=keep)


def rfc3339_seconds(text):
    """'2026-11-30T20:43:08.123456789Z' -> epoch seconds (float); None -> None."""
    if not text:
        return None
    base, frac = text.rstrip("Z"), "0"
    if "." in base:
        base, frac = base.split(".", 1)
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + float("0." + frac)
