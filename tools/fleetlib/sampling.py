"""tools/fleet's CPU accounting from /proc: each process (with its reaped children),
the relays, the destinations' servers and the whole machine, sampled over a run."""

import os
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------
# CPU accounting from /proc
# ---------------------------------------------------------------------------

def proc_ticks(pid, children_too=False):
    """utime+stime (+ cutime+cstime) of pid in clock ticks, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])
    if children_too:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def machine_ticks():
    """(busy, total) clock ticks of all CPUs since boot."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    total = sum(vals[:8])
    return total - idle, total


class CpuSampler(threading.Thread):
    def __init__(self, dests, relays):
        super().__init__(daemon=True)
        self.dests, self.relays = dests, relays
        self.stop_event = threading.Event()
        self.relay_cpu = {}
        self.dest_start = {d.name: d.cpu_ticks() for d in dests}
        self.machine_start = machine_ticks()
        self.t0 = time.monotonic()

    def sample(self):
        for r in self.relays:
            pid = r.pid()
            if pid is not None:
                t = proc_ticks(pid)
                if t is not None:
                    self.relay_cpu[(r.name, pid)] = t
        self.dest_now = {d.name: d.cpu_ticks() for d in self.dests}

    def run(self):
        while not self.stop_event.wait(0.5):
            self.sample()

    def finish(self):
        self.stop_event.set()
        self.join()
        self.sample()
        wall = time.monotonic() - self.t0
        busy0, total0 = self.machine_start
        busy1, total1 = machine_ticks()
        ncpu = os.cpu_count() or 1
        res = {"wall": wall, "ncpu": ncpu,
               "machine_busy_share": (busy1 - busy0) / max(1, total1 - total0),
               "relays_s": sum(self.relay_cpu.values()) / CLK_TCK}
        for d in self.dests:
            res[d.name + "_s"] = (self.dest_now[d.name] - self.dest_start[d.name]) / CLK_TCK
        return res
