"""What the NATS sink's integration and chaos tests share (Python 3, stdlib only):
the tailbox config with a [sink] type = "nats" table, a writer of unique lines,
and the exactness check that reads the STREAM back (nats_server.NatsClient)."""

import re
import time

import harness as h
import nats_server

HOST = "edge1"
FILES = ["a.log", "b.log", "c.log", "d.log"]


def write_nats_config(wd, url, stream, sink_extra=None, **kwargs):
    """The nats sink's [sink] table over harness.write_config; `tailbox check` must accept it."""
    kwargs.setdefault("delivery", {"backoff_min": "100ms", "backoff_max": "1s"})
    sink = {"type": "nats", "url": url, "stream": stream, "timeout": "5s"}
    sink.update(sink_extra or {})
    return h.write_sink_config(wd, sink, host_id=HOST, **kwargs)


def client(ports, token=None):
    return nats_server.NatsClient(ports, token=token)


def stream_count(ports, stream, token=None):
    try:
        c = client(ports, token)
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


def checked_records(msgs, stream, host=None):
    """[(message, harness.Rec)] from the NDJSON bodies of `msgs` (NatsClient.read_stream);
    fails on a message that is not a record, or whose headers or subject disagree with its
    body (subject logs.<host>.<source>; `host`: the only host expected, else each record's)."""
    pairs, problems = [], []
    for m in msgs:
        try:
            rec = h.rec_from_ndjson(m["data"])
        except (ValueError, KeyError, TypeError) as e:
            problems.append(f"seq {m['seq']}: not a record ({e}): {m['data'][:100]!r}")
            continue
        hd = m["headers"]
        if (hd.get("Nats-Msg-Id") != rec.key or hd.get("Tailbox-Offset") != str(rec.offset)
                or hd.get("Tailbox-Host") != rec.host or hd.get("Tailbox-Source") != rec.source):
            problems.append(f"seq {m['seq']}: headers {hd} disagree with the body's key "
                            f"{rec.key} / offset {rec.offset}")
        if m["subject"] != f"logs.{host or rec.host}.{rec.source}":
            problems.append(f"seq {m['seq']}: subject {m['subject']} for host {rec.host}")
        pairs.append((m, rec))
    if problems:
        h.fail(f"{len(problems)} bad messages in stream {stream}, e.g.:\n  " + "\n  ".join(problems[:5]))
    return pairs


def read_records(ports, stream, token=None):
    """Every message of the stream as harness.Rec (see checked_records)."""
    c = client(ports, token)
    try:
        msgs = c.read_stream(stream)
    finally:
        c.close()
    return [rec for _, rec in checked_records(msgs, stream, HOST)]


def wait_all(ports, stream, wd, tb, expected, timeout, what):
    """Until the outbox has nothing pending and the stream holds >= expected messages."""
    def done():
        return h.pending_rows(wd) == 0 and stream_count(ports, stream) >= expected
    h.wait_until(done, timeout, what, interval=0.5, tailbox=tb,
                 progress=lambda: f"{stream_count(ports, stream)} of {expected} messages in the "
                                  f"stream, {h.pending_rows(wd)} pending in the outbox")


def check_exact(ports, stream, paths, drop=(), token=None):
    expected = h.expected_from_files(paths)
    for po in drop:
        expected.pop(po)
    t0 = time.monotonic()
    recs = read_records(ports, stream, token)
    h.log(h.check_exact(expected, recs, host_id=HOST, label=f"stream {stream}")
          + f" (read back in {time.monotonic() - t0:.1f}s)")


READ_BACK = re.compile(r"read back (\d+) messages after sequence (\d+): (\d+) of this host's")


def read_backs(wd):
    """[(messages looked at, after sequence, skipped)] from every start's log line."""
    try:
        with open(wd.tailbox_log, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [tuple(int(x) for x in m.groups()) for m in READ_BACK.finditer(text)]


def run(make_server, cases):
    """Runs `cases` ((name, body(server, wd, tb, rng)), TAILBOX_CASE selects one) as
    harness cases against the server make_server() returns (a NatsServer or a
    NatsCluster), up for the whole run."""
    seed = h.seed_from_env()
    h.tailbox_bin()
    with make_server() as ns:
        h.log(f"nats-server on {ns.url} ({ns.root})")
        logs = ns.log_tails if hasattr(ns, "log_tails") else ns.log_tail
        h.run_cases(cases, seed, lambda c: (ns, c.wd, c.tailbox(), c.rng),
                    context=[("nats-server log", logs)])
