"""The test environment: failures, logging, the binary, seeds, work directories, waiting."""

import os
import random
import shutil
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
MAX_LINE_BYTES = 1 << 20   # tailbox's default [[source]] max_line_bytes


class TestFailure(Exception):
    """A check failed; the message says why."""


def fail(message):
    raise TestFailure(message)


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)



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

