#!/usr/bin/env python3
"""The power-cut simulator's second half: rolls files back to what a power cut
could have left of them (Python 3, stdlib only).

tests/powercut/powercut_shim.c (LD_PRELOAD into tailbox) keeps, per inode of a
file under POWERCUT_DIR, an undo journal of every write and truncation since
the file's last successful fsync/fdatasync. A cut is `kill -9` of tailbox and
then rollback() here, before tailbox starts again.

What a cut models (for each journaled file):
  - the page cache is lost; what was fsynced stays exactly as it was (the disk
    does not lie about fsync);
  - every write since the last fsync may or may not have reached the disk, in
    any order, at 512-byte-sector granularity: each touched sector ends up as
    any one of its versions since the last fsync (the synced one, one in
    between, or the latest): writes are "dropped or torn". A sector is never
    half old, half new (the disk writes sectors atomically; this is also
    SQLite's powersafe-overwrite assumption);
  - the file's size is any size it had since the last fsync (the synced one,
    the current one, or one in between); bytes beyond the size a sector's
    chosen version had read as zeros (an extent whose data never arrived);
  - per file and cut one of three flavours is drawn: "keep" (every sector
    latest: like a plain kill -9), "drop" (every sector and the size as
    synced: the strictest rollback) or "torn" (each sector drawn on its own);
  - the `-shm` files (SQLite's wal-index, shared memory) are deleted, as a
    reboot would lose them.
What it does not model:
  - directory operations (create, rename, unlink) are assumed durable at once;
  - the source log files are assumed durable (only tailbox's own files are cut:
    the outbox, its WAL, the sqlite inbox and its WAL, the file sink's output);
  - servers (PostgreSQL, NATS) are other machines: they are not cut;
  - a disk that acknowledges fsync without storing the data, bit rot, and
    misdirected writes are out of scope;
  - open(O_TRUNC) is not journaled (tailbox does not use it on these files).

Usage as a tool (after killing a process that ran with the shim):
    python3 tests/integration/powercut.py --journal J --root DIR --seed 42
"""

import argparse
import collections
import os
import random
import shutil
import struct
import sys

SECTOR = 512
HEADER = struct.Struct("<4sQQI")
RECORD = struct.Struct("<cQQQQ")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

Record = collections.namedtuple("Record", "kind offset old_size length old")


def shim_path():
    """The built shim: POWERCUT_SHIM, or build/tests/powercut_shim.so."""
    path = os.environ.get("POWERCUT_SHIM") or os.path.join(REPO_ROOT, "build", "tests",
                                                           "powercut_shim.so")
    return os.path.abspath(path)


def shim_env(root, journal):
    """Environment for a process whose writes under `root` are journaled in `journal`."""
    path = shim_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"powercut shim not built: {path} (set POWERCUT_SHIM)")
    return {"LD_PRELOAD": path, "POWERCUT_DIR": root, "POWERCUT_JOURNAL": journal}


def read_journal(path):
    """(dev, ino, path at open, [Record]); a record torn by the kill is left out
    (its write had not started: the shim journals before it writes)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < HEADER.size:
        return None
    magic, dev, ino, plen = HEADER.unpack_from(data, 0)
    if magic != b"PCJ1" or len(data) < HEADER.size + plen:
        return None
    file_path = data[HEADER.size:HEADER.size + plen].decode("utf-8", "surrogateescape")
    pos = HEADER.size + plen
    records = []
    while pos + RECORD.size <= len(data):
        kind, offset, old_size, length, old_len = RECORD.unpack_from(data, pos)
        end = pos + RECORD.size + old_len
        if end > len(data):
            break
        records.append(Record(kind, offset, old_size, length, bytes(data[pos + RECORD.size:end])))
        pos = end
    return dev, ino, file_path, records


def _find_inode(root, dev, ino, hint, skip):
    try:
        st = os.stat(hint)
        if st.st_dev == dev and st.st_ino == ino:
            return hint
    except OSError:
        pass
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) != skip]
        for name in filenames:
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if st.st_dev == dev and st.st_ino == ino:
                return p
    return None


def _sectors(a, b):
    """Sector numbers touched by the byte range [a, b)."""
    return range(a // SECTOR, (b + SECTOR - 1) // SECTOR) if b > a else range(0)


def _touched(rec):
    if rec.kind == b"W":
        return _sectors(rec.offset, rec.offset + rec.length)
    lo, hi = sorted((rec.length, rec.old_size))
    return _sectors(lo, hi)


def _resize(buf, size):
    if len(buf) > size:
        del buf[size:]
    elif len(buf) < size:
        buf.extend(bytes(size - len(buf)))


def _undo(buf, rec):
    """buf: the state after rec -> the state before it."""
    if rec.kind == b"W":
        end = rec.offset + len(rec.old)
        if end > len(buf):
            _resize(buf, end)
        buf[rec.offset:end] = rec.old
    else:
        if rec.length < rec.old_size and rec.old:
            _resize(buf, rec.length)
            buf.extend(rec.old)
    _resize(buf, rec.old_size)


def _sector_of(buf, s):
    chunk = bytes(buf[s * SECTOR:(s + 1) * SECTOR])
    return chunk + bytes(SECTOR - len(chunk)) if len(chunk) < SECTOR else chunk


def cut_file(path, records, rng, flavour=None):
    """Rolls `path` back as a power cut could have left it; returns a summary dict."""
    with open(path, "rb") as f:
        current = bytearray(f.read())
    n = len(records)
    if n == 0:
        return {"path": path, "records": 0, "flavour": "synced", "sectors": 0, "latest": 0,
                "synced": 0, "between": 0, "synced_size": len(current),
                "current_size": len(current), "size": len(current)}
    flavour = flavour or rng.choices(("keep", "drop", "torn"), weights=(1, 1, 3))[0]
    # Which records touched each sector, in order.
    history = collections.defaultdict(list)
    for i, rec in enumerate(records, start=1):
        for s in _touched(rec):
            history[s].append(i)
    sizes = [records[0].old_size] + [r.length if r.kind == b"T" else
                                     max(r.old_size, r.offset + r.length) for r in records]
    # Choose, per sector, which version it keeps: the state after record t
    # (t = 0: the synced state, t = n: the latest).
    target = {}
    for s, hist in history.items():
        if flavour == "keep":
            target[s] = n
        elif flavour == "drop":
            target[s] = 0
        else:
            r = rng.random()
            if r < 0.35:
                target[s] = 0
            elif r < 0.7 or len(hist) == 1:
                target[s] = n
            else:
                target[s] = rng.choice(hist[:-1])
    if flavour == "keep":
        size = len(current)
    elif flavour == "drop":
        size = sizes[0]
    else:
        r = rng.random()
        size = sizes[0] if r < 0.35 else len(current) if r < 0.7 else rng.choice(sizes)
    by_target = collections.defaultdict(list)
    for s, t in target.items():
        by_target[t].append(s)
    chosen = {}
    buf = current
    for s in by_target.get(n, ()):
        chosen[s] = _sector_of(buf, s)
    for i in range(n, 0, -1):
        _undo(buf, records[i - 1])
        for s in by_target.get(i - 1, ()):
            chosen[s] = _sector_of(buf, s)
    synced_size = len(buf)
    out = buf   # the synced state
    _resize(out, max(size, len(out)))
    for s, data in chosen.items():
        a = s * SECTOR
        if a < len(out):
            out[a:a + SECTOR] = data[:max(0, len(out) - a)]
    _resize(out, size)
    with open(path, "r+b") as f:
        f.write(out)
        f.truncate(size)
    kept = sum(1 for t in target.values() if t == n)
    reverted = sum(1 for t in target.values() if t == 0)
    return {"path": path, "records": n, "flavour": flavour, "sectors": len(target),
            "latest": kept, "synced": reverted, "between": len(target) - kept - reverted,
            "synced_size": synced_size, "current_size": sizes[-1], "size": size}


def rollback(journal_dir, root, rng, log=None):
    """Applies a power cut to every journaled file under `root`, deletes the
    journals and every `*-shm` file under root. Returns the per-file summaries."""
    summaries = []
    skip = os.path.abspath(journal_dir)
    for name in sorted(os.listdir(journal_dir)):
        jpath = os.path.join(journal_dir, name)
        parsed = read_journal(jpath)
        os.unlink(jpath)
        if parsed is None:
            continue
        dev, ino, hint, records = parsed
        if not records:
            continue
        path = _find_inode(root, dev, ino, hint, skip)
        if path is None:   # deleted since: directory operations are durable
            continue
        summaries.append(cut_file(path, records, rng))
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) != skip]
        for name in filenames:
            if name.endswith("-shm"):
                os.unlink(os.path.join(dirpath, name))
    if log:
        for s in summaries:
            log(describe(s))
    return summaries


def describe(s):
    return (f"  cut {os.path.basename(s['path'])}: {s['flavour']}, {s['records']} unsynced writes, "
            f"{s['sectors']} sectors -> {s['latest']} latest / {s['between']} between / "
            f"{s['synced']} synced; size {s['current_size']} -> {s['size']} "
            f"(synced {s['synced_size']})")


class PowerCut:
    """The journal directory and environment of one tailbox work directory."""

    def __init__(self, root, journal=None):
        self.root = os.path.realpath(root)
        self.journal = journal or os.path.join(self.root, "powercut-journal")
        os.makedirs(self.journal, exist_ok=True)

    def env(self):
        return shim_env(self.root, self.journal)

    def journaled_bytes(self):
        return sum(os.path.getsize(os.path.join(self.journal, n)) for n in os.listdir(self.journal))

    def cut(self, rng, log=None):
        """Call after the process was killed."""
        return rollback(self.journal, self.root, rng, log)

    def clear(self):
        shutil.rmtree(self.journal, ignore_errors=True)
        os.makedirs(self.journal, exist_ok=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--journal", required=True, help="POWERCUT_JOURNAL of the killed process")
    ap.add_argument("--root", required=True, help="POWERCUT_DIR of the killed process")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    ap.add_argument("--show", action="store_true", help="only list the journals")
    args = ap.parse_args()
    if args.show:
        for name in sorted(os.listdir(args.journal)):
            parsed = read_journal(os.path.join(args.journal, name))
            if parsed:
                dev, ino, path, records = parsed
                print(f"{name}: {path} (dev {dev}, inode {ino}): {len(records)} records, "
                      f"{sum(len(r.old) for r in records)} old bytes")
        return 0
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    print(f"seed = {seed}")
    rollback(args.journal, os.path.realpath(args.root), random.Random(seed), log=print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
