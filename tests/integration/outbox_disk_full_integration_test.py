#!/usr/bin/env python3
"""A full outbox disk recovers by itself: real binary, real 2 MiB tmpfs (root).

1. 100k lines (~10 MB) through an outbox on a 2 MiB tmpfs into the sqlite inbox.
   Reading must stop with headroom ([outbox] min_free_bytes) so that delivered
   rows can always be deleted; the WAL must not eat the disk. The inbox must
   end up with every line exactly once, without an endless "cannot delete"
   loop in the log.
2. With the destination locked, more lines are read into the outbox; another
   file then takes every free byte of the disk and the destination is
   released: the delivered rows must still be deleted (the reserve file is
   given back), with no endless "cannot delete" loop, also after a kill -9 and a
   restart on the full disk. The other file is
   deleted and tailbox must recover by itself (reserve made again, reading
   resumes): every line exactly once, nothing left in the outbox.

Exits 77 (meson: skipped) when not root or when a tmpfs cannot be mounted.

Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/outbox_disk_full_integration_test.py
"""

import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

LINES = 100_000
MORE = 20_000


def fill(path):
    """Writes zeros to `path` until the file system is full; returns the bytes written."""
    written = 0
    block = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                n = f.write(block)
            except OSError:
                break
            if not n:
                break
            written += n
        for size in (4096, 512, 1):   # the last pages too
            while True:
                try:
                    if not f.write(b"\0" * size):
                        break
                    written += size
                except OSError:
                    break
    return written




def free_bytes(path):
    v = os.statvfs(path)
    return v.f_bavail * v.f_frsize


def count_in_log(wd, text):
    with open(wd.tailbox_log, "rb") as f:
        return f.read().decode("utf-8", "replace").count(text)


def test():
    if os.geteuid() != 0:
        print("SKIP: needs root to mount a 2 MiB tmpfs for the outbox", flush=True)
        sys.exit(77)
    with h.case("outbox_disk_full", None, prefix="tailbox-diskfull-") as c:
        wd = c.wd
        mnt = os.path.join(wd.root, "small")
        os.mkdir(mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt], capture_output=True,
                           text=True)
        if r.returncode != 0:
            print(f"SKIP: mount -t tmpfs failed here: {r.stderr.strip()}", flush=True)
            sys.exit(77)
        c.defer(subprocess.run, ["umount", "-l", mnt], capture_output=True)
        tb = c.tailbox()
        wd.outbox = os.path.join(mnt, "outbox.db")
        h.write_config(wd, outbox={"path": wd.outbox, "min_free_bytes": 512 * 1024,
                                   "reserve_bytes": 256 * 1024},
                       tail={"read_chunk_bytes": 16384},
                       delivery={"backoff_min": "50ms", "backoff_max": "500ms"})
        rng = random.Random(10)
        path = wd.log_path("big.log")
        src = h.SourceFiles([path])
        data = b"".join(h.make_line(rng, "d", i, variety=False) for i in range(LINES))
        src.write(path, data, LINES)
        h.log(f"{LINES} lines, {len(data)} bytes, outbox on a 2 MiB tmpfs")
        t0 = time.monotonic()
        tb.start()
        h.wait_until(lambda: h.inbox_count(wd.inbox) >= LINES, 240,
                     f"all {LINES} lines through a 2 MiB outbox disk", tailbox=tb, interval=0.5,
                     progress=lambda: f"inbox {h.inbox_count(wd.inbox)}, free "
                                      f"{free_bytes(mnt)} bytes, 'cannot delete' logged "
                                      f"{count_in_log(wd, 'cannot delete')} times")
        h.log(f"phase 1: {LINES} lines delivered in {time.monotonic() - t0:.1f}s; "
              f"'cannot delete' logged {count_in_log(wd, 'cannot delete')} times")
        h.check_exact(h.expected_from_files([path]), h.read_inbox(wd.inbox), label="inbox, phase 1")
        h.wait_until(lambda: h.outbox_count(wd.outbox) == 0, 30, "the outbox to drain", tailbox=tb)

        # Phase 2: rows wait in the outbox behind a locked destination, then
        # another file takes every free byte and the destination is released.
        # Phase 3: the same, with tailbox killed (-9) and restarted on the full disk.
        filler = os.path.join(mnt, "filler")
        seq = LINES
        # Whether a delete meets the full disk in phase 2 depends on how much of
        # the WAL file is left to reuse when the filler takes the last byte (the
        # checkpoint thread may just have copied it back): up to 3 tries.
        plan = [(2, False, attempt) for attempt in (1, 2, 3)] + [(3, True, 1)]
        reached = False
        for phase, restart, attempt in plan:
            if not restart and reached:
                continue
            deleted_before = count_in_log(wd, "cannot delete")
            gave_before = count_in_log(wd, "gave back the")
            lock = c.add(h.InboxLock(wd.inbox, mark=False))
            more = b"".join(h.make_line(rng, "e", seq + i, variety=False) for i in range(MORE))
            seq += MORE
            src.write(path, more, MORE)
            h.wait_until(lambda: h.outbox_count(wd.outbox) >= 2000, 30,
                         "rows waiting in the outbox", tailbox=tb)
            # Empty the WAL file first (as tailbox does when space is short), so
            # that the deletes need new space on the disk the filler takes.
            conn = h.sqlite_connect(wd.outbox, timeout=2.0)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                conn.close()
            filled = fill(filler)
            h.log(f"phase {phase}: {h.outbox_count(wd.outbox)} rows wait; filled the outbox disk "
                  f"with {filled} bytes ({free_bytes(mnt)} free)")
            if restart:
                tb.kill9()
                tb.start()
                time.sleep(2)
                tb.assert_alive("restarted on a full disk")
                h.log(f"phase {phase}: killed (-9) and restarted on the full disk")
            lock.release()
            lock = None
            h.wait_until(lambda: h.outbox_count(wd.outbox) == 0, 60,
                         "the waiting rows to be delivered and deleted on a full disk", tailbox=tb,
                         progress=lambda: f"outbox {h.outbox_count(wd.outbox)}, 'cannot delete' "
                                          f"{count_in_log(wd, 'cannot delete') - deleted_before}")
            gave = count_in_log(wd, "gave back the") - gave_before
            # (After a restart, opening the outbox truncates the WAL, which may
            # leave room enough for the deletes without the reserve.)
            if not restart:
                if gave > 0:
                    reached = True
                elif attempt < 3:
                    h.log(f"phase 2, try {attempt}: the deletes found room in the WAL file "
                          f"(no delete met the full disk); again")
                else:
                    h.fail("test did not reach its point: no delete met the full disk (3 tries)")
            n1 = count_in_log(wd, "cannot delete")
            time.sleep(3)
            if count_in_log(wd, "cannot delete") != n1:
                h.fail("'cannot delete' is still being logged with an empty outbox")
            tb.assert_alive("the disk was full")
            h.log(f"phase {phase}: delivered rows deleted on the full disk (reserve given back "
                  f"{gave} times; 'cannot delete' logged {n1 - deleted_before} times)")
            os.remove(filler)
            h.log(f"filler deleted ({free_bytes(mnt)} bytes free); waiting for tailbox to recover")
            h.wait_until(lambda: h.inbox_count(wd.inbox) >= seq, 120,
                         f"all {seq} lines after space returned", tailbox=tb, interval=0.5,
                         progress=lambda: f"inbox {h.inbox_count(wd.inbox)}, free {free_bytes(mnt)}")
            h.wait_until(lambda: h.outbox_count(wd.outbox) == 0, 30, "the outbox to drain",
                         tailbox=tb)
            h.wait_until(lambda: os.path.exists(wd.outbox + ".reserve"), 10,
                         "the reserve file to be made again", tailbox=tb)
            h.log(f"phase {phase}: recovered by itself; reserve file made again")
        rc = tb.stop()
        if rc != 0:
            h.fail(f"tailbox exited {rc}")
        h.check_exact(h.expected_from_files([path]), h.read_inbox(wd.inbox), label="inbox, end")
        src.close()


if __name__ == "__main__":
    h.main(test, "outbox_disk_full_integration_test")
