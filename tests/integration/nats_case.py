"""What the NATS sink's integration and chaos tests share (Python 3, stdlib only):
the tailbox config with a [sink] type = "nats" table, a writer of unique lines,
and the exactness check that reads the STREAM back (nats_server.NatsClient)."""

import base64
import json
import os
import re
import time

import harness as h
import nats_server

HOST = "edge1"
FILES = ["a.log", "b.log", "c.log", "d.log"]


def write_nats_config(wd, url, stream, sink_extra=None, **kwargs):
    """harness.write_config with a [sink] table for the nats sink; `tailbox check` must accept it."""
    kwargs.setdefault("delivery", {"backoff_min": "100ms", "backoff_max": "1s"})
    h.write_config(wd, host_id=HOST, **kwargs)
    with open(wd.config) as f:
        text = f.read()
    text = text[:text.index("\n[sink]\n")]
    sink = {"type": "nats", "url": url, "stream": stream, "timeout": "5s"}
    sink.update(sink_extra or {})
    text += "\n[sink]\n" + "".join(f"{k} = {h._toml_value(v)}\n" for k, v in sink.items())
    with open(wd.config, "w") as f:
        f.write(text)
    r = h.run_cli(["check", "-c", wd.config])
    if r.returncode != 0:
        h.fail(f"tailbox check rejected the test config: {r.stdout}{r.stderr}")
    return r


class Writer:
    """Appends unique lines (harness.make_line's variety) to FILES."""

    def __init__(self, wd, rng, files=FILES):
        self.wd, self.rng = wd, rng
        self.paths = [wd.log_path(n) for n in files]
        self.src = h.SourceFiles(self.paths)
        self.seq = 0

    def burst(self, n, path=None, torn=False):
        path = path or self.rng.choice(self.paths)
        tag = os.path.basename(path)[0]
        data = b"".join(h.make_line(self.rng, tag, self.seq + i) for i in range(n))
        self.seq += n
        split = self.rng.randrange(1, len(data)) if torn and len(data) > 1 else None
        self.src.write(path, data, n, split_at=split, pause=0.02 if split else 0.0)

    def spread(self, n, bursts):
        for k in range(bursts):
            self.burst(n // bursts + (1 if k < n % bursts else 0), path=self.paths[k % len(self.paths)])

    def close(self):
        self.src.close()


def client(ports):
    return nats_server.NatsClient(ports)


def stream_count(ports, stream):
    try:
        c = client(ports)
        try:
            return c.stream_info(stream)["state"]["messages"]
        finally:
            c.close()
    except (nats_server.NatsError, OSError, KeyError):
        return -1


def delete_stream(ports, stream):
    c = client(ports)
    try:
        c.delete_stream(stream)
    finally:
        c.close()


def read_records(ports, stream):
    """Every message of the stream as harness.Rec, from its NDJSON body; fails on
    a message whose headers disagree with its body."""
    c = client(ports)
    try:
        msgs = c.read_stream(stream)
    finally:
        c.close()
    recs, problems = [], []
    for m in msgs:
        try:
            obj = json.loads(m["data"].decode("utf-8"))
            line = (base64.b64decode(obj["message_base64"]) if "message_base64" in obj
                    else obj["message"].encode("utf-8"))
            rec = h.Rec(obj["_id"], obj["path"], int(obj["offset"]), line, obj.get("host"),
                        obj.get("source"))
        except (ValueError, KeyError, TypeError) as e:
            problems.append(f"seq {m['seq']}: not a record ({e}): {m['data'][:100]!r}")
            continue
        hd = m["headers"]
        if (hd.get("Nats-Msg-Id") != rec.key or hd.get("Tailbox-Offset") != str(rec.offset)
                or hd.get("Tailbox-Host") != rec.host or hd.get("Tailbox-Source") != rec.source):
            problems.append(f"seq {m['seq']}: headers {hd} disagree with the body's key "
                            f"{rec.key} / offset {rec.offset}")
        if m["subject"] != f"logs.{HOST}.{rec.source}":
            problems.append(f"seq {m['seq']}: subject {m['subject']}")
        recs.append(rec)
    if problems:
        h.fail(f"{len(problems)} bad messages in stream {stream}, e.g.:\n  " + "\n  ".join(problems[:5]))
    return recs


def pending(wd):
    if not os.path.exists(wd.outbox):
        return -1
    try:
        return h.outbox_states(wd.outbox).get("pending", 0)
    except Exception:   # the schema is not there yet
        return -1


def dead_rows(wd):
    conn = h.sqlite_connect(wd.outbox)
    try:
        return conn.execute("SELECT o.offset, f.path, o.last_error FROM outbox o "
                            "JOIN files f ON f.id = o.file WHERE o.state = 'dead' "
                            "ORDER BY o.offset").fetchall()
    finally:
        conn.close()


def wait_all(ports, stream, wd, tb, expected, timeout, what):
    """Until the outbox has nothing pending and the stream holds >= expected messages."""
    def done():
        return pending(wd) == 0 and stream_count(ports, stream) >= expected
    h.wait_until(done, timeout, what, interval=0.5, tailbox=tb,
                 progress=lambda: f"{stream_count(ports, stream)} of {expected} messages in the "
                                  f"stream, {pending(wd)} pending in the outbox")


def check_exact(ports, stream, paths, drop=()):
    expected = h.expected_from_files(paths)
    for po in drop:
        expected.pop(po)
    t0 = time.monotonic()
    recs = read_records(ports, stream)
    h.log(h.check_exact(expected, recs, host_id=HOST, label=f"stream {stream}")
          + f" (read back in {time.monotonic() - t0:.1f}s)")


def stop_clean(tb):
    rc = tb.stop()
    if rc != 0:
        h.fail(f"tailbox exited {rc} after SIGTERM")


READ_BACK = re.compile(r"read back (\d+) messages after sequence (\d+): (\d+) of this host's")


def read_backs(wd):
    """[(messages looked at, after sequence, skipped)] from every start's log line."""
    try:
        with open(wd.tailbox_log, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [tuple(int(x) for x in m.groups()) for m in READ_BACK.finditer(text)]
