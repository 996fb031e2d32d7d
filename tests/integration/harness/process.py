"""The tailbox process and its CLI: start, stop, kill -9, `tailbox status`, the stop summary."""

import json
import os
import signal
import subprocess
import time

from .env import fail, tailbox_bin


class Tailbox:
    """One `tailbox run` at a time; stdout/stderr go (appended) to wd.tailbox_log.

    close() SIGKILLs a process still running: make it with Case.tailbox() (or call
    close() in a finally block).
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



def stop_clean(tb):
    """SIGTERM; fails unless tailbox exits 0."""
    rc = tb.stop()
    if rc != 0:
        fail(f"tailbox exited {rc} after SIGTERM")

