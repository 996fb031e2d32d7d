#!/usr/bin/env python3
"""A followed file that cannot be found or opened at start-up keeps its position.

Issue 10, hole 2: a checkpointed file that the first scan after a start cannot
open was released and, once it could be opened again, read from byte 0 under a
new uid: the whole file arrived twice. Each case stops tailbox after it read
everything, makes the files unreachable in one way, starts tailbox again, makes
them reachable after a few scans, appends more lines, and checks the sqlite
inbox line by line: every line exactly once, one uid per file.

Cases (real processes, real files):
  eacces  tailbox runs as user `nobody`; one file is chmod 000 at the restart.
  emfile  tailbox restarts with an open-files limit too low for its files; the
          limit is raised from outside (prlimit) after a few scans.
  mount   the log directory is a bind mount of a tmpfs, unmounted while tailbox
          is stopped (the directory is then empty, on another file system) and
          mounted again after the restart. Needs root (mount); skipped otherwise.

Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/startup_races_integration_test.py
"""

import os
import resource
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HOST = "edge1"
NOBODY = 65534


def as_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def chown_tree(root, uid):
    for d, dirs, files in os.walk(root):
        os.chown(d, uid, uid)
        for f in files:
            os.chown(os.path.join(d, f), uid, uid)


def write_lines(paths, tag, n):
    for p in paths:
        with open(p, "ab") as f:
            f.write(b"".join(b"%s %s line %05d\n" % (os.path.basename(p).encode(), tag, i)
                             for i in range(n)))


def run_case(name, files, unreachable, reachable, preexec=None, logs_dir=None):
    with h.case(name, None, prefix=f"tailbox-races-{name}-") as c:
        wd = c.wd
        if logs_dir:
            wd.logs = logs_dir(wd)
        h.write_config(wd, sink="sqlite", host_id=HOST,
                       source={"paths": [os.path.join(wd.logs, "*.log")]},
                       tail={"poll_interval": "200ms", "read_interval": "50ms",
                             "recheck_interval": "1s", "rotate_wait": "1s"})
        paths = [os.path.join(wd.logs, f"f{i:03d}.log") for i in range(files)]
        write_lines(paths, b"before", 50)
        if preexec is as_nobody:
            chown_tree(wd.root, NOBODY)
        tb = c.tailbox(preexec_fn=preexec)
        tb.start()
        h.wait_until(lambda: h.caught_up(wd, paths), 60, "everything read and delivered",
                     tailbox=tb)
        h.stop_clean(tb)

        unreachable(wd, paths)
        tb.start()
        time.sleep(3)   # several scans while the files cannot be reached
        tb.assert_alive("the files were unreachable")
        expected = {}
        removed = reachable(wd, paths, tb) or []
        if removed:
            expected.update(h.expected_from_files(removed))
            for p in removed:
                os.unlink(p)
        paths = [p for p in paths if p not in removed]
        write_lines(paths, b"after", 20)
        h.wait_until(lambda: h.caught_up(wd, paths), 60,
                     "everything read and delivered after the files came back", tailbox=tb)
        h.stop_clean(tb)
        expected.update(h.expected_from_files(paths))
        summary = h.check_exact(expected, h.read_inbox(wd.inbox),
                                host_id=HOST, label=f"inbox ({name})")
        h.log(summary)


def case_eacces():
    def unreachable(wd, paths):
        os.chmod(paths[1], 0)

    def reachable(wd, paths, tb):
        os.chmod(paths[1], 0o644)

    run_case("eacces", 3, unreachable, reachable, preexec=as_nobody)


def case_emfile():
    # tailbox needs about 20 descriptors before any log file (SQLite
    # connections, inotify, epoll, its log): 40 files cannot all be opened
    # under a limit of 35. The first run has no such limit; the restart has it
    # (tailbox raises its soft limit to the hard one, so both are set). After a
    # few scans, 30 files are deleted (their lines were all delivered before):
    # their readers finish and release them, and the descriptors freed let the
    # files that could not be opened be resumed at their offsets.
    limit = 35
    low = {"on": False}

    def preexec():
        if low["on"]:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    def unreachable(wd, paths):
        low["on"] = True

    def reachable(wd, paths, tb):
        with open(wd.tailbox_log, "rb") as f:
            if b"out of descriptors" not in f.read():
                h.fail(f"the test did not reach EMFILE with a limit of {limit}: lower it")
        return paths[:30]

    run_case("emfile", 40, unreachable, reachable, preexec=preexec)


def case_mount():
    if os.geteuid() != 0:
        h.log("SKIP mount case: needs root to mount")
        return
    state = {}

    def logs_dir(wd):
        store = os.path.join(wd.root, "store")
        os.makedirs(store)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", store], check=True)
        state["store"] = store
        subprocess.run(["mount", "--bind", store, wd.logs], check=True)
        state["logs"] = wd.logs
        return wd.logs

    def unreachable(wd, paths):
        subprocess.run(["umount", state.pop("logs")], check=True)

    def reachable(wd, paths, tb):
        subprocess.run(["mount", "--bind", state["store"], wd.logs], check=True)
        state["logs"] = wd.logs

    probe = subprocess.run(["sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d "
                            "&& umount $d; rc=$?; rmdir $d; exit $rc"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        h.log(f"SKIP mount case: cannot mount a tmpfs here ({probe.stderr.strip()})")
        return
    try:
        run_case("mount", 3, unreachable, reachable, logs_dir=logs_dir)
    finally:
        for key in ("logs", "store"):
            if key in state:
                subprocess.run(["umount", "-l", state[key]], capture_output=True)
        if "store" in state:
            shutil.rmtree(os.path.dirname(state["store"]), ignore_errors=True)


def case_emfile_followed():
    """Out of descriptors in steady state: the files already followed are read on.

    200 files under a limit of 64: about 40 can be followed. Lines appended to
    followed files must arrive although every scan fails to open the others
    (and even to list their directory); the log must not grow per scan.
    """
    with h.case("emfile_followed", None, prefix="tailbox-races-emfile-followed-") as c:
        wd = c.wd
        h.write_config(wd, sink="sqlite", host_id=HOST,
                       tail={"poll_interval": "200ms", "read_interval": "50ms",
                             "recheck_interval": "1s"})
        paths = [os.path.join(wd.logs, f"f{i:03d}.log") for i in range(200)]
        write_lines(paths, b"first", 1)
        tb = c.tailbox(preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)))
        tb.start()
        h.wait_until(lambda: h.inbox_count(wd.inbox) >= 30, 30, "the files that fit followed",
                     tailbox=tb)
        time.sleep(2)   # several scans that fail to open the rest
        conn = h.sqlite_connect(wd.outbox)
        try:
            followed = [p for (p,) in conn.execute("SELECT path FROM files WHERE state = 'active'")]
        finally:
            conn.close()
        if len(followed) >= 200:
            h.fail("the test did not run out of descriptors")
        write_lines(followed, b"later", 5)
        h.wait_until(lambda: h.caught_up(wd, followed), 30,
                     f"lines appended to the {len(followed)} followed files delivered", tailbox=tb)
        log_lines = sum(1 for _ in open(wd.tailbox_log, "rb"))
        time.sleep(3)
        grown = sum(1 for _ in open(wd.tailbox_log, "rb")) - log_lines
        if grown > 5:
            h.fail(f"the log grew by {grown} lines in 3 s of failing scans")
        h.stop_clean(tb)
        summary = h.check_exact(h.expected_from_files(followed), h.read_inbox(wd.inbox),
                                host_id=HOST, label="inbox (emfile, followed files)")
        h.log(summary)


def test():
    case_eacces()
    case_emfile()
    case_emfile_followed()
    case_mount()


if __name__ == "__main__":
    h.main(test, "startup_races_integration_test")
