"""Writing source files: unique lines of varied shape, appended in bursts or torn writes."""

import collections
import os
import time


_WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
          "november oscar papa quebec romeo sierra tango uniform victor whiskey xray").split()


def make_line(rng, tag, seq, variety=True):
    """One unique line (bytes, with its terminator) for source `tag`, number `seq`.

    With `variety`, some lines are empty, end in CRLF, carry JSON-hostile characters,
    a stray CR, non-ASCII UTF-8 or bytes that are not UTF-8.
    """
    head = f"{tag} {seq:09d} "
    body = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 25)))
    if not variety:
        return (head + body + "\n").encode()
    r = rng.random()
    if r < 0.01:
        return b"\n"                                         # empty line
    if r < 0.015:
        return b"\r\n"                                       # empty CRLF line
    if r < 0.04:
        return (head + body + "\r\n").encode()               # CRLF
    if r < 0.045:
        return (head + body + "\r\r\n").encode()             # keeps one \r
    if r < 0.06:
        return (head + 'quote " backslash \\ tab \t ctrl \x01 del \x7f ' + body + "\n").encode()
    if r < 0.07:
        return (head + "caf\u00e9 \u65e5\u672c \U0001F600 " + body + "\n").encode("utf-8")
    if r < 0.075:
        return head.encode() + b"bad utf8 \xff\xfe\xc3( " + body.encode() + b"\n"
    if r < 0.08:
        return (head + "stray \r cr " + body + "\n").encode()
    return (head + body + "\n").encode()


class SourceFiles:
    """Appends to a set of log files with O_APPEND, optionally in torn writes."""

    def __init__(self, paths):
        self.paths = list(paths)
        self.fds = {}
        self.lines = collections.Counter()   # complete lines written per path

    def fd(self, path):
        if path not in self.fds:
            self.fds[path] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self.fds[path]

    def write(self, path, data, nlines, split_at=None, pause=0.0):
        fd = self.fd(path)
        if split_at is not None and 0 < split_at < len(data):
            _write_all(fd, data[:split_at])
            if pause:
                time.sleep(pause)
            _write_all(fd, data[split_at:])
        else:
            _write_all(fd, data)
        self.lines[path] += nlines

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]



class Writer:
    """Appends unique lines (make_line) to files of a work directory, in bursts."""

    def __init__(self, wd, rng, files=("a.log", "b.log", "c.log", "d.log"), line=None):
        self.wd, self.rng = wd, rng
        self.paths = [wd.log_path(n) for n in files]
        self.src = SourceFiles(self.paths)
        self.seq = 0
        self.line = line or make_line     # line(rng, tag, seq) -> bytes with its newline

    def burst(self, n, path=None, torn=False):
        path = path or self.rng.choice(self.paths)
        tag = os.path.basename(path)[0]
        data = b"".join(self.line(self.rng, tag, self.seq + i) for i in range(n))
        self.seq += n
        split = self.rng.randrange(1, len(data)) if torn and len(data) > 1 else None
        self.src.write(path, data, n, split_at=split, pause=0.02 if split else 0.0)

    def spread(self, n, bursts):
        for k in range(bursts):
            self.burst(n // bursts + (1 if k < n % bursts else 0), path=self.paths[k % len(self.paths)])

    def close(self):
        self.src.close()
