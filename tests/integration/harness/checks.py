"""What a destination holds, as Recs, and the exactness check against the source files."""

import base64
import collections
import json
import os

from .env import MAX_LINE_BYTES, fail
from .outbox import sqlite_connect


Rec = collections.namedtuple("Rec", "key path offset line host source")

def _text(v):
    # The text columns should hold TEXT; a BLOB is decoded here so that the
    # exactness check still runs (inbox_type_problems() reports the type).
    if isinstance(v, (bytes, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    return v


def read_inbox(path):
    """Every inbox row as Rec; `line` is bytes (a TEXT value is flagged as corrupt)."""
    conn = sqlite_connect(path)
    try:
        rows = conn.execute("SELECT key, path, offset, line, host, source FROM inbox").fetchall()
    finally:
        conn.close()
    out = []
    for key, p, off, line, host, src in rows:
        if isinstance(line, str):
            line = ("TEXT:" + line).encode("utf-8")   # stored with the wrong type: flag it
        elif line is not None:
            line = bytes(line)
        out.append(Rec(_text(key), _text(p), off, line, _text(host), _text(src)))
    return out


INBOX_TYPES = {"key": {"text"}, "host": {"text"}, "source": {"text"}, "path": {"text"},
               "offset": {"integer"}, "ingest_time": {"integer"}, "line": {"blob"},
               "fields": {"text", "null"}, "delivered": {"integer"}}


def inbox_type_problems(path):
    """Columns of the inbox whose values have another SQLite type than the schema's.

    E.g. a key stored as BLOB never equals the TEXT 'edge1/...' a consumer looks
    up, and a later TEXT copy of the same key would not collide with it.
    """
    problems = []
    conn = sqlite_connect(path)
    try:
        for col, allowed in INBOX_TYPES.items():
            rows = conn.execute(f"SELECT typeof({col}), count(*), min(rowid_hint) FROM "
                                f"(SELECT {col}, key AS rowid_hint FROM inbox) GROUP BY 1"
                                ).fetchall()
            for typ, n, example in rows:
                if typ not in allowed:
                    problems.append(f"inbox.{col}: {n} values are {typ.upper()}, expected "
                                    f"{'/'.join(sorted(a.upper() for a in allowed))} "
                                    f"(e.g. key {_text(example)!r})")
    finally:
        conn.close()
    return problems


def rec_from_ndjson(raw):
    """The Rec of one NDJSON record (bytes): its key, path, offset, line (message or
    message_base64), host and source. Raises ValueError, KeyError, TypeError or
    UnicodeDecodeError on anything else."""
    obj = json.loads(raw.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    if "message_base64" in obj:
        line = base64.b64decode(obj["message_base64"], validate=True)
    else:
        line = obj["message"].encode("utf-8")
    return Rec(obj["_id"], obj["path"], int(obj["offset"]), line, obj.get("host"), obj.get("source"))


def read_ndjson(path):
    """(records, problems): one Rec per NDJSON line; problems lists unparsable lines."""
    records, problems = [], []
    if not os.path.exists(path):
        return records, problems
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        problems.append(f"{path} does not end with a newline (torn last record: "
                        f"{data[-80:]!r})")
    for n, raw in enumerate(data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")):
        try:
            records.append(rec_from_ndjson(raw))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            problems.append(f"NDJSON line {n + 1} is not a valid record ({e}): {raw[:120]!r}")
    return records, problems


class NewlineCounter:
    """Counts the newlines of a growing file incrementally (cheap progress for NDJSON).

    If the file shrinks (the file sink cuts an unconfirmed tail at start), it
    counts again from the start.
    """

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.count = 0

    def poll(self):
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return self.count
        if size < self.pos:
            self.pos, self.count = 0, 0
        if size > self.pos:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                while self.pos < size:
                    block = f.read(min(8 << 20, size - self.pos))
                    if not block:
                        break
                    self.count += block.count(b"\n")
                    self.pos += len(block)
        return self.count



def expected_from_files(paths, max_line=MAX_LINE_BYTES):
    """{(path, offset): line bytes} for every complete line of `paths`.

    Mirrors tailbox's splitter: a line ends at "\\n"; a "\\r" just before it is
    dropped; a line longer than max_line is cut into max_line pieces. A last
    line without "\\n" is not a record yet (partial_line_timeout = 0).
    """
    expected = {}
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        pos = 0
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                break
            text_end = nl
            if text_end > pos and data[text_end - 1] == 0x0D:
                text_end -= 1
            while text_end - pos > max_line:
                expected[(p, pos)] = data[pos:pos + max_line]
                pos += max_line
            expected[(p, pos)] = data[pos:text_end]
            pos = nl + 1
    return expected


def _short(b, n=60):
    if b is None:
        return "None"
    return repr(b[:n]) + (f"...({len(b)} bytes)" if len(b) > n else "")


def check_exact(expected, delivered, host_id="edge1", label="destination", examples=5):
    """Fails unless `delivered` (Recs) holds every expected line exactly once.

    Reports missing lines, duplicates (same key, or same (path, offset) under any
    key), extra records, corrupted lines, malformed keys, and files whose records
    carry more than one uid. Returns a one-line summary when all is well.
    """
    problems = []
    key_count = collections.Counter(r.key for r in delivered)
    by_po = collections.defaultdict(list)
    for r in delivered:
        by_po[(r.path, r.offset)].append(r)

    dup_keys = [(k, c) for k, c in key_count.items() if c > 1]
    if dup_keys:
        problems.append(f"{len(dup_keys)} keys delivered more than once "
                        f"({sum(c - 1 for _, c in dup_keys)} extra copies), e.g. "
                        + ", ".join(f"{k} x{c}" for k, c in dup_keys[:examples]))
    dup_po = [(po, rs) for po, rs in by_po.items() if len(rs) > 1]
    dup_po_other_keys = [(po, rs) for po, rs in dup_po if len({r.key for r in rs}) > 1]
    if dup_po_other_keys:
        problems.append(f"{len(dup_po_other_keys)} (path, offset) pairs delivered under more "
                        f"than one key (a uid changed: dedup cannot absorb it), e.g. "
                        + "; ".join(f"{po[0]}@{po[1]}: " + ", ".join(sorted({r.key for r in rs}))
                                    for po, rs in dup_po_other_keys[:examples]))

    missing = sorted(po for po in expected if po not in by_po)
    if missing:
        per_file = collections.Counter(p for p, _ in missing)
        problems.append(f"{len(missing)} lines missing ("
                        + ", ".join(f"{os.path.basename(p)}: {n}" for p, n in sorted(per_file.items()))
                        + "), e.g. "
                        + "; ".join(f"{os.path.basename(p)}@{o} {_short(expected[(p, o)])}"
                                    for p, o in missing[:examples]))
    extra = sorted(po for po in by_po if po not in expected)
    if extra:
        problems.append(f"{len(extra)} records at a (path, offset) where no line starts, e.g. "
                        + "; ".join(f"{p}@{o} {_short(by_po[(p, o)][0].line)}"
                                    for p, o in extra[:examples]))
    corrupted = sorted(po for po, rs in by_po.items()
                       if po in expected and any(r.line != expected[po] for r in rs))
    if corrupted:
        problems.append(f"{len(corrupted)} lines delivered with other bytes than the file's, e.g. "
                        + "; ".join(f"{os.path.basename(p)}@{o}: expected "
                                    f"{_short(expected[(p, o)])}, got "
                                    f"{_short(next(r.line for r in by_po[(p, o)] if r.line != expected[(p, o)]))}"
                                    for p, o in corrupted[:examples]))

    bad_keys, uids = [], collections.defaultdict(set)
    for r in delivered:
        parts = r.key.split("/") if isinstance(r.key, str) else []
        if (len(parts) != 3 or parts[0] != host_id or not parts[1]
                or parts[2] != str(r.offset)):
            bad_keys.append(r)
        else:
            uids[r.path].add(parts[1])
        if r.host is not None and r.host != host_id:
            bad_keys.append(r)
    if bad_keys:
        problems.append(f"{len(bad_keys)} records whose key is not \"{host_id}/<uid>/<offset>\" "
                        f"(or whose host differs), e.g. "
                        + ", ".join(f"{r.key!r} (path {r.path}, offset {r.offset}, host {r.host})"
                                    for r in bad_keys[:examples]))
    multi = {p: u for p, u in uids.items() if len(u) > 1}
    if multi:
        problems.append("files whose records carry more than one uid: "
                        + "; ".join(f"{p}: {sorted(u)}" for p, u in list(multi.items())[:examples]))

    if len(delivered) != len(expected):
        problems.append(f"{label} holds {len(delivered)} records, expected {len(expected)}")

    if problems:
        fail(f"{label} is not exactly-once:\n  - " + "\n  - ".join(problems))
    return f"{label}: {len(delivered)} records, every line exactly once"
