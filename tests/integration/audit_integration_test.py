#!/usr/bin/env python3
"""`tailbox audit` against real runs: clean when exact, and precise when not.

Each case ships real files through a real `tailbox run`, then damages the
destination (or the outbox) the way an operator could find it, and checks what
`tailbox audit --json` reports, offsets included, and its exit code:
  - sqlite inbox, untouched: clean, every line delivered once (exit 0);
  - a line deleted at the inbox: reported missing at its offset (exit 1);
  - a line dead in the outbox (row dead-lettered, not at the destination):
    reported dead at its offset, not missing (exit 0);
  - file sink, one NDJSON record written twice: duplicated at its offset (exit 1);
  - lines appended after the stop: "not read yet", not missing;
  - an HTTP sink: refused, exit 2 (a receiver cannot be asked for keys).
Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/audit_integration_test.py
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HOST = "edge1"


def run_audit(wd, *extra):
    """(exit code, stdout, stderr) of `tailbox audit -c ... --json`."""
    r = subprocess.run([h.tailbox_bin(), "audit", "-c", wd.config, "--json", *extra],
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr


def audit(wd, *extra):
    """(exit code, the JSON report); fails when audit printed none."""
    code, out, err = run_audit(wd, *extra)
    try:
        return code, json.loads(out)
    except ValueError:
        h.fail(f"audit printed no JSON (exit {code}): {out!r} {err!r}")


def by_path(report):
    return {os.path.basename(f["path"]): f for f in report["files"]}


def write_files(wd, n):
    """a.log and b.log with n lines each ("a.log line 0012"); their paths."""
    paths = [wd.log_path("a.log"), wd.log_path("b.log")]
    for p in paths:
        with open(p, "wb") as f:
            f.write(b"".join(b"%s line %04d\n" % (os.path.basename(p).encode(), i)
                             for i in range(n)))
    return paths


def run_until_delivered(wd, paths, timeout=60):
    """A tailbox run until every line of `paths` is delivered, then SIGTERM."""
    tb = h.Tailbox(wd)
    try:
        tb.start()
        h.wait_until(lambda: h.caught_up(wd, paths), timeout, "every line delivered", tailbox=tb)
        h.stop_clean(tb)
    finally:
        tb.close()


def ship(wd, sink, n):
    h.write_config(wd, sink=sink, host_id=HOST)
    paths = write_files(wd, n)
    run_until_delivered(wd, paths)
    return paths


def case_sqlite():
    with h.case_workdir("tailbox-audit-sqlite-") as wd:
        paths = ship(wd, "sqlite", 300)
        rc, rep = audit(wd)
        files = by_path(rep)
        if rc != 0 or not rep["clean"] or files["a.log"]["delivered_once"] != 300 \
                or files["b.log"]["delivered_once"] != 300:
            h.fail(f"an exact run should audit clean with 300 lines per file: rc {rc}, {rep}")
        h.log("sqlite: an exact run audits clean")

        # A line deleted at the destination: missing, at its exact offset.
        with open(paths[0], "rb") as f:
            data = f.read()
        offset = data.index(b"a.log line 0012\n")
        conn = h.sqlite_connect(wd.inbox)
        with conn:
            n = conn.execute("DELETE FROM inbox WHERE path = ? AND offset = ?",
                             (paths[0], offset)).rowcount
        conn.close()
        if n != 1:
            h.fail(f"test bug: deleted {n} inbox rows")
        rc, rep = audit(wd)
        a = by_path(rep)["a.log"]
        if rc != 1 or rep["clean"] or a["missing"] != 1 or a["missing_offsets"] != [offset]:
            h.fail(f"a deleted line should be missing at offset {offset} (exit 1): rc {rc}, {a}")
        h.log(f"sqlite: a line deleted at the destination is reported missing at {offset}")

        # The same line dead in the outbox (dead-lettered): dead, not missing.
        conn = h.sqlite_connect(wd.outbox)
        with conn:
            fid, inode = conn.execute("SELECT id, inode FROM files WHERE path = ?",
                                      (paths[0],)).fetchone()
            conn.execute("INSERT INTO outbox (file, inode, offset, length, ingest_time, payload,"
                         " attempts, last_error, state) VALUES (?, ?, ?, 16, 0, ?, 5,"
                         " 'rejected by the test', 'dead')",
                         (fid, inode, offset, b"a.log line 0012"))
        conn.close()
        rc, rep = audit(wd)
        a = by_path(rep)["a.log"]
        if rc != 0 or a["missing"] != 0 or a["dead"] != 1 or a["dead_offsets"] != [offset]:
            h.fail(f"a dead row should be reported dead at {offset}, not missing (exit 0): "
                   f"rc {rc}, {a}")
        h.log(f"sqlite: a dead row is reported dead at {offset}")

        # Lines appended after the stop: not read yet, not missing.
        with open(paths[1], "ab") as f:
            f.write(b"late line\n" * 5)
        rc, rep = audit(wd, "--source", "app")
        b = by_path(rep)["b.log"]
        if rc != 0 or b["not_read_yet"] != 5 or b["missing"] != 0:
            h.fail(f"lines after the checkpoint are not read yet: rc {rc}, {b}")
        h.log("sqlite: lines after the checkpoint are counted as not read yet")


def case_file():
    with h.case_workdir("tailbox-audit-file-") as wd:
        ship(wd, "file", 200)
        rc, rep = audit(wd)
        if rc != 0 or not rep["clean"]:
            h.fail(f"an exact run should audit clean: rc {rc}, {rep}")
        with open(wd.ndjson, "rb") as f:
            lines = f.readlines()
        victim = next(line for line in lines if b"b.log line 0100" in line)
        offset = json.loads(victim)["offset"]
        with open(wd.ndjson, "ab") as f:
            f.write(victim)
        rc, rep = audit(wd)
        b = by_path(rep)["b.log"]
        if rc != 1 or b["duplicated"] != 1 or b["duplicated_offsets"] != [offset]:
            h.fail(f"a record written twice should be duplicated at {offset} (exit 1): rc {rc}, {b}")
        h.log(f"file sink: a record written twice is reported duplicated at {offset}")


def case_http():
    """An HTTP receiver cannot be asked which keys it holds: exit 2, said why."""
    with h.case_workdir("tailbox-audit-http-") as wd:
        h.write_sink_config(wd, {"type": "http", "url": "http://127.0.0.1:9/ingest"},
                            host_id=HOST)
        code, out, err = run_audit(wd)
        if code != 2 or "not possible for an HTTP receiver" not in err or out.strip():
            h.fail(f"audit of an HTTP sink should be refused (exit 2): rc {code}, {out!r} {err!r}")
        h.log(f"http: refused ({err.strip()})")


def test():
    case_sqlite()
    case_file()
    case_http()


if __name__ == "__main__":
    h.main(test, "audit_integration_test")
