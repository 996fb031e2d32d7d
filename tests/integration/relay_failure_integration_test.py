#!/usr/bin/env python3
"""tailbox under a tight address-space limit (RLIMIT_AS, like `ulimit -v`): real
binary, real files.

The limit is set just above what an idle relay maps (measured first without a
limit), so tailbox starts and delivers but cannot get a new thread's stack.
SIGTERM then needs a thread (the shutdown timer): the old code aborted there
(std::system_error escaping a handler: exit 134, "terminate called"). Now every
I/O thread catches what a handler throws and the relay stops in order: it must
exit 0 or 1 (never by a signal) within seconds, with every line delivered
exactly once.

The other half of the issue (a delivery worker that throws stops the whole
relay) is covered by the unit test "a worker that throws (bad_alloc) reports a
failure..." and, at process level, by fresh_outbox_integration_test (an outbox
deleted while running stops the relay with exit 1 through the same path).

Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/relay_failure_integration_test.py
"""

import os
import random
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class LimitedTailbox(h.Tailbox):
    """h.Tailbox whose process runs with RLIMIT_AS = limit bytes."""

    def __init__(self, wd, limit):
        super().__init__(wd)
        self.limit = limit

    def start(self):
        if self.running():
            h.fail("test bug: tailbox started twice")
        self.starts += 1
        if self.logf is None:
            self.logf = open(self.wd.tailbox_log, "ab", buffering=0)
        self.logf.write(f"===== start #{self.starts} (RLIMIT_AS {self.limit >> 20} MiB) at "
                        f"{time.time():.3f} =====\n".encode())
        limit = self.limit

        def set_limit():
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        self.proc = subprocess.Popen([self.binary, "run", "-c", self.config],
                                     stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=set_limit)
        return self.proc


def vm_size(pid):
    return h.proc_status_kib(pid, "VmSize") * 1024


def test():
    with h.case("relay_failure", None, prefix="tailbox-rlimit-") as c:
        wd = c.wd
        tb = c.tailbox()
        h.write_config(wd)
        w = h.Writer(wd, random.Random(17), files=("a.log", "b.log"))
        w.spread(2000, 4)
        tb.start()
        h.wait_until(lambda: h.caught_up(wd, w.paths), 60, "2000 lines delivered", tailbox=tb)
        time.sleep(1)
        idle = vm_size(tb.pid)
        h.stop_clean(tb)
        tb.close()
        h.log(f"idle relay maps {idle >> 20} MiB")

        limited = None
        for extra in range(3, 60, 4):
            limited = c.add(LimitedTailbox(wd, idle + (extra << 20)))
            limited.start()
            w.spread(1000, 2)
            try:
                h.wait_until(lambda: h.caught_up(wd, w.paths), 20, "lines delivered under the limit",
                             tailbox=limited)
                break
            except h.TestFailure as e:
                h.log(f"RLIMIT_AS {limited.limit >> 20} MiB: {e}; trying more")
                limited.close()
                limited = None
        if limited is None:
            h.fail("tailbox did not run under any limit tried")
        h.log(f"running and delivering under RLIMIT_AS = {limited.limit >> 20} MiB")
        w.spread(1000, 2)
        h.wait_until(lambda: h.caught_up(wd, w.paths), 30, "more lines under the limit",
                     tailbox=limited)
        t0 = time.monotonic()
        rc = limited.stop(timeout=30)
        took = time.monotonic() - t0
        log_text = open(wd.tailbox_log, errors="replace").read()
        if rc < 0 or rc == 134 or "terminate called" in log_text:
            h.fail(f"tailbox died on SIGTERM under RLIMIT_AS (exit {rc}); log:\n{log_text[-1200:]}")
        if rc not in (0, 1):
            h.fail(f"unexpected exit code {rc}")
        if "cannot start the shutdown timer" not in log_text:
            h.fail("test did not reach its point: the shutdown timer's thread could still be "
                   f"made under RLIMIT_AS = {limited.limit >> 20} MiB")
        h.log(f"SIGTERM under the limit (no thread for the shutdown timer): orderly stop in "
              f"{took:.1f}s, exit {rc}")
        limited.close()
        tb = c.tailbox()
        w.spread(500, 1)   # something to read, so the stop below finds it running
        tb.start()
        h.wait_until(lambda: h.caught_up(wd, w.paths), 60, "a normal restart to catch up", tailbox=tb)
        h.stop_clean(tb)
        h.check_exact(h.expected_from_files(w.paths), h.read_inbox(wd.inbox),
                      label="inbox after runs under RLIMIT_AS")
        w.close()


if __name__ == "__main__":
    h.main(test, "relay_failure_integration_test")
