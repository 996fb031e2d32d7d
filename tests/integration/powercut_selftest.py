#!/usr/bin/env python3
"""Self-test of the power-cut simulator (the shim and powercut.py), without tailbox.

1. Model check on a plain file: a child process under the shim does random
   pwrite/write/ftruncate calls with an fsync now and then, saves a copy of the
   file after every call (outside the tracked directory), and kills itself
   with SIGKILL. The rollback must give: with "drop", exactly the content at
   the last fsync; with "keep", the current content; with "torn", a file
   whose every sector is one of that sector's versions since the last fsync
   and whose size is one of the sizes since then.
2. SQLite agrees with the model: a child commits rows one transaction at a
   time into a WAL database (synchronous = FULL, checkpoints included) and
   kills itself. After any cut the database must pass integrity_check and
   hold every committed row (FULL promises that); with synchronous = NORMAL
   it must pass integrity_check and hold a prefix of the rows.
   This shows that the shim catches SQLite's writes and syncs (pwrite64,
   fdatasync) and that the model is not harsher than a real disk.

Seeded (TAILBOX_SEED); POWERCUT_SHIM names the shim (default build/tests/powercut_shim.so).
"""

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import powercut  # noqa: E402

SECTOR = powercut.SECTOR

FILE_CHILD = r"""
import os, random, sys, signal
root, snaps, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
path = os.path.join(root, "data.bin")
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
def snap(tag):
    with open(path, "rb") as f:
        data = f.read()
    with open(os.path.join(snaps, tag), "wb") as f:
        f.write(data)
n = 0
snap("synced")
for step in range(rng.randint(20, 120)):
    size = os.fstat(fd).st_size
    r = rng.random()
    if r < 0.5:
        off = rng.randint(0, size + 3000)
        os.pwrite(fd, os.urandom(rng.randint(1, 5000)), off)
    elif r < 0.7:
        os.lseek(fd, rng.randint(0, size), 0)
        os.write(fd, os.urandom(rng.randint(1, 3000)))
    elif r < 0.8:
        os.ftruncate(fd, rng.randint(0, size + 2000))
    elif r < 0.9:
        os.fsync(fd)
        for name in os.listdir(snaps):
            os.unlink(os.path.join(snaps, name))
        n = 0
        snap("synced")
        continue
    else:
        os.fdatasync(fd)
        for name in os.listdir(snaps):
            os.unlink(os.path.join(snaps, name))
        n = 0
        snap("synced")
        continue
    n += 1
    snap(f"v{n:05d}")
os.kill(os.getpid(), signal.SIGKILL)
"""

SQLITE_CHILD = r"""
import os, sqlite3, sys, signal, random
root, sync, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
c = sqlite3.connect(os.path.join(root, "t.db"), isolation_level=None)
c.execute("PRAGMA journal_mode = WAL")
c.execute(f"PRAGMA synchronous = {sync}")
c.execute("PRAGMA wal_autocheckpoint = 50")
c.execute("PRAGMA journal_size_limit = 65536")
c.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
start = c.execute("SELECT count(*) FROM t").fetchone()[0]
for i in range(start, start + n):
    c.execute("BEGIN")
    c.execute("INSERT INTO t VALUES (?, ?)", (i, os.urandom(rng.randint(10, 3000))))
    if i % 7 == 0 and i >= 5:
        c.execute("DELETE FROM t WHERE id = ?", (i - 5,))
        c.execute("INSERT INTO t VALUES (?, ?)", (i - 5, b"again"))
    c.execute("COMMIT")
print(start + n, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def versions_ok(root, snaps, seed):
    names = sorted(os.listdir(snaps))
    states = [open(os.path.join(snaps, "synced"), "rb").read()] + \
             [open(os.path.join(snaps, n), "rb").read() for n in names if n != "synced"]
    return states


def check_file_model(seed, rounds):
    for k in range(rounds):
        rng = random.Random(seed * 1000 + k)
        base = tempfile.mkdtemp(prefix="tailbox-pc-self-", dir="/tmp")
        try:
            root, snaps, jdir = (os.path.join(base, x) for x in ("root", "snaps", "journal"))
            for d in (root, snaps, jdir):
                os.mkdir(d)
            env = dict(os.environ, **powercut.shim_env(root, jdir))
            r = subprocess.run([sys.executable, "-c", FILE_CHILD, root, snaps, str(seed * 1000 + k)],
                               env=env)
            if r.returncode != -signal.SIGKILL:
                h.fail(f"file child exited {r.returncode}")
            states = versions_ok(root, snaps, seed)
            path = os.path.join(root, "data.bin")
            parsed = [powercut.read_journal(os.path.join(jdir, n)) for n in os.listdir(jdir)]
            if len(parsed) != 1:
                h.fail(f"expected one journal, found {len(parsed)}")
            _, _, jpath, records = parsed[0]
            if os.path.realpath(jpath) != os.path.realpath(path):
                h.fail(f"journal names {jpath}, expected {path}")
            if len(records) != len(states) - 1:
                h.fail(f"{len(records)} journal records for {len(states) - 1} unsynced calls")
            current = open(path, "rb").read()
            if current != states[-1]:
                h.fail("test bug: the last snapshot differs from the file")
            for flavour in ("drop", "keep", "torn", "torn", "torn"):
                with open(path, "wb") as f:
                    f.write(current)
                powercut.cut_file(path, records, rng, flavour)
                got = open(path, "rb").read()
                if flavour == "drop" and got != states[0]:
                    h.fail(f"round {k}: 'drop' did not give the synced content "
                           f"({len(got)} vs {len(states[0])} bytes)")
                if flavour == "keep" and got != current:
                    h.fail(f"round {k}: 'keep' changed the file")
                if flavour == "torn":
                    sizes = {len(s) for s in states}
                    if len(got) not in sizes:
                        h.fail(f"round {k}: size {len(got)} is none of the sizes {sorted(sizes)}")
                    for s in range((len(got) + SECTOR - 1) // SECTOR):
                        piece = got[s * SECTOR:(s + 1) * SECTOR]
                        options = {(st[s * SECTOR:(s + 1) * SECTOR] + bytes(SECTOR))[:len(piece)]
                                   for st in states}
                        if piece not in options:
                            h.fail(f"round {k}: sector {s} holds none of its versions")
        finally:
            shutil.rmtree(base, ignore_errors=True)
    h.log(f"file model: {rounds} rounds of random writes/truncations/fsyncs: drop = synced, "
          f"keep = current, torn = per-sector versions")


def check_sqlite(seed, sync, rounds):
    rng = random.Random(seed)
    lost_max = 0
    for k in range(rounds):
        base = tempfile.mkdtemp(prefix="tailbox-pc-sqlite-", dir="/tmp")
        try:
            root, jdir = os.path.join(base, "root"), os.path.join(base, "journal")
            os.mkdir(root)
            os.mkdir(jdir)
            env = dict(os.environ, **powercut.shim_env(root, jdir))
            committed = 0
            for cut in range(4):
                r = subprocess.run([sys.executable, "-c", SQLITE_CHILD, root, sync,
                                    str(rng.randint(20, 400)), str(rng.randrange(1 << 30))],
                                   env=env, capture_output=True, text=True)
                if r.returncode != -signal.SIGKILL:
                    h.fail(f"sqlite child exited {r.returncode}: {r.stderr}")
                committed = int(r.stdout.strip())
                if not os.listdir(jdir):
                    h.fail("no journal written: the shim did not see SQLite's writes")
                powercut.rollback(jdir, root, rng)
                conn = sqlite3.connect(os.path.join(root, "t.db"))
                try:
                    ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
                    has_t = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'"
                                         ).fetchone()[0]
                    # NORMAL may lose every commit, CREATE TABLE included
                    ids = [r[0] for r in conn.execute("SELECT id FROM t ORDER BY id")] if has_t else []
                finally:
                    conn.close()
                if ok != "ok":
                    h.fail(f"{sync} round {k} cut {cut}: integrity_check says {ok}")
                if ids != list(range(len(ids))):
                    h.fail(f"{sync} round {k} cut {cut}: rows are not a prefix")
                if sync == "FULL" and len(ids) != committed:
                    h.fail(f"FULL round {k} cut {cut}: {committed} rows committed, "
                           f"{len(ids)} after the cut")
                lost_max = max(lost_max, committed - len(ids))
        finally:
            shutil.rmtree(base, ignore_errors=True)
    h.log(f"sqlite {sync}: {rounds} x 4 cuts, integrity ok, rows a prefix"
          + (", none lost" if sync == "FULL" else f", at most {lost_max} commits lost"))
    if sync == "NORMAL" and lost_max == 0:
        h.fail("synchronous = NORMAL never lost a commit: the cuts did not bite")


def test():
    seed = h.seed_from_env()
    check_file_model(seed, 25)
    check_sqlite(seed, "FULL", 5)
    check_sqlite(seed + 1, "NORMAL", 5)


if __name__ == "__main__":
    h.main(test, "powercut_selftest")
