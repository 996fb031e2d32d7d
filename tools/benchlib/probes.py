"""tools/bench's measurements of a running relay: file sizes, peak RSS and CPU time from
/proc, the outbox's progress (polled read-only); the NDJSON output's line count is the
tests' NewlineCounter."""

import json
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tests", "integration"))
from harness import NewlineCounter  # noqa: E402,F401  (re-exported for tools/bench)


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def vm_hwm_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


class OutboxProbe:
    """Cheap read-only look at the outbox: bytes read so far, and whether rows wait."""

    def __init__(self, path):
        self.path = path
        self.conn = None

    def poll(self):
        if self.conn is None:
            if not os.path.exists(self.path):
                return 0, True
            try:
                self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
                self.conn.execute("PRAGMA busy_timeout = 10000")
            except sqlite3.Error:
                self.conn = None
                return 0, True
        try:
            read, waiting = self.conn.execute(
                "SELECT (SELECT coalesce(sum(read_offset), 0) FROM files), "
                "EXISTS (SELECT 1 FROM outbox)").fetchone()
            return read, bool(waiting)
        except sqlite3.Error:   # schema not there yet, or busy
            return 0, True

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def cpu_seconds(pid):
    """utime + stime of the process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def follow_ndjson(dest, pos, arrived):
    """Reads the NDJSON output's new complete lines; records when each key was first seen."""
    import json
    try:
        with open(dest, "rb") as f:
            f.seek(pos)
            data = f.read()
    except OSError:
        return pos
    cut = data.rfind(b"\n")
    if cut < 0:
        return pos
    now = time.time()
    for raw in data[:cut].split(b"\n"):
        r = json.loads(raw)
        arrived.setdefault((r["path"], r["offset"]), now)
    return pos + cut + 1
