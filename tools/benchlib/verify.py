"""tools/bench's exactly-once check: the generated workload kept compactly, and the
records read back from each destination (every source line once, its bytes, path, offset)."""

import json
import sqlite3


class Source:
    """The generated workload, kept compact for the line-by-line check: each file's
    bytes and the offsets its lines start at."""

    def __init__(self, paths):
        self.files = {}
        for path in paths:
            with open(path, "rb") as f:
                data = f.read()
            starts = [0]
            pos = data.find(b"\n")
            while pos != -1:
                starts.append(pos + 1)
                pos = data.find(b"\n", pos + 1)
            starts.pop()   # the offset after the last newline starts no line
            self.files[path] = (data, starts)

    def check(self, records, expected_lines):
        """records: iterable of (path, offset, line bytes). Every source line must
        come exactly once with its exact bytes; returns None or a description of
        the first problems found."""
        import bisect
        seen = {path: bytearray(len(starts)) for path, (_, starts) in self.files.items()}
        problems, count = [], 0
        for path, offset, line in records:
            count += 1
            if path not in self.files:
                problems.append(f"a record from an unknown path {path!r}")
            else:
                data, starts = self.files[path]
                i = bisect.bisect_left(starts, offset)
                if i == len(starts) or starts[i] != offset:
                    problems.append(f"{path}:{offset} is not the start of a line")
                else:
                    end = data.index(b"\n", offset)
                    if data[offset:end] != line:
                        problems.append(f"{path}:{offset}: the bytes differ from the source line")
                    elif seen[path][i]:
                        problems.append(f"{path}:{offset}: delivered twice")
                    else:
                        seen[path][i] = 1
            if len(problems) >= 5:
                break
        if not problems:
            for path, marks in seen.items():
                missing = marks.count(0)
                if missing:
                    problems.append(f"{path}: {missing} lines missing (first at offset "
                                    f"{self.files[path][1][marks.index(0)]})")
        if not problems and count != expected_lines:
            problems.append(f"{count} records, expected {expected_lines}")
        return "; ".join(problems) or None


def destination_records(args, sink, dest):
    """Yields (path, offset, line bytes) for every record at the destination."""
    import json
    if sink == "file":
        with open(dest, "rb") as f:
            for raw in f:
                r = json.loads(raw)
                if "message_base64" in r:
                    import base64
                    line = base64.b64decode(r["message_base64"])
                else:
                    line = r["message"].encode()
                yield r["path"], r["offset"], line
    elif sink == "sqlite":
        conn = sqlite3.connect(dest, timeout=30)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            for path, offset, line in conn.execute("SELECT path, offset, line FROM inbox"):
                yield path, offset, bytes(line) if not isinstance(line, str) else line.encode()
        finally:
            conn.close()
    elif sink == "postgres":
        out = args.pg.psql("SELECT path, file_offset, message FROM tailbox_logs", dest,
                           timeout=600, binary=True)
        if out.endswith(b"\n"):   # psql ends its output with a newline
            out = out[:-1]
        for row in out.split(b"\x1e"):
            if row:
                path, offset, line = row.split(b"\x1f")
                yield path.decode(), int(offset), line
    else:
        raise ValueError(sink)
