#!/usr/bin/env python3
"""`tailbox audit` against the stream sinks, with real servers where they exist.

Each case ships two files (300 lines each) through a real `tailbox run`, stops
it, and checks `tailbox audit --json` (and its exit code) on the destination,
exact and then damaged:
  - NATS JetStream (a real nats-server): an exact run audits clean (exit 0); a
    message deleted by sequence ($JS.API.STREAM.MSG.DELETE) is missing at its
    offset (exit 1); a copy published with the same Nats-Msg-Id after the
    stream's duplicate window (1 s here) is duplicated at its offset (exit 1).
    The stream's messages are the same before and after the audit (read-only).
  - RabbitMQ stream (a real rabbitmq-server): clean (exit 0); a copy published
    with the same message_id is duplicated (exit 1); the stream still holds the
    same messages afterwards. A classic queue: audit refuses (exit 2, "not
    possible for a classic queue: reading would consume it") and the queue keeps
    every message.
  - Kafka (librdkafka's mock cluster: no Kafka broker is packaged for Debian 12;
    the mock ignores isolation.level, so read_committed is not really tested
    here, see README): clean (exit 0); a copy of a record produced again is
    duplicated (exit 1).
Neither a Kafka topic nor a RabbitMQ stream can lose one message on demand, so
"missing" is made on the file side for those two: a space inside an audited
line becomes a newline, which starts a record at an offset the destination has
never seen. It must be reported missing at exactly that offset (exit 1).
Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/audit_streams_integration_test.py
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import audit_integration_test as ai  # noqa: E402
import harness as h  # noqa: E402
import kafka_mock as km  # noqa: E402
import nats_case as nc  # noqa: E402
import nats_server  # noqa: E402
import rabbitmq_case as rc  # noqa: E402
import rabbitmq_server  # noqa: E402

LINES = 300


def offset_of(path, needle):
    with open(path, "rb") as f:
        return f.read().index(needle)


def expect_clean(wd, label):
    rc_, rep = ai.audit(wd)
    files = ai.by_path(rep)
    if rc_ != 0 or not rep["clean"] or any(files[n]["delivered_once"] != LINES
                                           for n in ("a.log", "b.log")):
        h.fail(f"{label}: an exact run should audit clean with {LINES} lines per file: "
               f"rc {rc_}, {rep}")
    h.log(f"{label}: an exact run audits clean ({rep.get('destination')})")


def expect_one(wd, label, name, kind, offset):
    """Exit 1, and exactly one `kind` ("missing"/"duplicated") in `name`, at `offset`."""
    rc_, rep = ai.audit(wd)
    f = ai.by_path(rep)[name]
    other = "duplicated" if kind == "missing" else "missing"
    if rc_ != 1 or rep["clean"] or f[kind] != 1 or f[f"{kind}_offsets"] != [offset] \
            or f[other] != 0:
        h.fail(f"{label}: expected one line {kind} at {offset} in {name} (exit 1): "
               f"rc {rc_}, {f}")
    h.log(f"{label}: reported {kind} at offset {offset} (exit 1)")


def split_line(path, needle):
    """Turns the space after the first word of the line `needle` into a newline:
    a new record starts after it, at an offset no destination has seen. Returns
    that offset. The line lies past the identity's fingerprint (1 KiB)."""
    at = offset_of(path, needle) + needle.index(b" ")
    if at < 4096:
        h.fail("test bug: the split line lies inside the file's fingerprint")
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(b"\n")
    return at + 1


def case_nats():
    with h.case_workdir("tailbox-audit-nats-") as wd, nats_server.NatsServer() as ns:
        stream = "AUDIT"
        nc.write_nats_config(wd, ns.url, stream,
                             sink_extra={"create_stream": True, "duplicate_window": "1s"})
        paths = ai.write_files(wd, LINES)
        ai.run_until_delivered(wd, paths)
        c = nc.client(ns.port)
        try:
            before = c.read_stream(stream)
            expect_clean(wd, "nats")
            after = c.read_stream(stream)
            if [m["seq"] for m in after] != [m["seq"] for m in before]:
                h.fail("nats: the audit changed the stream")

            def message_at(path, offset):
                return next(m for m in after if json.loads(m["data"])["path"] == path
                            and json.loads(m["data"])["offset"] == offset)

            # A message deleted at the destination: missing at its offset.
            off = offset_of(paths[0], b"a.log line 0123\n")
            c.delete_msg(stream, message_at(paths[0], off)["seq"])
            expect_one(wd, "nats", "a.log", "missing", off)

            # A copy with the same Nats-Msg-Id, published after the duplicate window.
            off = offset_of(paths[1], b"b.log line 0200\n")
            orig = message_at(paths[1], off)
            deadline = time.monotonic() + 15
            while True:
                ack = c.publish(orig["subject"], orig["data"],
                                {"Nats-Msg-Id": orig["headers"]["Nats-Msg-Id"]})
                if "error" in ack:
                    h.fail(f"nats: publishing the copy: {ack}")
                if not ack.get("duplicate"):
                    break
                if time.monotonic() > deadline:
                    h.fail("nats: the stream still drops the copy as a duplicate")
                time.sleep(0.5)
            expect_one(wd, "nats", "b.log", "duplicated", off)
        finally:
            c.close()


def case_rabbitmq_stream(rs):
    with h.case_workdir("tailbox-audit-rabbitmq-") as wd:
        queue = "audit-stream"
        rc.write_rabbitmq_config(wd, rs.port, queue, "stream")
        paths = ai.write_files(wd, LINES)
        ai.run_until_delivered(wd, paths)
        before = rc.read_messages(rs.port, queue, True)
        expect_clean(wd, "rabbitmq stream")

        off = offset_of(paths[1], b"b.log line 0200\n")
        key = next(m["id"] for m in before if m["headers"].get("tailbox-offset") == off
                   and m["headers"].get("tailbox-path") == paths[1])
        rc.tool(rs.port, "publish", queue, key, "a copy")
        expect_one(wd, "rabbitmq stream", "b.log", "duplicated", off)
        after = [m["offset"] for m in rc.read_messages(rs.port, queue, True)]
        if after[:len(before)] != [m["offset"] for m in before]:
            h.fail("rabbitmq stream: the audit changed the stream")

        missing = split_line(paths[0], b"a.log line 0280\n")
        expect_one(wd, "rabbitmq stream (a record it never got)", "a.log", "missing", missing)


def case_rabbitmq_classic(rs):
    """A classic queue cannot be read without consuming it: refused, queue untouched."""
    with h.case_workdir("tailbox-audit-rabbitmq-classic-") as wd:
        rc.write_rabbitmq_config(wd, rs.port, "audit-classic", "classic")
        ai.run_until_delivered(wd, ai.write_files(wd, LINES))
        n = rc.count(rs.port, "audit-classic")
        code, out, err = ai.run_audit(wd)
        if code != 2 or "not possible for a classic queue: reading would consume it" \
                not in err or out.strip():
            h.fail(f"rabbitmq classic: audit should refuse (exit 2): rc {code}, {out!r} {err!r}")
        if rc.count(rs.port, "audit-classic") != n or n < 2 * LINES:
            h.fail(f"rabbitmq classic: the queue should keep its {n} messages")
        h.log(f"rabbitmq classic: refused ({err.strip()}); the queue keeps {n} messages")

        # Configured as a stream but a classic queue: the broker refuses to read it
        # from an offset; nothing is consumed.
        rc.write_rabbitmq_config(wd, rs.port, "audit-classic", "stream",
                                 sink_extra={"declare": False})
        code, out, err = ai.run_audit(wd)
        if code != 1 or "is not a stream" not in err:
            h.fail(f"rabbitmq classic read as a stream: audit should stop (exit 1): rc {code}, "
                   f"{out!r} {err!r}")
        h.wait_until(lambda: rc.count(rs.port, "audit-classic") == n, 30,
                     f"the classic queue holding its {n} messages again")
        h.log(f"rabbitmq classic configured as a stream: stopped ({err.strip()}); "
              f"the queue keeps {n} messages")


def case_kafka():
    with h.case_workdir("tailbox-audit-kafka-") as wd:
        cluster = km.MockCluster(log_path=os.path.join(wd.root, "mock.log"))
        try:
            km.write_kafka_config(wd, cluster.bootstrap)
            paths = ai.write_files(wd, LINES)
            ai.run_until_delivered(wd, paths)
            expect_clean(wd, "kafka (mock)")

            off = offset_of(paths[1], b"b.log line 0200\n")
            m = next(m for m in cluster.dump(km.TOPIC)
                     if m["headers"].get("tailbox-path") == paths[1]
                     and m["headers"].get("tailbox-offset") == str(off))
            r = subprocess.run([km.mock_bin(), "produce", cluster.bootstrap, km.TOPIC,
                                str(m["partition"]), m["key"], m["value"].hex(),
                                *[f"{k}={v}" for k, v in m["headers"].items()]],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                h.fail(f"kafka: producing the copy failed: {r.stderr}")
            expect_one(wd, "kafka (mock)", "b.log", "duplicated", off)

            missing = split_line(paths[0], b"a.log line 0280\n")
            expect_one(wd, "kafka (mock, a record it never got)", "a.log", "missing", missing)
        finally:
            cluster.close()


def test():
    h.tailbox_bin()
    case_nats()
    case_kafka()
    rc.tool_bin()
    with rabbitmq_server.RabbitServer() as rs:
        h.log(f"rabbitmq-server ready after {rs.start_seconds:.1f}s")
        case_rabbitmq_stream(rs)
        case_rabbitmq_classic(rs)


if __name__ == "__main__":
    nats_server.require_nats_server()
    rabbitmq_server.require_rabbitmq_server()
    h.main(test, "audit_streams_integration_test")
