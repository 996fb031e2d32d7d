"""librdkafka's mock Kafka cluster as a process, for the kafka sink's tests.

tests/kafka/kafka_mock.cpp hosts the mock (rdkafka_mock.h, 3 brokers on
127.0.0.1) so that it outlives every tailbox the tests kill. KAFKA_MOCK_BIN
names the binary (default build/tests/kafka_mock).

What the mock does NOT do (librdkafka 2.0.2, measured): it ignores
isolation.level, so a consumer sees the records of aborted and of never-ended
transactions too. read_committed() below therefore emulates it: a record counts
only when its transaction ("tailbox-txn" header) wrote its progress record,
which the sink writes last in every transaction, after every record of it was
acknowledged. That is also exactly the rule the sink's own read-back sees on
the mock, so the emulation checks the sink's logic, not a real broker's
transaction markers (see docs/sinks/kafka.md). The mock also keeps only a few
MiB per partition (older records are dropped): the data topic gets 32
partitions, and `dump` fails rather than check a topic with records missing.
"""

import json
import os
import subprocess
import threading

import harness as h

HOST = "edge1"
FILES = ["a.log", "b.log", "c.log", "d.log"]
TOPIC = "logs"
PROGRESS = "logs.tailbox-progress"

# Kafka error codes used by the tests.
NOT_LEADER_FOR_PARTITION = 6
REQUEST_TIMED_OUT = 7
NOT_ENOUGH_REPLICAS = 19
TOPIC_AUTHORIZATION_FAILED = 29
COORDINATOR_NOT_AVAILABLE = 15
COORDINATOR_LOAD_IN_PROGRESS = 14
API_END_TXN = 26


def mock_bin():
    path = os.environ.get("KAFKA_MOCK_BIN") or os.path.join(h.REPO_ROOT, "build", "tests", "kafka_mock")
    if not os.access(path, os.X_OK):
        h.fail(f"kafka_mock not found: {path} (set KAFKA_MOCK_BIN)")
    return path


class MockCluster:
    """One mock cluster process; commands go to its stdin."""

    def __init__(self, partitions=32, progress_partitions=3, log_path=None):
        self.log = open(log_path or os.devnull, "ab")
        self.proc = subprocess.Popen(
            [mock_bin(), "serve", "--brokers", "3", "--topic", f"{TOPIC}:{partitions}",
             "--topic", f"{PROGRESS}:{progress_partitions}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1)
        self.bootstrap = None
        got = []

        def first_line():
            got.append(self.proc.stdout.readline())
        t = threading.Thread(target=first_line, daemon=True)
        t.start()
        t.join(20)
        if not got or not got[0].startswith("BOOTSTRAP "):
            self.close()
            h.fail(f"the mock Kafka cluster did not start: {got!r}")
        self.bootstrap = got[0].split()[1]
        h.log(f"mock Kafka cluster at {self.bootstrap}")

    def command(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer != "OK":
            h.fail(f"mock cluster: {text!r} -> {answer!r}")

    def produce_errors(self, count, code):
        self.command(f"produce_errors {count} {code}")

    def request_errors(self, api, count, code):
        self.command(f"request_errors {api} {count} {code}")

    def broker_down(self, broker_id):
        self.command(f"broker_down {broker_id}")

    def broker_up(self, broker_id):
        self.command(f"broker_up {broker_id}")

    def dump(self, topic):
        """Every message of `topic`: dicts with partition, offset, key, headers, value (bytes)."""
        r = subprocess.run([mock_bin(), "dump", self.bootstrap, topic], capture_output=True,
                           timeout=120)
        if r.returncode != 0:
            h.fail(f"cannot read {topic} from the mock: {r.stderr.decode(errors='replace')}")
        out = []
        for line in r.stdout.decode("utf-8", errors="surrogateescape").splitlines():
            parts = line.split("\t")
            msg = {"partition": int(parts[0]), "offset": int(parts[1]), "key": parts[2], "headers": {}}
            for kv in parts[3:]:
                k, _, v = kv.partition("=")
                if k == "value":
                    msg["value"] = bytes.fromhex(v)
                else:
                    msg["headers"][k] = v
            out.append(msg)
        return out

    def read_committed(self):
        """(records as harness.Rec, number of records hidden as not committed)."""
        txns = set()
        for p in self.dump(PROGRESS):
            txns.add(json.loads(p["value"])["txn"])
        recs, hidden, hidden_txns = [], 0, set()
        for m in self.dump(TOPIC):
            hd = m["headers"]
            if hd.get("tailbox-txn") not in txns:
                hidden += 1
                hidden_txns.add(hd.get("tailbox-txn"))
                continue
            recs.append(h.Rec(hd["tailbox-key"], hd["tailbox-path"], int(hd["tailbox-offset"]),
                              m["value"], hd["tailbox-host"], hd["tailbox-source"]))
        if hidden:
            h.log(f"{len(txns)} transactions wrote a progress record; {hidden} records of "
                  f"{len(hidden_txns)} others are hidden: {sorted(hidden_txns)[:8]}")
        return recs, hidden

    def read_all(self):
        """Every record of the data topic, committed or not (idempotent mode)."""
        recs = []
        for m in self.dump(TOPIC):
            hd = m["headers"]
            recs.append(h.Rec(hd["tailbox-key"], hd["tailbox-path"], int(hd["tailbox-offset"]),
                              m["value"], hd["tailbox-host"], hd["tailbox-source"]))
        return recs

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ---------------------------------------------------------------------------
# Test helpers shared by the kafka sink's tests
# ---------------------------------------------------------------------------

def write_kafka_config(wd, bootstrap, sink_extra=None, **kwargs):
    sink = {"type": "kafka", "brokers": bootstrap, "topic": TOPIC, "format": "raw",
            "timeout": "10s"}
    sink.update(sink_extra or {})
    return h.write_sink_config(wd, sink, host_id=HOST, **kwargs)


def check_exact(cluster, paths, drop=()):
    recs, hidden = cluster.read_committed()
    expected = h.expected_from_files(paths)
    for po in drop:
        expected.pop(po)
    h.log(h.check_exact(expected, recs, host_id=HOST, label="topic logs (read_committed)"))
    h.log(f"{hidden} records of transactions that did not commit were hidden")
    return recs


def case_args(cluster_kwargs=None):
    """harness.run_cases() arguments of a kafka case: body(wd, cluster, tb, rng), with a
    fresh MockCluster logging to <wd>/mock.log, closed after the tailbox, and the case's rng."""
    def args(c):
        cluster = c.add(MockCluster(log_path=os.path.join(c.wd.root, "mock.log"),
                                    **(cluster_kwargs or {})))
        return c.wd, cluster, c.tailbox(), c.rng
    return args


def wait_drained(wd, w, tb, timeout=120, paths=None):
    paths = paths or w.paths
    h.wait_until(lambda: h.caught_up(wd, paths), timeout, f"all {w.seq} lines delivered",
                 interval=0.5, tailbox=tb, progress=lambda: f"{h.pending_rows(wd)} rows pending")


