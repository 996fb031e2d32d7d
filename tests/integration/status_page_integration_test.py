#!/usr/bin/env python3
"""The status page at / and its data at /status.json, rendered by a real headless
Chromium against a real relay on loopback, checked against the outbox read with
sqlite3.

Run 1 (max_attempts = 1) ships lines, then holds the sqlite inbox's write lock so
that the next lines are dead-lettered. Run 2 (no attempt limit) ships more, then
holds the lock again: new lines stay pending and the sink is retrying. One log
file is named `<img src=x onerror=alert(1)>.log`; it must be rendered as text.

Checks: the numbers Chromium rendered (pending rows, oldest pending age, dead
rows by error, each file's read offset and size, delivered total, sink state and
last error) against the outbox and `tailbox status --json`; the chart drew the
rates; no element came from the hostile name; /status.json's shared fields equal
`tailbox status --json`; POST, PUT and DELETE are refused (405); the page is
self-contained (no external resource, a CSP that allows none).

Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/status_page_integration_test.py
"""

import html.parser
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HOSTILE = "<img src=x onerror=alert(1)>.log"


def request(url, method="GET", timeout=5):
    """(status, headers, body text); status 0 when nothing answers."""
    req = urllib.request.Request(url, method=method, data=b"x" if method in ("POST", "PUT") else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}, ""


def status_page_json(base):
    code, _, body = request(base + "/status.json")
    return json.loads(body) if code == 200 else None


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    h.fail("chromium not found (tools/install-deps installs Debian's chromium)")


def dump_dom(url, workdir):
    """The DOM after the page's scripts ran (virtual time: the fetch completes)."""
    profile = tempfile.mkdtemp(prefix="chromium-", dir=workdir)
    cmd = [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}",
           "--virtual-time-budget=5000", "--dump-dom", url]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        h.fail("chromium --dump-dom did not finish within 90 s")
    if r.returncode != 0 or "<html" not in r.stdout:
        h.fail(f"chromium --dump-dom exited {r.returncode}: {r.stderr[-2000:]}")
    return r.stdout


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.children = []   # Nodes and strings

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def walk(self):
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.walk()

    def classes(self):
        return (self.attrs.get("class") or "").split()


class Dom(html.parser.HTMLParser):
    """A small DOM of the serialized page (stdlib only)."""
    VOID = {"meta", "link", "br", "img", "input", "hr", "area", "base", "col", "embed",
            "source", "track", "wbr"}

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.cur = self.root
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in self.VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)

    def by_id(self, ident):
        for n in self.root.walk():
            if n.attrs.get("id") == ident:
                return n
        h.fail(f"the rendered page has no element #{ident}")

    def rows(self, table_id, row_class):
        out = []
        for tr in self.by_id(table_id).walk():
            if tr.tag == "tr" and row_class in tr.classes():
                out.append({c: td.text() for td in tr.walk() if td.tag == "td" for c in td.classes()})
        return out


def number(text):
    """'1,234' -> 1234."""
    try:
        return int(text.replace(",", "").strip())
    except ValueError:
        h.fail(f"rendered {text!r} where a number was expected")


def seconds(text):
    """'12.3 s', '4 min 5 s', '2 h 1 min' -> seconds."""
    words, total = text.split(), 0.0
    unit = {"s": 1, "min": 60, "h": 3600, "d": 86400}
    for value, u in zip(words[::2], words[1::2]):
        total += float(value) * unit[u]
    return total


def outbox_truth(wd):
    conn = h.sqlite_connect(wd.outbox)
    try:
        states = dict(conn.execute("SELECT state, count(*) FROM outbox GROUP BY state"))
        dead = dict(conn.execute("SELECT last_error, count(*) FROM outbox WHERE state = 'dead' "
                                 "GROUP BY last_error"))
        files = dict(conn.execute("SELECT path, read_offset FROM files WHERE state != 'released'"))
    finally:
        conn.close()
    return states.get("pending", 0), states.get("dead", 0), dead, files


def write(path, lines):
    with open(path, "ab") as f:
        f.write(b"".join(lines))


def test():
    with h.case("status_page", None, prefix="tailbox-statuspage-") as c:
        wd = c.wd
        tb = c.tailbox()
        port = h.free_port()
        base = f"http://127.0.0.1:{port}"
        plain, hostile, other = wd.log_path("a.log"), wd.log_path(HOSTILE), wd.log_path("b.log")
        # Run 1: rows that fail once are dead.
        delivery = {"backoff_min": "50ms", "backoff_max": "200ms"}
        h.write_config(wd, delivery=dict(delivery, max_attempts=1),
                       metrics={"listen": f"127.0.0.1:{port}"})
        write(plain, [b"plain %d\n" % i for i in range(200)])
        write(hostile, [b"hostile %d\n" % i for i in range(100)])
        tb.start()
        h.wait_until(lambda: h.inbox_count(wd.inbox) == 300, 60, "300 lines delivered", tailbox=tb)
        lock = c.add(h.InboxLock(wd.inbox))
        write(plain, [b"doomed %d\n" % i for i in range(40)])
        h.wait_until(lambda: len(h.dead_rows(wd)) == 40, 60, "40 dead rows (inbox locked)", tailbox=tb)
        h.stop_clean(tb)
        lock.release()

        # Run 2: lines delivered, then lines pending while the sink retries.
        h.write_config(wd, delivery=delivery, metrics={"listen": f"127.0.0.1:{port}"})
        tb.start()
        h.wait_until(lambda: (status_page_json(base) or {}).get("sink", {}).get("state") == "connected",
                     30, "the sink to be connected (status.json)", tailbox=tb)
        write(other, [b"more %d\n" % i for i in range(100)])
        h.wait_until(lambda: h.inbox_count(wd.inbox) == 400, 60, "400 lines delivered", tailbox=tb)
        lock = c.add(h.InboxLock(wd.inbox))
        write(hostile, [b"waiting %d\n" % i for i in range(25)])
        h.wait_until(lambda: h.pending_rows(wd) == 25 and h.caught_up_reading(wd, [plain, hostile, other]),
                     30, "25 pending rows, every file read", tailbox=tb)

        def settled():
            s = status_page_json(base)
            return s if (s and s["sink"]["state"] == "retrying" and s["rates"]["history"]
                         and s["totals"]["rows_delivered"] == 100) else None
        live = h.wait_until(settled, 30, "status.json: sink retrying, a rate sample, 100 delivered",
                            tailbox=tb)
        if "locked" not in live["sink"]["last_error"] and "busy" not in live["sink"]["last_error"]:
            h.fail(f"the sink's last error does not say the inbox is locked: {live['sink']}")

        # The page, rendered by Chromium.
        t0 = time.monotonic()
        text = dump_dom(base + "/", wd.root)
        h.log(f"chromium rendered the page in {time.monotonic() - t0:.1f} s")
        status = h.status_json(wd.config)
        pending, dead, dead_by_error, offsets = outbox_truth(wd)
        dom = Dom(text)
        body = next(n for n in dom.root.walk() if n.tag == "body")
        if not body.attrs.get("data-rendered"):
            h.fail("the page's script did not render /status.json (no data-rendered on <body>)")
        if pending != 25 or dead != 40:
            h.fail(f"test bug: the outbox holds {pending} pending and {dead} dead rows, not 25 and 40")
        got = number(dom.by_id("pending-rows").text())
        if got != pending:
            h.fail(f"page shows {got} pending rows, the outbox holds {pending}")
        got = number(dom.by_id("dead-rows").text())
        if got != dead:
            h.fail(f"page shows {got} dead rows, the outbox holds {dead}")
        shown = {r["err"]: number(r["rows"]) for r in dom.rows("dead", "dead")}
        if shown != dead_by_error:
            h.fail(f"page shows dead rows by error {shown}, the outbox holds {dead_by_error}")
        age = seconds(dom.by_id("oldest-pending").text())
        if not 0 < age <= status["oldest_pending_age_seconds"] + 1:
            h.fail(f"page shows the oldest pending row {age} s old; tailbox status says "
                   f"{status['oldest_pending_age_seconds']} s a moment later")
        files = {r["path"]: r for r in dom.rows("files", "file")}
        if set(files) != set(offsets):
            h.fail(f"page lists files {sorted(files)}, the outbox follows {sorted(offsets)}")
        for path, off in offsets.items():
            r = files[path]
            if number(r["offset"]) != off or number(r["size"]) != os.path.getsize(path):
                h.fail(f"{path}: page shows offset {r['offset']} of {r['size']}, the outbox says "
                       f"{off}, the file has {os.path.getsize(path)} bytes")
            if r["lag"] != "0 B":
                h.fail(f"{path}: page shows a lag of {r['lag']} for a file read to its end")
        # The hostile name is text: its cell holds it verbatim, the serialized DOM
        # escapes it, and no element came out of it.
        if hostile not in files:
            h.fail("the file with the hostile name is not listed as text")
        if "&lt;img src=x onerror=alert(1)&gt;.log" not in text:
            h.fail("the hostile file name is not escaped in the rendered DOM")
        if any(n.tag in ("img", "script") and n.parent.tag != "head" and "src" in n.attrs
               for n in dom.root.walk()):
            h.fail("an element was made from data (img/script with src in the rendered page)")
        got = number(dom.by_id("delivered-total").text().split()[0])
        if got != 100:
            h.fail(f"page shows {got} rows delivered since start, 100 were")
        state = dom.by_id("sink-state").text()
        if state != "retrying":
            h.fail(f"page shows the sink {state!r}, status.json says retrying")
        if dom.by_id("sink-name").text() != live["sink"]["name"] or not dom.by_id("sink-guarantee").text():
            h.fail("the sink's name or guarantee is not shown")
        err = dom.by_id("sink-last-error").text()
        if err != live["sink"]["last_error"] or "ago" not in dom.by_id("sink-last-error-time").text():
            h.fail(f"page shows the last error {err!r} (at {dom.by_id('sink-last-error-time').text()!r}), "
                   f"status.json says {live['sink']['last_error']!r}")
        if not [n for n in dom.by_id("chart").walk() if n.tag == "polyline"]:
            h.fail("the rate chart has no line")
        h.log(f"rendered: {pending} pending, {dead} dead ({len(shown)} errors), {len(files)} files "
              f"with their offsets, sink {state}, the hostile name as text")

        # /status.json: the shared part is `tailbox status --json`.
        mine, theirs = status_page_json(base), h.status_json(wd.config)
        for key in theirs:
            if key == "oldest_pending_age_seconds":
                if abs(mine[key] - theirs[key]) > 5:
                    h.fail(f"{key}: status.json {mine[key]}, tailbox status {theirs[key]}")
            elif mine.get(key) != theirs[key]:
                h.fail(f"status.json {key} = {mine.get(key)!r}, tailbox status --json: {theirs[key]!r}")
        for key in ("now_ms", "relay", "totals", "reading", "sink", "rates"):
            if key not in mine:
                h.fail(f"status.json has no {key!r}")

        # Read-only, self-contained.
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in ("/", "/status.json"):
                code, headers, _ = request(base + path, method=method)
                if code != 405 or "GET" not in (headers.get("Allow") or ""):
                    h.fail(f"{method} {path} answered {code} (Allow: {headers.get('Allow')}), expected 405")
        code, headers, page = request(base + "/")
        csp = headers.get("Content-Security-Policy") or ""
        if code != 200 or "default-src 'none'" not in csp or "connect-src 'self'" not in csp:
            h.fail(f"/ answered {code} with CSP {csp!r}")
        if any(s in page for s in ("src=", "<link", "@import", "url(", "https://")):
            h.fail("the page refers to an external resource")
        code, _, _ = request(base + "/nope")
        if code != 404:
            h.fail(f"an unknown path answered {code}")
        h.log("status.json matches tailbox status --json; POST/PUT/DELETE/PATCH get 405; no external asset")

        lock.release()
        h.wait_until(lambda: h.inbox_count(wd.inbox) == 425, 60, "the 25 pending lines after release",
                     tailbox=tb)
        h.stop_clean(tb)


if __name__ == "__main__":
    h.main(test, "integration_status_page")
