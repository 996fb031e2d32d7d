#!/usr/bin/env python3
"""Model-based chaos test of tailing: real files, a real tailbox, and a simple
model of which lines must arrive.

A seeded random sequence of actions is applied to the log files of one source
(glob logs/app.log*, exclude "*.copy") while tailbox runs into the sqlite inbox,
and while it is stopped between restarts:

  write       complete lines appended to app.log (some CRLF)
  partial     one line written in two write() calls with a pause between them
              (sometimes with a kill -9 and a restart in the pause)
  late        lines appended to app.log.1 (an application still writing to the
              file it had open when it was rotated)
  rotate      rename rotation: app.log.2 -> .3, .1 -> .2, app.log -> app.log.1,
              a new app.log (the oldest, app.log.3, is deleted first)
  copytrunc   copytruncate: app.log copied to app.log-N.copy (excluded), a few
              lines written "between the copy and the truncation", app.log
              truncated to 0
  truncate    "> app.log"
  delete      a rotated file deleted
  recreate    app.log deleted and created again (its inode may be reused when
              tailbox does not hold the old one open)
  restart     SIGTERM or kill -9; while stopped, more actions; then start again
  pause       nothing for a moment

The model keeps every line written, with its file generation (one inode's
content between truncations) and its offset there. A line is "must" (exactly
once at the end) unless an action made its loss legitimate, when it becomes
"maybe" (at most once):
  - lines of a file truncated (copytruncate, "> file") that tailbox had not
    read yet: those not yet in the inbox when tailbox runs, or past the file's
    checkpoint in the outbox when tailbox is stopped; the copytruncate window
    lines are always "maybe";
  - lines of a file deleted while tailbox is stopped, past its checkpoint;
  - lines of a file deleted while tailbox ran and that it had not finished
    reading (open descriptor) when it was stopped.
A deletion while tailbox runs happens only once tailbox follows the file (the
open descriptor keeps its content); a truncation while tailbox runs mostly
waits until tailbox has caught up with the file (so that only the window is
lost), sometimes not (the race must still never duplicate a line).

At the end tailbox drains and stops; the inbox must hold every "must" line
exactly once, every "maybe" line at most once, each with its exact bytes and
its offset in its file generation, and nothing else.

With TAILBOX_CLOSE_INACTIVE (e.g. "300ms", the chaos_tail_model_close_inactive
variant) [tail] close_inactive is that short, so files are closed and reopened
throughout. A file tailbox has closed holds nothing open: deleted while
running, what it got after its close is lost (docs/guarantee.md). The
model checks that after the deletion: if tailbox no longer holds the file open,
the lines past the file's committed offset in the outbox become "maybe"; all
others stay "must".

Seeds: TAILBOX_SEED runs one seed; otherwise TAILBOX_MODEL_SEEDS (default 5)
seeds from a random base, each printed. Even seeds run with inotify, odd seeds
with [tail] inotify = false (polling).
Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/tail_model_chaos_test.py
"""

import collections
import os
import random
import shutil
import signal
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HOST = "model1"
ACTIONS = 80
MAX_ROTATED = 3
CLOSE_INACTIVE = os.environ.get("TAILBOX_CLOSE_INACTIVE", "").strip()
FINGERPRINT_BYTES = 1024   # [tail] fingerprint_bytes (default)
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima "
         "mike november oscar papa quebec romeo sierra tango").split()


def fnv1a64(data):
    h64 = 0xcbf29ce484222325
    for b in data:
        h64 ^= b
        h64 = (h64 * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h64


class Gen:
    """One file generation: an inode's content from creation (or truncation) on."""

    def __init__(self, path, number):
        self.number = number
        self.path = path                 # current name; None once deleted
        self.names = {path}
        st = os.stat(path)
        self.dev, self.inode = st.st_dev, st.st_ino
        self.data = bytearray()
        self.lines = []                  # line ids, in file order
        self.open_fd_holds = False       # deleted while tailbox followed it
        self.ended = False               # truncated away or deleted and settled

    def __repr__(self):
        return f"gen{self.number}({os.path.basename(self.path or '-')}, ino {self.inode})"


class Line:
    __slots__ = ("id", "gen", "offset", "raw", "text", "must", "why")

    def __init__(self, lid, gen, offset, raw):
        self.id, self.gen, self.offset, self.raw = lid, gen, offset, raw
        self.text = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        self.must = True
        self.why = ""

    @property
    def end(self):
        return self.offset + len(self.raw)


class Model:
    def __init__(self, wd, tb, rng, seed):
        self.wd, self.tb, self.rng, self.seed = wd, tb, rng, seed
        self.lines = {}                  # id -> Line
        self.next_id = 0
        self.gens = []
        self.copies = 0
        self.running = False
        self.started_at = 0.0
        self.counts = collections.Counter()
        self.current = self.new_gen(self.path("app.log"), create=True)

    # ---- files ----

    def path(self, name):
        return self.wd.log_path(name)

    def new_gen(self, path, create=False):
        if create:
            with open(path, "wb"):
                pass
        g = Gen(path, len(self.gens))
        if create and any(o.inode == g.inode and o.dev == g.dev for o in self.gens):
            self.counts["inode reused"] += 1   # a deleted file's inode, for another file
        self.gens.append(g)
        return g

    def at(self, name):
        p = self.path(name)
        for g in self.gens:
            if g.path == p:
                return g
        return None

    def make_line(self):
        lid = self.next_id
        self.next_id += 1
        body = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(1, 20)))
        end = b"\r\n" if self.rng.random() < 0.1 else b"\n"
        return lid, f"L{lid:08d} {body}".encode() + end

    def append(self, gen, n, why_maybe=""):
        data = bytearray()
        for _ in range(n):
            lid, raw = self.make_line()
            line = Line(lid, gen, len(gen.data) + len(data), raw)
            if why_maybe:
                line.must, line.why = False, why_maybe
            self.lines[lid] = line
            gen.lines.append(lid)
            data += raw
        with open(gen.path, "ab") as f:
            f.write(data)
        gen.data += data

    # ---- what tailbox has ----

    def delivered_ids(self):
        ids = collections.Counter()
        if not os.path.exists(self.wd.inbox):
            return ids
        try:
            for rec in h.read_inbox(self.wd.inbox):
                if rec.line and rec.line[:1] == b"L":
                    try:
                        ids[int(rec.line[1:9])] += 1
                    except ValueError:
                        pass
        except sqlite3.OperationalError:   # not created yet
            pass
        return ids

    def tracked_row(self, gen):
        """(read_offset, state) of the outbox row of `gen`, or None if never tracked."""
        if not os.path.exists(self.wd.outbox):
            return None
        conn = sqlite3.connect(f"file:{self.wd.outbox}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute(
                "SELECT fingerprint, fingerprint_len, read_offset, state FROM files "
                "WHERE dev = ? AND inode = ? ORDER BY id DESC", (gen.dev, gen.inode)).fetchall()
        except sqlite3.OperationalError:
            return None
        finally:
            conn.close()
        # Several generations can share an inode (truncation, inode reuse): the
        # row is the one whose fingerprint covers most of this generation's
        # first bytes (an empty file's fingerprint matches any content).
        best = None
        for fp, fp_len, offset, state in rows:
            if fp_len <= len(gen.data) and f"{fnv1a64(gen.data[:fp_len]):016x}" == fp:
                if best is None or fp_len > best[0]:
                    best = (fp_len, offset, state)
        return None if best is None else best[1:]

    def read_so_far(self, gen):
        """Bytes of `gen` tailbox has read (its checkpoint, whether the row is active
        or released); REQUIRES tailbox stopped."""
        row = self.tracked_row(gen)
        return 0 if row is None else row[0]

    def holds_open(self, gen):
        """Whether the running tailbox has `gen`'s inode open (then a deletion
        cannot take its content away). An active row in the outbox is not enough:
        right after a start it may be the previous run's."""
        pid = self.tb.pid
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return False
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if st.st_ino == gen.inode and st.st_dev == gen.dev:
                return True
        return False

    def lose_unread(self, gen, why):
        """`gen` loses what tailbox has not read: those lines become maybe."""
        if self.running:
            have = self.delivered_ids()
            unread = [lid for lid in gen.lines if not have[lid]]
        else:
            done = self.read_so_far(gen)
            unread = [lid for lid in gen.lines if self.lines[lid].end > done]
        for lid in unread:
            line = self.lines[lid]
            if line.must:
                line.must, line.why = False, why
        self.counts["maybe:" + why] += len(unread)

    def wait_caught_up(self, gen, timeout=15):
        want = [lid for lid in gen.lines if self.lines[lid].must]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            have = self.delivered_ids()
            if all(have[lid] for lid in want):
                return True
            self.tb.assert_alive("waiting for a file to be delivered")
            time.sleep(0.05)
        return False

    def wait_tracked(self, gen, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.holds_open(gen):
                return
            if CLOSE_INACTIVE:
                # Closed by close_inactive: its row says where it stands.
                row = self.tracked_row(gen)
                if row is not None and row[1] == "active":
                    return
            self.tb.assert_alive(f"waiting for tailbox to follow {gen}")
            time.sleep(0.03)
        h.fail(f"tailbox did not start following {gen} within {timeout} s")

    # ---- actions ----

    def act_write(self):
        self.append(self.current, self.rng.randint(1, 30))

    def act_partial(self):
        lid, raw = self.make_line()
        gen = self.current
        cut = self.rng.randrange(1, len(raw))
        line = Line(lid, gen, len(gen.data), raw)
        with open(gen.path, "ab") as f:
            f.write(raw[:cut])
        gen.data += raw[:cut]
        if self.running and self.rng.random() < 0.25:
            self.restart(signal.SIGKILL, actions_while_stopped=False)
        else:
            time.sleep(self.rng.uniform(0.05, 0.4))
        with open(gen.path, "ab") as f:
            f.write(raw[cut:])
        gen.data += raw[cut:]
        self.lines[lid] = line
        gen.lines.append(lid)

    def act_late(self):
        g = self.at("app.log.1")
        if g is not None:
            self.append(g, self.rng.randint(1, 5))

    def delete(self, gen):
        if self.running:
            # The open descriptor keeps its content once tailbox follows it.
            self.wait_tracked(gen)
            os.unlink(gen.path)
            if CLOSE_INACTIVE and not self.holds_open(gen):
                # Closed by close_inactive (or read to its end and released):
                # nothing keeps it. Only what is past its committed offset
                # may be lost: what was written after its close.
                row = self.tracked_row(gen)
                done = 0 if row is None else row[0]
                lost = [lid for lid in gen.lines if self.lines[lid].end > done]
                for lid in lost:
                    line = self.lines[lid]
                    if line.must:
                        line.must, line.why = False, "deleted while closed"
                self.counts["maybe:deleted while closed"] += len(lost)
                gen.ended = True
            else:
                gen.open_fd_holds = True
        else:
            self.lose_unread(gen, "deleted while stopped")
            os.unlink(gen.path)
            gen.ended = True
        gen.path = None

    def act_rotate(self):
        oldest = self.at(f"app.log.{MAX_ROTATED}")
        if oldest is not None:
            self.delete(oldest)
        for k in range(MAX_ROTATED - 1, 0, -1):
            g = self.at(f"app.log.{k}")
            if g is not None:
                os.rename(g.path, self.path(f"app.log.{k + 1}"))
                g.path = self.path(f"app.log.{k + 1}")
                g.names.add(g.path)
        g = self.current
        os.rename(g.path, self.path("app.log.1"))
        g.path = self.path("app.log.1")
        g.names.add(g.path)
        self.current = self.new_gen(self.path("app.log"), create=True)
        if self.rng.random() < 0.5:
            self.append(self.current, self.rng.randint(1, 10))

    def truncate(self, copy):
        gen = self.current
        if self.running and self.rng.random() < 0.7:
            self.wait_caught_up(gen)
        if copy:
            self.copies += 1
            shutil.copyfile(gen.path, self.path(f"app.log-{self.copies}.copy"))
            # Written after the copy, before the truncation: copytruncate's own window.
            self.append(gen, self.rng.randint(0, 3), why_maybe="copytruncate window")
        self.lose_unread(gen, "copytruncate" if copy else "truncate")
        with open(gen.path, "r+b") as f:
            f.truncate(0)
        gen.ended = True
        path = gen.path
        gen.path = None
        self.current = self.new_gen(path)   # same inode, new content
        if self.rng.random() < 0.7:
            self.append(self.current, self.rng.randint(1, 10))

    def act_copytrunc(self):
        self.truncate(copy=True)

    def act_truncate(self):
        self.truncate(copy=False)

    def act_delete(self):
        rotated = [g for g in self.gens if g.path and g is not self.current]
        if rotated:
            self.delete(self.rng.choice(rotated))

    def act_recreate(self):
        path = self.current.path
        self.delete(self.current)
        self.current = self.new_gen(path, create=True)
        if self.rng.random() < 0.7:
            self.append(self.current, self.rng.randint(1, 10))

    def act_pause(self):
        time.sleep(self.rng.uniform(0.0, 0.3))

    def act_restart(self):
        self.restart(signal.SIGKILL if self.rng.random() < 0.5 else signal.SIGTERM,
                     actions_while_stopped=True)

    def stop(self, sig):
        if sig == signal.SIGKILL:
            status = self.tb.kill9()
            if status != -9:
                h.fail(f"tailbox had exited by itself (status {status}) before kill -9")
        else:
            rc = self.tb.stop(sig)
            if rc == -signal.SIGTERM and time.monotonic() - self.started_at < 2.0:
                # SIGTERM before tailbox installed its handler, right after exec:
                # the default action, as good as a kill -9 for the model.
                self.counts["term before handlers"] += 1
            elif rc != 0:
                h.fail(f"tailbox exited {rc} after SIGTERM, expected 0")
        self.running = False
        # Files deleted while tailbox held them open: what it had not read is gone.
        for g in self.gens:
            if g.open_fd_holds and not g.ended:
                self.lose_unread(g, "deleted, unfinished at stop")
                g.ended = True

    def start(self):
        self.tb.start()
        self.started_at = time.monotonic()
        self.running = True

    def restart(self, sig, actions_while_stopped):
        self.stop(sig)
        self.counts["restart:" + ("kill9" if sig == signal.SIGKILL else "term")] += 1
        if actions_while_stopped:
            for _ in range(self.rng.randint(0, 3)):
                self.step(stopped=True)
        time.sleep(self.rng.uniform(0.0, 0.5))
        self.start()

    def step(self, stopped=False):
        table = [
            (30, self.act_write), (8, self.act_partial), (5, self.act_late), (10, self.act_rotate),
            (6, self.act_copytrunc), (4, self.act_truncate), (6, self.act_delete),
            (6, self.act_recreate), (5, self.act_pause),
        ]
        if not stopped:
            table.append((8, self.act_restart))
        total = sum(w for w, _ in table)
        pick = self.rng.uniform(0, total)
        for w, fn in table:
            pick -= w
            if pick <= 0:
                break
        self.counts[fn.__name__[4:] + (" (stopped)" if stopped else "")] += 1
        fn()

    # ---- the end ----

    def check(self, delivered):
        problems = []
        seen = collections.Counter()
        for rec in delivered:
            line_bytes = rec.line or b""
            lid = None
            if line_bytes[:1] == b"L":
                try:
                    lid = int(line_bytes[1:9])
                except ValueError:
                    lid = None
            line = self.lines.get(lid)
            if line is None:
                problems.append(f"a record that is no line written: {rec.path}@{rec.offset} "
                                f"{line_bytes[:60]!r}")
                continue
            seen[lid] += 1
            if line_bytes != line.text:
                problems.append(f"line {lid} arrived with other bytes: {line_bytes[:60]!r}, "
                                f"expected {line.text[:60]!r}")
            if rec.offset != line.offset:
                problems.append(f"line {lid} arrived with offset {rec.offset}, it is at "
                                f"{line.offset} of {line.gen}")
            if rec.path not in line.gen.names:
                problems.append(f"line {lid} arrived with path {rec.path}, its file was "
                                f"{sorted(line.gen.names)}")
        must = [l for l in self.lines.values() if l.must]
        missing = [l for l in must if seen[l.id] == 0]
        dups = [(lid, n) for lid, n in seen.items() if n > 1]
        if missing:
            problems.append(f"{len(missing)} lines missing, e.g. "
                            + "; ".join(f"{l.id} ({l.gen}@{l.offset})" for l in missing[:8]))
        if dups:
            problems.append(f"{len(dups)} lines delivered more than once, e.g. "
                            + "; ".join(f"{lid} x{n} ({self.lines[lid].gen}, "
                                        f"{self.lines[lid].why or 'must'})" for lid, n in dups[:8]))
        maybe = [l for l in self.lines.values() if not l.must]
        arrived_maybe = sum(1 for l in maybe if seen[l.id])
        summary = (f"{len(self.lines)} lines written in {len(self.gens)} file generations: "
                   f"{len(must)} must arrive (all did once), {len(maybe)} may be lost "
                   f"({arrived_maybe} arrived once, none twice)")
        return problems, summary


def run_seed(seed):
    with h.case("tail_model", seed, prefix="tailbox-model-") as c:
        rng = random.Random(seed)
        inotify = seed % 2 == 0
        wd = c.wd
        tb = c.tailbox()
        h.log(f"--- seed {seed} ({'inotify' if inotify else 'polling'}"
              f"{', close_inactive ' + CLOSE_INACTIVE if CLOSE_INACTIVE else ''}), dir {wd.root}")
        tail = {"rotate_wait": "1s", "inotify": inotify}
        if CLOSE_INACTIVE:
            tail["close_inactive"] = CLOSE_INACTIVE
        h.write_config(wd, host_id=HOST,
                       source={"paths": [wd.log_path("app.log*")], "exclude": ["*.copy"]},
                       tail=tail,
                       delivery={"workers": 2, "linger": "10ms"})
        model = Model(wd, tb, rng, seed)
        model.append(model.current, 20)
        model.start()
        t0 = time.monotonic()
        for _ in range(ACTIONS):
            tb.assert_alive("applying actions")
            model.step()
            # Mostly give tailbox a moment (sometimes none: actions in a burst).
            if rng.random() < 0.8:
                time.sleep(rng.uniform(0.0, 0.25))
        if not model.running:
            model.start()
        h.log(f"actions done in {time.monotonic() - t0:.1f}s: "
              + ", ".join(f"{k} {v}" for k, v in sorted(model.counts.items())))

        must = [l.id for l in model.lines.values() if l.must]

        def missing():
            have = model.delivered_ids()
            gone = [model.lines[lid] for lid in must if not have[lid]]
            return (f"{len(must) - len(gone)} there; missing e.g. "
                    + "; ".join(f"line {l.id} at {l.offset} of {l.gen} (names "
                                f"{sorted(os.path.basename(n) for n in l.gen.names)})"
                                for l in gone[:6]))
        h.wait_until(lambda: all(model.delivered_ids()[lid] for lid in must), 60,
                     f"{len(must)} must-lines in the inbox", interval=0.3, tailbox=tb,
                     progress=missing)

        def quiet():
            s = h.status_json(wd.config)
            return s["pending_rows"] == 0 and all(f["size"] in (-1, f["read_offset"])
                                                  for f in s["files"])
        h.wait_until(quiet, 30, "every file read and the outbox empty", interval=0.2, tailbox=tb,
                     progress=lambda: str(h.status_json(wd.config)))
        time.sleep(1.5)   # rotate_wait: late duplicates, if any, would show now
        rc = tb.stop()
        if rc != 0:
            h.fail(f"tailbox exited {rc} after SIGTERM, expected 0")
        problems, summary = model.check(h.read_inbox(wd.inbox))
        if problems:
            h.fail(f"seed {seed}: the inbox does not match the model:\n  - "
                   + "\n  - ".join(problems[:20]))
        h.log(f"seed {seed}: {summary}")


def test():
    text = os.environ.get("TAILBOX_SEED", "").strip()
    if text:
        seeds = [int(text)]
    else:
        n = int(os.environ.get("TAILBOX_MODEL_SEEDS", "5"))
        base = random.SystemRandom().randrange(1, 2**31 - 1000)
        seeds = [base + i for i in range(n)]
        h.log(f"seeds {seeds[0]}..{seeds[-1]} (rerun one with TAILBOX_SEED=...)")
    for seed in seeds:
        try:
            run_seed(seed)
        except h.TestFailure as e:
            h.fail(f"(seed {seed}, reproduce with TAILBOX_SEED={seed}) {e}")


if __name__ == "__main__":
    h.main(test, "tail_model_chaos_test")
