"""What the RabbitMQ sink's integration and chaos tests share (Python 3, stdlib
only): the [sink] type = "rabbitmq" config, the queue read back through
build/tests/rabbitmq_tool (rabbitmq-c; RABBITMQ_TOOL_BIN), and the checks:
exactly once for a stream, at-least-once (no loss, copies allowed) for a
classic queue."""

import base64
import collections
import json
import os
import subprocess
import time

import harness as h
import rabbitmq_server

HOST = "edge1"


def tool_bin():
    path = os.environ.get("RABBITMQ_TOOL_BIN") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "tests", "rabbitmq_tool")
    if not os.access(path, os.X_OK):
        h.fail(f"rabbitmq_tool not found at {path} (meson compile -C build)")
    return path


def tool(port, *args, timeout=120):
    r = subprocess.run([tool_bin(), str(port), *args], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"rabbitmq_tool {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def write_password(wd):
    path = os.path.join(wd.root, "rabbitmq.password")
    with open(path, "w") as f:
        f.write("guest\n")
    os.chmod(path, 0o600)
    return path


def write_rabbitmq_config(wd, port, queue, queue_type="stream", sink_extra=None, **kwargs):
    kwargs.setdefault("delivery", {"backoff_min": "100ms", "backoff_max": "1s"})
    sink = {"type": "rabbitmq", "port": port, "queue": queue, "queue_type": queue_type,
            "declare": True, "password_file": write_password(wd), "timeout": "5s",
            "heartbeat": "5s"}
    sink.update(sink_extra or {})
    return h.write_sink_config(wd, sink, host_id=HOST, **kwargs)


def add_orphan_source(wd):
    """Adds a [[source]] "orphan" (files <wd>/orphan/*.log) to wd.config; with
    routing_key = "{source}" on amq.direct and only "app" bound, its lines are
    unroutable. Returns the directory."""
    orphan_dir = os.path.join(wd.root, "orphan")
    os.makedirs(orphan_dir, exist_ok=True)
    with open(wd.config) as f:
        text = f.read()
    extra = f'\n[[source]]\nname = "orphan"\npaths = ["{orphan_dir}/*.log"]\nread_from = "head"\n'
    text = text.replace("\n[tail]\n", extra + "\n[tail]\n", 1)
    with open(wd.config, "w") as f:
        f.write(text)
    r = h.run_cli(["check", "-c", wd.config])
    if r.returncode != 0:
        h.fail(f"tailbox check: {r.stdout}{r.stderr}")
    return orphan_dir


def check_dead_are(wd, expected_dead):
    """The dead rows are exactly `expected_dead` ((path, offset)s), each with the 312 reason."""
    dead = h.dead_rows(wd)
    got = sorted((p, off) for off, p, _ in dead)
    if got != sorted(expected_dead):
        h.fail(f"{len(got)} dead rows, expected {len(expected_dead)} (the unroutable lines): "
               f"{got[:5]} vs {sorted(expected_dead)[:5]}")
    if not all("unroutable" in (e or "") and "312" in (e or "") for _, _, e in dead):
        h.fail(f"a dead row's error does not say unroutable (312): {dead[0][2]!r}")
    return dead[0][2] if dead else ""


def count(port, queue):
    """The broker's message count (a stream's lags a few seconds); -1 on error."""
    try:
        return int(tool(port, "count", queue, timeout=30).strip())
    except (RuntimeError, ValueError, subprocess.TimeoutExpired):
        return -1


def read_messages(port, queue, stream):
    out = tool(port, "read", queue, "stream" if stream else "classic")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def read_records(port, queue, stream):
    """harness.Recs of the queue's messages (tailbox markers left out); fails on
    a message whose properties disagree with its NDJSON body."""
    recs, problems, markers = [], [], 0
    for m in read_messages(port, queue, stream):
        if m["type"] == "tailbox.marker":
            markers += 1
            continue
        body = base64.b64decode(m["body_b64"])
        try:
            rec = h.rec_from_ndjson(body)
        except (ValueError, KeyError, TypeError) as e:
            problems.append(f"offset {m.get('offset')}: not a record ({e}): {body[:100]!r}")
            continue
        hd = m["headers"]
        if (m["id"] != rec.key or hd.get("tailbox-offset") != rec.offset
                or hd.get("tailbox-host") != rec.host or hd.get("tailbox-source") != rec.source
                or hd.get("tailbox-path") != rec.path or m["delivery_mode"] != 2):
            problems.append(f"offset {m.get('offset')}: message_id {m['id']}, headers {hd}, "
                            f"delivery_mode {m['delivery_mode']} disagree with the body "
                            f"({rec.key}, offset {rec.offset})")
        recs.append(rec)
    if problems:
        h.fail(f"{len(problems)} bad messages in queue {queue}, e.g.:\n  " + "\n  ".join(problems[:5]))
    return recs, markers


def check_exact(port, queue, paths, drop=()):
    expected = h.expected_from_files(paths)
    for po in drop:
        expected.pop(po)
    t0 = time.monotonic()
    recs, markers = read_records(port, queue, True)
    h.log(h.check_exact(expected, recs, host_id=HOST, label=f"stream {queue}")
          + f" ({markers} tailbox markers; read back in {time.monotonic() - t0:.1f}s)")


def check_at_least_once(port, queue, paths, drop=()):
    """Every line at least once, each copy with the right bytes and key; copies allowed."""
    expected = h.expected_from_files(paths)
    for po in drop:
        expected.pop(po)
    recs, _ = read_records(port, queue, False)
    copies = collections.Counter(r.key for r in recs)
    unique = {}
    for r in recs:
        if unique.setdefault(r.key, r) != r:
            h.fail(f"two copies of {r.key} differ")
    h.log(h.check_exact(expected, list(unique.values()), host_id=HOST, label=f"queue {queue}")
          + f" after dropping {len(recs) - len(unique)} copies by message_id "
          f"({sum(1 for c in copies.values() if c > 1)} keys had copies)")
    return len(recs) - len(unique)


def wait_all(port, queue, wd, tb, paths, timeout, what):
    """Until every file is read to its end and nothing is pending in the outbox."""
    h.wait_until(lambda: h.caught_up(wd, paths), timeout, what, interval=0.5, tailbox=tb,
                 progress=lambda: f"{count(port, queue)} messages in the queue (lagging), "
                                  f"{h.pending_rows(wd)} pending in the outbox")


def run(cases):
    """Runs `cases` ((name, body(rs, wd, tb, rng)), TAILBOX_CASE selects one) as
    harness cases against one rabbitmq-server, up for the whole run."""
    seed = h.seed_from_env()
    h.tailbox_bin()
    tool_bin()
    with rabbitmq_server.RabbitServer() as rs:
        h.log(f"rabbitmq-server on {rs.url} ({rs.root}) ready after {rs.start_seconds:.1f}s")
        h.run_cases(cases, seed, lambda c: (rs, c.wd, c.tailbox(), c.rng),
                    context=[("rabbitmq-server log", rs.log_tail)])
