"""What the power-cut chaos tests share (Python 3, stdlib only): writer threads
(plain lines with rename rotation, lines in two pieces, multiline events), the
cut loop (kill -9 + powercut.rollback + restart) and the line-by-line checks.

A scenario runs tailbox with tests/powercut/powercut_shim.so preloaded, so that
every write to its files in the work directory (outbox, WAL, sqlite inbox, the
file sink's output) that was not fsynced yet is journaled; a cut kills tailbox
and rolls those files back as a power loss could (see powercut.py for the
model and its limits). The log files are written by the test process, not
through the shim: they are assumed durable.

Environment (besides the harness package's):
  POWERCUT_CUTS   cuts per scenario (default: the scenario's own, 5-8)
  TAILBOX_CASE    run only the scenario of this name
"""

import bisect
import collections
import os
import random
import threading
import time

import harness as h
import powercut

HOST = "edge1"


def cuts_from_env(default):
    text = os.environ.get("POWERCUT_CUTS", "").strip()
    return int(text) if text else default


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------

def plain_line(rng, tag, seq):
    """make_line's variety (CRLF, empty, JSON-hostile, non-UTF-8 lines)."""
    return h.make_line(rng, tag, seq)


def utf8_line(rng, tag, seq):
    """make_line's variety minus bytes that are not UTF-8 (PostgreSQL text refuses them)."""
    line = h.make_line(rng, tag, seq)
    try:
        line.decode("utf-8")
        return line
    except UnicodeDecodeError:
        return h.make_line(rng, tag, seq, variety=False)


def simple_line(rng, tag, seq):
    """A unique line without CR (the tiling check of the timer scenarios counts bytes)."""
    return h.make_line(rng, tag, seq, variety=False)


class LogWriter(threading.Thread):
    """Appends to logs/<name> until stopped, at about `rate` lines per second.

    style:
      "lines"      complete lines (bursts of 1-200 lines)
      "partial"    complete lines; with probability `p_special` one line is
                   written in two pieces with `pause` seconds between them
      "multiline"  events: a start line "EVT <seq> ..." and 0-6 continuation
                   lines "  at frame ..."; with probability `p_special` the
                   start line is written, then `pause` seconds, then the rest
    rotate_every: for "lines", every this many lines (about) the file is
    renamed to <stem>-NNNN.log (rename rotation) and a new one started.
    """

    def __init__(self, wd, name, seed, style="lines", rate=1500, rotate_every=None,
                 p_special=0.0, pause=0.0, line=plain_line):
        super().__init__(name=f"writer-{name}", daemon=True)
        self.wd, self.name_, self.style = wd, name, style
        self.rng = random.Random(seed)
        self.rate, self.rotate_every = rate, rotate_every
        self.p_special, self.pause = p_special, pause
        self.line = line
        self.path = wd.log_path(name)
        self.fd = None
        self.seq = 0
        self.rotations = 0
        self.specials = 0
        self.since_rotation = 0
        self.stop_flag = threading.Event()
        self.error = None

    def _open(self):
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _write(self, data):
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def _rotate(self):
        self.rotations += 1
        stem = self.name_[:-4] if self.name_.endswith(".log") else self.name_
        os.close(self.fd)
        os.rename(self.path, self.wd.log_path(f"{stem}-{self.rotations:04d}.log"))
        self._open()
        self.since_rotation = 0

    def _one(self):
        tag = self.name_[0]
        rng = self.rng
        if self.style == "lines":
            n = rng.randint(1, 200)
            self._write(b"".join(self.line(rng, tag, self.seq + i) for i in range(n)))
            self.seq += n
            self.since_rotation += n
            if self.rotate_every and self.since_rotation >= self.rotate_every:
                self._rotate()
            return n
        if self.style == "partial":
            n = rng.randint(1, 50)
            data = b"".join(self.line(rng, tag, self.seq + i) for i in range(n))
            self.seq += n
            self._write(data)
            if rng.random() < self.p_special:
                line = self.line(rng, tag, self.seq)
                self.seq += 1
                cut = rng.randint(1, len(line) - 1)
                self._write(line[:cut])
                self.specials += 1
                self.stop_flag.wait(self.pause)   # longer than partial_line_timeout
                self._write(line[cut:])
                n += 1
            return n
        # multiline
        n = 0
        for _ in range(rng.randint(1, 20)):
            head = f"EVT {tag} {self.seq:09d} " + " ".join(rng.choice(h._WORDS)
                                                            for _ in range(rng.randint(1, 8)))
            rest = b"".join(f"  at frame {tag}{self.seq}.{k} {rng.choice(h._WORDS)}\n".encode()
                            for k in range(rng.randint(0, 6)))
            self.seq += 1
            n += 1
            if rest and rng.random() < self.p_special:
                self._write(head.encode() + b"\n")
                self.specials += 1
                self.stop_flag.wait(self.pause)   # longer than multiline.timeout
                self._write(rest)
            else:
                self._write(head.encode() + b"\n" + rest)
        return n

    def run(self):
        try:
            self._open()
            t0 = time.monotonic()
            while not self.stop_flag.is_set():
                self._one()
                ahead = self.seq / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    self.stop_flag.wait(min(ahead, 0.5))
        except BaseException as e:   # reported by the main thread
            self.error = e
        finally:
            if self.fd is not None:
                os.close(self.fd)


# ---------------------------------------------------------------------------
# Mapping delivered records to the files' final names
# ---------------------------------------------------------------------------

def final_paths(wd):
    return sorted(os.path.join(wd.logs, n) for n in os.listdir(wd.logs))


def normalize_paths(wd, delivered):
    """Records carry the name a file had when it was read (app.log before a
    rename rotation, app-0003.log after). Rewrites each record's path to its
    file's final name: all records of one file uid belong to one file, the one
    (among those that had the record's name) whose bytes at the records'
    offsets are the records' texts."""
    contents = {p: open(p, "rb").read() for p in final_paths(wd)}
    def candidates(path):
        base = os.path.basename(path)
        out = [p for p in contents if os.path.basename(p) == base]
        stem, ext = os.path.splitext(base)
        if "-" not in stem:   # app.log: every rotated generation app-NNNN.log once had it
            out += [p for p in contents if os.path.basename(p).startswith(stem + "-")
                    and p not in out]
        return out
    by_uid = collections.defaultdict(list)
    for r in delivered:
        parts = r.key.split("/") if isinstance(r.key, str) else []
        by_uid[parts[1] if len(parts) == 3 else r.key].append(r)
    out = []
    for uid, recs in by_uid.items():
        score = collections.Counter()
        for r in recs[:200]:
            for p in candidates(r.path):
                data = contents[p]
                if r.line is not None and data[r.offset:r.offset + len(r.line)] == r.line:
                    score[p] += 1
        if score:
            best = score.most_common(1)[0][0]
            out += [r._replace(path=best) for r in recs]
        else:
            out += recs   # reported by the check as records where no line starts
    return out


# ---------------------------------------------------------------------------
# The tiling check (partial lines, multiline events)
# ---------------------------------------------------------------------------

def units_of(path, multiline):
    """[(start, end)] byte ranges of the file's lines, or of its multiline events
    (a line starting with "EVT " and the lines up to the next one)."""
    with open(path, "rb") as f:
        data = f.read()
    units, pos = [], 0
    starts = []
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        if not multiline or data.startswith(b"EVT ", pos) or not starts:
            starts.append(pos)
        pos = nl + 1
    for i, s in enumerate(starts):
        units.append((s, starts[i + 1] if i + 1 < len(starts) else pos))
    return data, units


def check_tiling(wd, delivered, multiline, label, examples=5):
    """Every line (event) of every file must be covered, exactly once, by the
    records at the destination: records in its byte range, in offset order,
    whose texts (each plus the newline it consumed) make up its bytes exactly.
    A line flushed in two pieces (partial_line_timeout) or an event flushed as
    its start line and then the rest (multiline.timeout) is fine; a record
    whose key is at the destination with a shorter text than a later reading
    of the file produced (the tail lost) is not."""
    problems = collections.defaultdict(list)
    key_count = collections.Counter(r.key for r in delivered)
    dups = [(k, c) for k, c in key_count.items() if c > 1]
    if dups:
        problems["keys delivered more than once"] += [f"{k} x{c}" for k, c in dups]
    by_path = collections.defaultdict(list)
    for r in delivered:
        by_path[r.path].append(r)
    files = final_paths(wd)
    pieces = 0
    for p in files:
        data, units = units_of(p, multiline)
        recs = sorted(by_path.pop(p, []), key=lambda r: r.offset)
        offsets = [r.offset for r in recs]
        for start, end in units:
            lo, hi = bisect.bisect_left(offsets, start), bisect.bisect_left(offsets, end)
            inside = recs[lo:hi]
            want = data[start:end]
            where = f"{os.path.basename(p)}@{start}"
            if not inside:
                problems["lines missing"].append(f"{where} {want[:60]!r}")
                continue
            if len(inside) > 1:
                pieces += 1
            pos, ok = start, True
            for i, r in enumerate(inside):
                text = r.line or b""
                if r.offset != pos or data[pos:pos + len(text)] != text:
                    ok = False
                    break
                pos += len(text)
                # The record consumed the newline after its text, unless the
                # next record starts right there (a piece flushed by the timer
                # just before its newline: the late "\n" is a record of its own).
                nxt = inside[i + 1].offset if i + 1 < len(inside) else end
                if nxt == pos + 1 and data[pos:pos + 1] == b"\n":
                    pos += 1
            if not ok or pos != end:
                got = " + ".join(f"@{r.offset} {r.line[:50]!r}({len(r.line)} bytes)" for r in inside)
                problems["lines whose records do not make up their bytes exactly (a piece lost, "
                         "doubled or changed)"].append(f"{where} expected {want[:80]!r} "
                                                       f"({len(want)} bytes), got {got}")
        bad_keys = [r for r in recs if not (isinstance(r.key, str) and r.key.startswith(HOST + "/")
                                            and r.key.endswith(f"/{r.offset}"))]
        if bad_keys:
            problems["records with a malformed key"] += [r.key for r in bad_keys]
    for p, recs in by_path.items():
        problems["records of no file"] += [f"{p}@{r.offset} {r.line[:40]!r}" for r in recs]
    if problems:
        h.fail(f"{label} is not exactly-once:\n  - " + "\n  - ".join(
            f"{len(v)} {k}, e.g.:\n      " + "\n      ".join(v[:examples])
            for k, v in problems.items()))
    return (f"{label}: {len(delivered)} records cover every {'event' if multiline else 'line'} "
            f"of {len(files)} files exactly once ({pieces} in more than one record)")


# ---------------------------------------------------------------------------
# The scenario runner
# ---------------------------------------------------------------------------

def quiet(wd):
    """Nothing pending or dead, every file read to its end."""
    try:
        s = h.status_json(wd.config)
    except h.TestFailure:
        return False
    return (s["pending_rows"] == 0 and s["dead_rows"] == 0
            and all(f["size"] in (-1, f["read_offset"]) for f in s["files"]))


class Scenario:
    """One scenario: a work directory, tailbox under the shim, writers, cuts.

    configure(wd) writes the config; writers(wd, rng) returns LogWriters;
    read(wd) returns the destination's records; check(wd, records) checks them
    (default: harness.check_exact over the final files).
    """

    def __init__(self, name, configure, writers, read, check=None, cuts=6,
                 gap=(0.3, 2.5), down=(0.0, 0.4), settle=1.5, drain_timeout=120):
        self.name, self.configure, self.writers, self.read = name, configure, writers, read
        self.check = check or check_exact_lines
        self.cuts, self.gap, self.down = cuts_from_env(cuts), gap, down
        self.settle, self.drain_timeout = settle, drain_timeout

    def run(self, seed, run_seed=None):
        """One scenario with its seed; `run_seed` (the run's TAILBOX_SEED, from which
        `seed` derives) is what a failure says to rerun with."""
        rng = random.Random(seed)
        with h.case(self.name, seed if run_seed is None else run_seed,
                    prefix=f"tailbox-powercut-{self.name}-") as c:
            wd = c.wd
            pc = powercut.PowerCut(wd.root)
            tb = c.tailbox(env=pc.env())
            t0 = time.monotonic()
            h.log(f"--- {self.name} (seed {seed}): {self.cuts} power cuts, dir {wd.root}")
            self.configure(wd)
            writers = self.writers(wd, rng)
            c.defer(stop_writers, writers)
            for w in writers:
                w.start()
            time.sleep(0.2)
            tb.start()
            bitten = 0
            for k in range(self.cuts):
                # Some cuts right after a start (while tailbox opens and scans).
                if k > 0 and rng.random() < 0.15:
                    gap = rng.uniform(0.02, 0.3)
                else:
                    gap = rng.uniform(*self.gap)
                end = time.monotonic() + gap
                while time.monotonic() < end:
                    tb.assert_alive(f"running before cut #{k + 1} (after a restart from a cut)")
                    time.sleep(min(0.05, max(0.0, end - time.monotonic())))
                journaled = pc.journaled_bytes()
                status = tb.kill9()
                if status != -9:
                    h.fail(f"cut #{k + 1}: tailbox had already exited with status {status}")
                summaries = pc.cut(rng)
                if any(s["latest"] < s["sectors"] or s["size"] != s["current_size"]
                       for s in summaries if not s["path"].endswith(".lock")):
                    bitten += 1
                down = rng.uniform(*self.down)
                h.log(f"cut #{k + 1} after {gap:.2f}s ({journaled} journal bytes); "
                      f"restart in {down:.2f}s\n" + "\n".join(powercut.describe(s)
                                                             for s in summaries))
                time.sleep(down)
                tb.start()
            time.sleep(rng.uniform(0.2, 1.0))
            for w in writers:
                w.stop_flag.set()
            for w in writers:
                w.join(timeout=30)
                if w.error:
                    h.fail(f"writer {w.name} failed: {w.error!r}")
            lines = sum(w.seq for w in writers)
            h.log(f"writers done: {lines} lines/events, "
                  f"{sum(w.rotations for w in writers)} rotations, "
                  f"{sum(w.specials for w in writers)} split by a pause; "
                  f"{bitten} of {self.cuts} cuts lost or tore writes; draining")
            h.wait_until(lambda: quiet(wd), self.drain_timeout, "the outbox to drain",
                         interval=0.3, tailbox=tb, progress=lambda: str(h.status_json(wd.config)))
            time.sleep(self.settle)   # timers (rotate_wait, partial/multiline flushes)
            h.wait_until(lambda: quiet(wd), 30, "the outbox to drain after the last flushes",
                         interval=0.3, tailbox=tb, progress=lambda: str(h.status_json(wd.config)))
            h.stop_clean(tb)
            delivered = self.read(wd)
            h.log(self.check(wd, delivered) + f" [{self.name}, {time.monotonic() - t0:.0f}s]")
            left = h.outbox_count(wd.outbox)
            if left:
                h.fail(f"{left} rows left in the outbox after draining ({h.outbox_states(wd.outbox)})")

def stop_writers(writers):
    for w in writers:
        w.stop_flag.set()
    for w in writers:
        if w.is_alive():
            w.join(timeout=30)


def check_exact_lines(wd, delivered):
    expected = h.expected_from_files(final_paths(wd))
    return h.check_exact(expected, normalize_paths(wd, delivered), HOST)


def read_inbox(wd):
    return h.read_inbox(wd.inbox)


def read_ndjson(wd):
    recs, problems = h.read_ndjson(wd.ndjson)
    if problems:
        h.fail("the file sink's NDJSON output has malformed lines:\n  - "
               + "\n  - ".join(problems[:10]))
    return recs


def run_scenarios(scenarios, name):
    """Runs every scenario (TAILBOX_CASE: one) with seeds derived from the run's
    seed; collects the failures so that every scenario runs."""
    seed = h.seed_from_env()
    only = os.environ.get("TAILBOX_CASE")
    failures = []
    for i, sc in enumerate(scenarios):
        if only and only != sc.name:
            continue
        try:
            sc.run(seed + i, seed)
        except h.TestFailure as e:
            failures.append(f"[{sc.name}, seed {seed + i}] {e}")
            h.log(f"{sc.name}: FAILED")
    if failures:
        h.fail(f"(run seed {seed}: TAILBOX_SEED={seed}, one scenario with TAILBOX_CASE=<name>)\n"
               + "\n".join(failures))
