"""Shared helpers for tailbox's integration and chaos tests (Python 3, stdlib only).

The tests run as `python3 tests/integration/<name>.py` with TAILBOX_BIN naming the
binary (default: build/tailbox in the repository). Exit status 0 means pass; a
failure prints its reason, the random seed (when there is one), the work
directory and the end of each tailbox log.

Environment:
  TAILBOX_BIN   the tailbox binary
  TAILBOX_SEED  seed for the tests that use randomness (default: a random one, printed)
  TAILBOX_KEEP  "1": keep the temporary directory even when the test passes
"""

import base64
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_LINE_BYTES = 1 << 20   # tailbox's default [[source]] max_line_bytes


class TestFailure(Exception):
    """A check failed; the message says why."""


def fail(message):
    raise TestFailure(message)


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------

def tailbox_bin():
    path = os.environ.get("TAILBOX_BIN") or os.path.join(REPO_ROOT, "build", "tailbox")
    path = os.path.abspath(path)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        fail(f"tailbox binary not found or not executable: {path} (set TAILBOX_BIN)")
    return path


def seed_from_env():
    """The run's seed: TAILBOX_SEED, or a fresh random one. Always printed."""
    text = os.environ.get("TAILBOX_SEED", "").strip()
    seed = int(text) if text else random.SystemRandom().randrange(1, 2**31)
    log(f"seed = {seed}   (reproduce with TAILBOX_SEED={seed})")
    return seed


class Workdir:
    """A fresh directory under /tmp with logs/ for the source files."""

    def __init__(self, prefix="tailbox-it-"):
        self.root = os.path.realpath(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.logs = os.path.join(self.root, "logs")
        os.mkdir(self.logs)
        self.outbox = os.path.join(self.root, "outbox.db")
        self.inbox = os.path.join(self.root, "inbox.db")
        self.ndjson = os.path.join(self.root, "out.ndjson")
        self.config = os.path.join(self.root, "tailbox.toml")
        self.tailbox_log = os.path.join(self.root, "tailbox.log")

    def log_path(self, name):
        return os.path.join(self.logs, name)

    def cleanup(self, passed):
        if passed and os.environ.get("TAILBOX_KEEP") != "1":
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            log(f"work directory kept: {self.root}")


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)   # a JSON string is a valid TOML basic string for our values
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def write_config(wd, sink="sqlite", host_id="edge1", source=None, tail=None, outbox=None,
                 delivery=None, sink_extra=None, top=None, metrics=None):
    """Writes wd.config and returns its path. Each keyword overrides/extends a table.

    The metrics endpoint is off (listen = "") unless `metrics` says otherwise: its
    default fixed port would clash between concurrent tests.
    """
    src = {"name": "app", "paths": [os.path.join(wd.logs, "*.log")], "read_from": "head"}
    src.update(source or {})
    tl = {"poll_interval": "200ms", "read_interval": "50ms"}
    tl.update(tail or {})
    ob = {"path": wd.outbox}
    ob.update(outbox or {})
    dl = {"workers": 4, "batch_rows": 1000, "linger": "20ms"}
    dl.update(delivery or {})
    if sink == "sqlite":
        sk = {"type": "sqlite", "path": wd.inbox}
    elif sink == "file":
        sk = {"type": "file", "path": wd.ndjson, "format": "ndjson"}
    else:
        raise ValueError(sink)
    sk.update(sink_extra or {})
    mt = {"listen": ""}
    mt.update(metrics or {})

    lines = [f"host_id = {_toml_value(host_id)}"]
    for k, v in (top or {}).items():
        lines.append(f"{k} = {_toml_value(v)}")
    for name, table in (("[[source]]", src), ("[tail]", tl), ("[outbox]", ob),
                        ("[delivery]", dl), ("[metrics]", mt), ("[sink]", sk)):
        lines.append("")
        lines.append(name)
        for k, v in table.items():
            lines.append(f"{k} = {_toml_value(v)}")
    with open(wd.config, "w") as f:
        f.write("\n".join(lines) + "\n")
    return wd.config


# ---------------------------------------------------------------------------
# The tailbox process
# ---------------------------------------------------------------------------

class Tailbox:
    """One `tailbox run` at a time; stdout/stderr go (appended) to wd.tailbox_log.

    Always call close() in a finally block: it SIGKILLs a process still running.
    `env`: extra environment variables for the process (e.g. an LD_PRELOAD shim).
    """

    def __init__(self, wd, binary=None, config=None, env=None, preexec_fn=None, run_args=()):
        self.run_args = list(run_args)   # e.g. ["--watch-config"]
        self.wd = wd
        self.binary = binary or tailbox_bin()
        self.config = config or wd.config
        self.env = dict(os.environ, **env) if env else None
        self.preexec_fn = preexec_fn   # e.g. to run as another user or with rlimits
        self.proc = None
        self.logf = None
        self.starts = 0

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        if self.running():
            fail("test bug: tailbox started twice")
        self.starts += 1
        if self.logf is None:
            self.logf = open(self.wd.tailbox_log, "ab", buffering=0)
        self.logf.write(f"===== start #{self.starts} at {time.time():.3f} =====\n".encode())
        self.proc = subprocess.Popen([self.binary, "run", "-c", self.config, *self.run_args],
                                     stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env=self.env, preexec_fn=self.preexec_fn)
        return self.proc

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        """Graceful stop; returns the exit code. Fails (after SIGKILL) on a hang."""
        if self.proc is None:
            fail("test bug: stop() without start()")
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            fail(f"tailbox (pid {self.proc.pid}) did not stop within {timeout:.0f}s of "
                 f"signal {int(sig)}")
        self._mark(f"exit code {rc}")
        return rc

    def kill9(self):
        """SIGKILL; returns the exit status (-9 when it was still running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            fail(f"tailbox (pid {self.proc.pid}) survived SIGKILL for 20s")
        self._mark(f"killed, status {rc}")
        return rc

    def close(self):
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.kill9()
        finally:
            if self.logf is not None:
                self.logf.close()
                self.logf = None

    def _mark(self, text):
        if self.logf is not None:
            self.logf.write(f"===== {text} at {time.time():.3f} =====\n".encode())

    def vm_hwm_kib(self):
        return proc_status_kib(self.proc.pid, "VmHWM") if self.running() else None

    def assert_alive(self, what=""):
        if self.proc is not None and self.proc.poll() is not None:
            fail(f"tailbox exited on its own with status {self.proc.returncode}"
                 + (f" while {what}" if what else ""))


def proc_status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_cli(args, timeout=30, binary=None):
    """Runs `tailbox ARGS`; returns CompletedProcess (text). Never hangs."""
    cmd = [binary or tailbox_bin()] + list(args)
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        fail(f"`{' '.join(cmd)}` did not finish within {timeout}s")


def status_json(config, binary=None):
    r = run_cli(["status", "-c", config, "--json"], binary=binary)
    if r.returncode != 0:
        fail(f"tailbox status exited {r.returncode}: {r.stderr.strip()}")
    try:
        return json.loads(r.stdout)
    except ValueError as e:
        fail(f"tailbox status --json printed something that is not JSON ({e}): {r.stdout[:300]!r}")


def stop_summary(log_path, start_no):
    """(lines_read, rows_delivered) from the 'stopped:' line of run #start_no, or None."""
    try:
        with open(log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    marker = f"===== start #{start_no} at "
    at = text.find(marker)
    if at < 0:
        return None
    nxt = text.find("===== start #", at + len(marker))
    section = text[at:nxt if nxt >= 0 else len(text)]
    for line in section.splitlines():
        if "stopped:" in line and "lines read" in line:
            words = line.split("stopped:", 1)[1].replace(",", " ").split()
            try:
                return int(words[0]), int(words[3])
            except (IndexError, ValueError):
                return None
    return None


def tail_of_file(path, lines=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(data.splitlines()[-lines:])


def wait_until(predicate, timeout, what, interval=0.1, progress=None, tailbox=None):
    """Calls predicate() until it is truthy and returns its value.

    On timeout fails with `what` and progress() (if given). With `tailbox`, fails at
    once when that process exits by itself.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if tailbox is not None:
            tailbox.assert_alive(f"waiting for {what}")
        if time.monotonic() >= deadline:
            extra = f" ({progress()})" if progress else ""
            fail(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# Reading destinations and the outbox
# ---------------------------------------------------------------------------

Rec = collections.namedtuple("Rec", "key path offset line host source")


def sqlite_connect(path, timeout=30.0):
    conn = sqlite3.connect(path, timeout=timeout)
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    return conn


def _count(path, table):
    if not os.path.exists(path):
        return 0
    conn = sqlite_connect(path)
    try:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return 0
        raise
    finally:
        conn.close()


def inbox_count(path):
    return _count(path, "inbox")


def outbox_count(path):
    return _count(path, "outbox")


def outbox_states(path):
    """{state: rows} of the outbox table."""
    conn = sqlite_connect(path)
    try:
        return dict(conn.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
    finally:
        conn.close()


def _text(v):
    # The text columns should hold TEXT; a BLOB is decoded here so that the
    # exactness check still runs (inbox_type_problems() reports the type).
    if isinstance(v, (bytes, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    return v


def read_inbox(path):
    """Every inbox row as Rec; `line` is bytes (a TEXT value is flagged as corrupt)."""
    conn = sqlite_connect(path)
    try:
        rows = conn.execute("SELECT key, path, offset, line, host, source FROM inbox").fetchall()
    finally:
        conn.close()
    out = []
    for key, p, off, line, host, src in rows:
        if isinstance(line, str):
            line = ("TEXT:" + line).encode("utf-8")   # stored with the wrong type: flag it
        elif line is not None:
            line = bytes(line)
        out.append(Rec(_text(key), _text(p), off, line, _text(host), _text(src)))
    return out


INBOX_TYPES = {"key": {"text"}, "host": {"text"}, "source": {"text"}, "path": {"text"},
               "offset": {"integer"}, "ingest_time": {"integer"}, "line": {"blob"},
               "fields": {"text", "null"}, "delivered": {"integer"}}


def inbox_type_problems(path):
    """Columns of the inbox whose values have another SQLite type than the schema's.

    E.g. a key stored as BLOB never equals the TEXT 'edge1/...' a consumer looks
    up, and a later TEXT copy of the same key would not collide with it.
    """
    problems = []
    conn = sqlite_connect(path)
    try:
        for col, allowed in INBOX_TYPES.items():
            rows = conn.execute(f"SELECT typeof({col}), count(*), min(rowid_hint) FROM "
                                f"(SELECT {col}, key AS rowid_hint FROM inbox) GROUP BY 1"
                                ).fetchall()
            for typ, n, example in rows:
                if typ not in allowed:
                    problems.append(f"inbox.{col}: {n} values are {typ.upper()}, expected "
                                    f"{'/'.join(sorted(a.upper() for a in allowed))} "
                                    f"(e.g. key {_text(example)!r})")
    finally:
        conn.close()
    return problems


def read_ndjson(path):
    """(records, problems): one Rec per NDJSON line; problems lists unparsable lines."""
    records, problems = [], []
    if not os.path.exists(path):
        return records, problems
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        problems.append(f"{path} does not end with a newline (torn last record: "
                        f"{data[-80:]!r})")
    for n, raw in enumerate(data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")):
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("not an object")
            if "message_base64" in obj:
                line = base64.b64decode(obj["message_base64"], validate=True)
            else:
                line = obj["message"].encode("utf-8")
            records.append(Rec(obj["_id"], obj["path"], int(obj["offset"]), line,
                               obj.get("host"), obj.get("source")))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            problems.append(f"NDJSON line {n + 1} is not a valid record ({e}): {raw[:120]!r}")
    return records, problems


class NewlineCounter:
    """Counts the newlines of a growing file incrementally (cheap progress for NDJSON).

    If the file shrinks (the file sink cuts an unconfirmed tail at start), it
    counts again from the start.
    """

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.count = 0

    def poll(self):
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return self.count
        if size < self.pos:
            self.pos, self.count = 0, 0
        if size > self.pos:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                while self.pos < size:
                    block = f.read(min(8 << 20, size - self.pos))
                    if not block:
                        break
                    self.count += block.count(b"\n")
                    self.pos += len(block)
        return self.count


# ---------------------------------------------------------------------------
# Expected records and the exactness check
# ---------------------------------------------------------------------------

def expected_from_files(paths, max_line=MAX_LINE_BYTES):
    """{(path, offset): line bytes} for every complete line of `paths`.

    Mirrors tailbox's splitter: a line ends at "\\n"; a "\\r" just before it is
    dropped; a line longer than max_line is cut into max_line pieces. A last
    line without "\\n" is not a record yet (partial_line_timeout = 0).
    """
    expected = {}
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        pos = 0
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                break
            text_end = nl
            if text_end > pos and data[text_end - 1] == 0x0D:
                text_end -= 1
            while text_end - pos > max_line:
                expected[(p, pos)] = data[pos:pos + max_line]
                pos += max_line
            expected[(p, pos)] = data[pos:text_end]
            pos = nl + 1
    return expected


def _short(b, n=60):
    if b is None:
        return "None"
    return repr(b[:n]) + (f"...({len(b)} bytes)" if len(b) > n else "")


def check_exact(expected, delivered, host_id="edge1", label="destination", examples=5):
    """Fails unless `delivered` (Recs) holds every expected line exactly once.

    Reports missing lines, duplicates (same key, or same (path, offset) under any
    key), extra records, corrupted lines, malformed keys, and files whose records
    carry more than one uid. Returns a one-line summary when all is well.
    """
    problems = []
    key_count = collections.Counter(r.key for r in delivered)
    by_po = collections.defaultdict(list)
    for r in delivered:
        by_po[(r.path, r.offset)].append(r)

    dup_keys = [(k, c) for k, c in key_count.items() if c > 1]
    if dup_keys:
        problems.append(f"{len(dup_keys)} keys delivered more than once "
                        f"({sum(c - 1 for _, c in dup_keys)} extra copies), e.g. "
                        + ", ".join(f"{k} x{c}" for k, c in dup_keys[:examples]))
    dup_po = [(po, rs) for po, rs in by_po.items() if len(rs) > 1]
    dup_po_other_keys = [(po, rs) for po, rs in dup_po if len({r.key for r in rs}) > 1]
    if dup_po_other_keys:
        problems.append(f"{len(dup_po_other_keys)} (path, offset) pairs delivered under more "
                        f"than one key (a uid changed: dedup cannot absorb it), e.g. "
                        + "; ".join(f"{po[0]}@{po[1]}: " + ", ".join(sorted({r.key for r in rs}))
                                    for po, rs in dup_po_other_keys[:examples]))

    missing = sorted(po for po in expected if po not in by_po)
    if missing:
        per_file = collections.Counter(p for p, _ in missing)
        problems.append(f"{len(missing)} lines missing ("
                        + ", ".join(f"{os.path.basename(p)}: {n}" for p, n in sorted(per_file.items()))
                        + "), e.g. "
                        + "; ".join(f"{os.path.basename(p)}@{o} {_short(expected[(p, o)])}"
                                    for p, o in missing[:examples]))
    extra = sorted(po for po in by_po if po not in expected)
    if extra:
        problems.append(f"{len(extra)} records at a (path, offset) where no line starts, e.g. "
                        + "; ".join(f"{p}@{o} {_short(by_po[(p, o)][0].line)}"
                                    for p, o in extra[:examples]))
    corrupted = sorted(po for po, rs in by_po.items()
                       if po in expected and any(r.line != expected[po] for r in rs))
    if corrupted:
        problems.append(f"{len(corrupted)} lines delivered with other bytes than the file's, e.g. "
                        + "; ".join(f"{os.path.basename(p)}@{o}: expected "
                                    f"{_short(expected[(p, o)])}, got "
                                    f"{_short(next(r.line for r in by_po[(p, o)] if r.line != expected[(p, o)]))}"
                                    for p, o in corrupted[:examples]))

    bad_keys, uids = [], collections.defaultdict(set)
    for r in delivered:
        parts = r.key.split("/") if isinstance(r.key, str) else []
        if (len(parts) != 3 or parts[0] != host_id or not parts[1]
                or parts[2] != str(r.offset)):
            bad_keys.append(r)
        else:
            uids[r.path].add(parts[1])
        if r.host is not None and r.host != host_id:
            bad_keys.append(r)
    if bad_keys:
        problems.append(f"{len(bad_keys)} records whose key is not \"{host_id}/<uid>/<offset>\" "
                        f"(or whose host differs), e.g. "
                        + ", ".join(f"{r.key!r} (path {r.path}, offset {r.offset}, host {r.host})"
                                    for r in bad_keys[:examples]))
    multi = {p: u for p, u in uids.items() if len(u) > 1}
    if multi:
        problems.append("files whose records carry more than one uid: "
                        + "; ".join(f"{p}: {sorted(u)}" for p, u in list(multi.items())[:examples]))

    if len(delivered) != len(expected):
        problems.append(f"{label} holds {len(delivered)} records, expected {len(expected)}")

    if problems:
        fail(f"{label} is not exactly-once:\n  - " + "\n  - ".join(problems))
    return f"{label}: {len(delivered)} records, every line exactly once"


# ---------------------------------------------------------------------------
# Writing source files
# ---------------------------------------------------------------------------

_WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
          "november oscar papa quebec romeo sierra tango uniform victor whiskey xray").split()


def make_line(rng, tag, seq, variety=True):
    """One unique line (bytes, with its terminator) for source `tag`, number `seq`.

    With `variety`, some lines are empty, end in CRLF, carry JSON-hostile characters,
    a stray CR, non-ASCII UTF-8 or bytes that are not UTF-8.
    """
    head = f"{tag} {seq:09d} "
    body = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 25)))
    if not variety:
        return (head + body + "\n").encode()
    r = rng.random()
    if r < 0.01:
        return b"\n"                                         # empty line
    if r < 0.015:
        return b"\r\n"                                       # empty CRLF line
    if r < 0.04:
        return (head + body + "\r\n").encode()               # CRLF
    if r < 0.045:
        return (head + body + "\r\r\n").encode()             # keeps one \r
    if r < 0.06:
        return (head + 'quote " backslash \\ tab \t ctrl \x01 del \x7f ' + body + "\n").encode()
    if r < 0.07:
        return (head + "caf\u00e9 \u65e5\u672c \U0001F600 " + body + "\n").encode("utf-8")
    if r < 0.075:
        return head.encode() + b"bad utf8 \xff\xfe\xc3( " + body.encode() + b"\n"
    if r < 0.08:
        return (head + "stray \r cr " + body + "\n").encode()
    return (head + body + "\n").encode()


class SourceFiles:
    """Appends to a set of log files with O_APPEND, optionally in torn writes."""

    def __init__(self, paths):
        self.paths = list(paths)
        self.fds = {}
        self.lines = collections.Counter()   # complete lines written per path

    def fd(self, path):
        if path not in self.fds:
            self.fds[path] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self.fds[path]

    def write(self, path, data, nlines, split_at=None, pause=0.0):
        fd = self.fd(path)
        if split_at is not None and 0 < split_at < len(data):
            _write_all(fd, data[:split_at])
            if pause:
                time.sleep(pause)
            _write_all(fd, data[split_at:])
        else:
            _write_all(fd, data)
        self.lines[path] += nlines

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]



# ---------------------------------------------------------------------------
# Shared by the tests of the network sinks (postgres, kafka, nats, ...)
# ---------------------------------------------------------------------------

def write_sink_config(wd, sink, **kwargs):
    """write_config() with `sink` (a dict) as the [sink] table; `tailbox check` must accept it."""
    write_config(wd, **kwargs)
    with open(wd.config) as f:
        text = f.read()
    text = text[:text.index("\n[sink]\n")]
    text += "\n[sink]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in sink.items())
    with open(wd.config, "w") as f:
        f.write(text)
    r = run_cli(["check", "-c", wd.config])
    if r.returncode != 0:
        fail(f"tailbox check rejected the test config: {r.stdout}{r.stderr}")
    return r


class Writer:
    """Appends unique lines (make_line) to files of a work directory, in bursts."""

    def __init__(self, wd, rng, files=("a.log", "b.log", "c.log", "d.log"), line=None):
        self.wd, self.rng = wd, rng
        self.paths = [wd.log_path(n) for n in files]
        self.src = SourceFiles(self.paths)
        self.seq = 0
        self.line = line or make_line     # line(rng, tag, seq) -> bytes with its newline

    def burst(self, n, path=None, torn=False):
        path = path or self.rng.choice(self.paths)
        tag = os.path.basename(path)[0]
        data = b"".join(self.line(self.rng, tag, self.seq + i) for i in range(n))
        self.seq += n
        split = self.rng.randrange(1, len(data)) if torn and len(data) > 1 else None
        self.src.write(path, data, n, split_at=split, pause=0.02 if split else 0.0)

    def spread(self, n, bursts):
        for k in range(bursts):
            self.burst(n // bursts + (1 if k < n % bursts else 0), path=self.paths[k % len(self.paths)])

    def close(self):
        self.src.close()


def pending_rows(wd):
    """Rows pending in the outbox; -1 while it (or its schema) is not there yet."""
    if not os.path.exists(wd.outbox):
        return -1
    try:
        return outbox_states(wd.outbox).get("pending", 0)
    except Exception:
        return -1


def dead_rows(wd):
    """[(offset, path, last_error)] of the dead rows, by offset."""
    conn = sqlite_connect(wd.outbox)
    try:
        return conn.execute("SELECT o.offset, f.path, o.last_error FROM outbox o "
                            "JOIN files f ON f.id = o.file WHERE o.state = 'dead' "
                            "ORDER BY o.offset").fetchall()
    finally:
        conn.close()


def stop_clean(tb):
    """SIGTERM; fails unless tailbox exits 0."""
    rc = tb.stop()
    if rc != 0:
        fail(f"tailbox exited {rc} after SIGTERM")


def caught_up(wd, paths):
    """Every file read to its end (read_offset = size) and no row pending."""
    return pending_rows(wd) == 0 and caught_up_reading(wd, paths)


def caught_up_reading(wd, paths):
    """Every file read to its end (read_offset = size)."""
    if not os.path.exists(wd.outbox):
        return False
    conn = sqlite_connect(wd.outbox)
    try:
        offsets = dict(conn.execute("SELECT path, read_offset FROM files"))
    finally:
        conn.close()
    return all(offsets.get(p, -1) == os.path.getsize(p) for p in paths if os.path.exists(p))

# ---------------------------------------------------------------------------
# Running a test
# ---------------------------------------------------------------------------

def main(test, name):
    """Runs test() -> None; prints PASS/FAIL and exits 0/1. SIGTERM (meson's
    timeout) becomes an exception so that finally blocks kill tailbox."""
    def on_term(signo, _frame):
        raise TestFailure(f"interrupted by signal {signo} (test timeout?)")
    signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    try:
        test()
    except TestFailure as e:
        print(f"\nFAIL {name} after {time.monotonic() - t0:.1f}s: {e}", flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"\nFAIL {name}: interrupted", flush=True)
        sys.exit(1)
    except Exception:
        import traceback
        traceback.print_exc()
        print(f"\nFAIL {name}: unexpected exception (test bug or environment)", flush=True)
        sys.exit(1)
    print(f"\nPASS {name} in {time.monotonic() - t0:.1f}s", flush=True)
    sys.exit(0)


@contextlib.contextmanager
def case_workdir(prefix):
    """A Workdir for one case: removed when the case passes, kept (with the
    failure context printed) when it raises."""
    wd = Workdir(prefix)
    passed = False
    try:
        yield wd
        passed = True
    finally:
        if not passed:
            report_failure_context(wd)
        wd.cleanup(passed)


def report_failure_context(wd, seed=None):
    """Prints what helps to debug a failure: seed, directory, tailbox log tail."""
    if seed is not None:
        log(f"seed = {seed}   (reproduce with TAILBOX_SEED={seed})")
    log(f"last lines of {wd.tailbox_log}:\n{tail_of_file(wd.tailbox_log)}")
