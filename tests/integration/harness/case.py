"""Running a test and its cases.

    with h.case("name", seed) as c:      # a fresh work directory c.wd
        tb = c.tailbox()                 # killed when the case ends
        ns = c.add(NatsServer())         # anything with close() (or pass close=...)
        c.on_failure("nats-server log", ns.log_tail)
        ...

On the way out the case closes what it holds (last added first), then removes
its work directory if it passed (TAILBOX_KEEP=1 keeps it). On a failure it
prints the case name, the seed (with how to rerun just this case), the work
directory, the end of the tailbox log and whatever on_failure() registered.
"""

import contextlib
import os
import random
import signal
import sys
import time
import traceback

from .env import TestFailure, Workdir, log, tail_of_file
from .process import Tailbox


class Case:
    """The resources of one running case; see case()."""

    def __init__(self, name, seed, wd):
        self.name = name
        self.seed = seed
        self.wd = wd
        self.tb = None          # the first tailbox() made, for the common one-relay case
        # This case's own random stream: the same for a seed whether the case runs alone
        # (TAILBOX_CASE) or after others.
        self.rng = random.Random(f"{seed}/{name}")
        self._closers = []      # callables, run last first
        self._context = []      # (label, callable returning text) printed on failure

    def add(self, thing, close=None):
        """Registers `thing` to be closed (thing.close(), or close()) when the case ends."""
        self._closers.append(close or thing.close)
        return thing

    def defer(self, fn, *args, **kwargs):
        """Calls fn(*args, **kwargs) when the case ends (before what was added earlier)."""
        self._closers.append(lambda: fn(*args, **kwargs))

    def tailbox(self, **kwargs):
        """A Tailbox on this case's work directory (see process.Tailbox), closed at the end."""
        tb = self.add(Tailbox(self.wd, **kwargs))
        if self.tb is None:
            self.tb = tb
        return tb

    def on_failure(self, label, fn):
        """On failure, prints `label` and fn()'s text (e.g. a server's log tail)."""
        self._context.append((label, fn))

    def report(self, error):
        rerun = "" if self.seed is None else f"TAILBOX_SEED={self.seed} "
        log(f"case {self.name} FAILED (rerun: {rerun}TAILBOX_CASE={self.name}, which runs only "
            f"this case in a test of several): {type(error).__name__}: {error}")
        if self.wd is not None:
            log(f"last lines of {self.wd.tailbox_log}:\n{tail_of_file(self.wd.tailbox_log)}")
        for label, fn in self._context:
            try:
                text = fn()
            except Exception as e:   # the report must not hide the failure
                text = f"(cannot get it: {e})"
            log(f"{label}:\n{text}")

    def close(self):
        errors = []
        while self._closers:
            try:
                self._closers.pop()()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]


@contextlib.contextmanager
def case(name, seed=None, prefix=None, workdir=True):
    """Runs the body as the case `name` (see the module docstring); yields a Case.

    `prefix` names the work directory (default "tailbox-<name>-"); workdir=False
    makes none (c.wd is None) for cases that only use servers.
    """
    t0 = time.monotonic()
    log(f"--- {name} ---")
    c = Case(name, seed, Workdir(prefix or f"tailbox-{name}-") if workdir else None)
    passed = False
    try:
        yield c
        passed = True
    except SystemExit as e:
        passed = e.code in (0, 77)     # 77: the test skips itself (meson's SKIP)
        if not passed:
            c.report(e)
        raise
    except BaseException as e:
        c.report(e)
        raise
    finally:
        try:
            c.close()
        finally:
            if c.wd is not None:
                c.wd.cleanup(passed)
    log(f"{name} passed in {time.monotonic() - t0:.1f}s")


@contextlib.contextmanager
def case_workdir(prefix):
    """case() named after its work directory's prefix, yielding only the Workdir."""
    name = prefix.removeprefix("tailbox-").rstrip("-") or prefix
    with case(name, prefix=prefix) as c:
        yield c.wd


def selected(name):
    """False when TAILBOX_CASE names another case (run only that one)."""
    only = os.environ.get("TAILBOX_CASE")
    return not only or only == name


def run_cases(cases, seed, args, context=()):
    """Runs each (name, body) of `cases` that TAILBOX_CASE selects, as case(name, seed):
    body(*args(c)) with c the Case, e.g. args = lambda c: (server, c.wd, c.tailbox(), rng).
    `context`: (label, fn) pairs printed on a failure, as Case.on_failure()."""
    for name, body in cases:
        if not selected(name):
            continue
        with case(name, seed) as c:
            for label, fn in context:
                c.on_failure(label, fn)
            body(*args(c))


def main(test, name):
    """Runs test() -> None; prints PASS/FAIL and exits 0/1. SIGTERM (meson's
    timeout) becomes an exception so that cases close their processes."""
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
        traceback.print_exc()
        print(f"\nFAIL {name}: unexpected exception (test bug or environment)", flush=True)
        sys.exit(1)
    print(f"\nPASS {name} in {time.monotonic() - t0:.1f}s", flush=True)
    sys.exit(0)


def report_failure_context(wd, seed=None):
    """Prints what helps to debug a failure: seed, directory, tailbox log tail."""
    if seed is not None:
        log(f"seed = {seed}   (reproduce with TAILBOX_SEED={seed})")
    log(f"last lines of {wd.tailbox_log}:\n{tail_of_file(wd.tailbox_log)}")
