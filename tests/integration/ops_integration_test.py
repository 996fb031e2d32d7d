#!/usr/bin/env python3
"""Operating tailbox: metrics during a real run, outbox-full backpressure, disk
full on the outbox's file system, a damaged outbox, a second relay on the same
outbox, and bad configuration. Real binary, real files, real tmpfs (root only;
the disk-full case is skipped without it), real HTTP scrapes on loopback.

Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/ops_integration_test.py
"""

import hashlib
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HOST = "edge1"


def parse_metrics(text):
    """{(name, frozenset(labels)): value} from the Prometheus text format."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        labels = frozenset()
        if "{" in name_labels:
            name, rest = name_labels.split("{", 1)
            pairs = []
            for part in rest.rstrip("}").split(","):
                k, v = part.split("=", 1)
                pairs.append((k, v.strip('"')))
            labels = frozenset(pairs)
        else:
            name = name_labels
        out[(name, labels)] = float(value)
    return out


def metric(m, name, **labels):
    want = frozenset(labels.items())
    vals = [v for (n, l), v in m.items() if n == name and want <= l]
    if not vals:
        h.fail(f"metric {name}{labels} missing")
    return sum(vals)


def write_lines(src, path, rng, tag, n, start=0):
    data = b"".join(h.make_line(rng, tag, start + i, variety=False) for i in range(n))
    src.write(path, data, n)




def case_metrics():
    with h.case("metrics", None, prefix="tailbox-ops-metrics-") as c:
        wd = c.wd
        tb = c.tailbox()
        port = h.free_port()
        h.write_config(wd, metrics={"listen": f"127.0.0.1:{port}"})
        rng = random.Random(1)
        paths = [wd.log_path(f"m{i}.log") for i in range(2)]
        src = h.SourceFiles(paths)
        for i, p in enumerate(paths):
            write_lines(src, p, rng, f"m{i}", 10000)
        tb.start()
        h.wait_until(lambda: h.inbox_count(wd.inbox) == 20000, 60, "20000 lines delivered", tailbox=tb)
        base = f"http://127.0.0.1:{port}"
        # Counters are updated after the commit that made rows visible: poll briefly.
        def settled():
            m = parse_metrics(h.http_get(base + "/metrics")[1])
            return metric(m, "tailbox_sink_delivered_rows_total") == 20000 and \
                metric(m, "tailbox_outbox_rows") == 0
        h.wait_until(settled, 15, "metrics to show 20000 delivered rows and an empty outbox")
        status, text = h.http_get(base + "/metrics")
        if status != 200:
            h.fail(f"/metrics answered {status}")
        m = parse_metrics(text)
        checks = {
            ("tailbox_source_lines_read_total", "app"): 20000,
            ("tailbox_sink_delivered_rows_total", None): 20000,
            ("tailbox_outbox_rows", None): 0,
            ("tailbox_sink_dead_rows_total", None): 0,
            ("tailbox_reader_paused", None): 0,
            ("tailbox_files_followed", None): 2,
        }
        for (name, source), want in checks.items():
            got = metric(m, name, **({"source": source} if source else {}))
            if got != want:
                h.fail(f"{name} = {got}, expected {want}")
        size = sum(os.path.getsize(p) for p in paths)
        if metric(m, "tailbox_source_bytes_read_total", source="app") != size:
            h.fail("tailbox_source_bytes_read_total does not equal the files' size")
        if metric(m, "tailbox_file_lag_bytes") != 0:
            h.fail("file lag is not 0 after everything was read")
        if metric(m, "tailbox_sink_batch_duration_seconds_count") < 1:
            h.fail("batch latency histogram is empty")
        for line in text.splitlines():
            if line.startswith("# TYPE") and line.split()[3] == "counter" and not line.split()[2].endswith("_total"):
                h.fail(f"counter without _total: {line}")
        code, body = h.http_get(base + "/healthz")
        if code != 200 or json.loads(body).get("alive") is not True:
            h.fail(f"/healthz: {code} {body}")
        code, body = h.http_get(base + "/readyz")
        if code != 200 or json.loads(body).get("ready") is not True:
            h.fail(f"/readyz: {code} {body}")
        code, _ = h.http_get(base + "/nope")
        if code != 404:
            h.fail(f"unknown path answered {code}")
        if tb.stop() != 0:
            h.fail("tailbox did not exit 0 on SIGTERM")
        h.log("metrics: a real scrape matches what was delivered; healthz/readyz answer")


def case_backpressure():
    with h.case("backpressure", None, prefix="tailbox-ops-full-") as c:
        wd = c.wd
        tb = c.tailbox()
        port = h.free_port()
        max_rows = 500
        h.write_config(wd, outbox={"max_rows": max_rows},
                       tail={"read_chunk_bytes": 4096},
                       delivery={"backoff_min": "50ms", "backoff_max": "200ms"},
                       metrics={"listen": f"127.0.0.1:{port}"})
        # The sink's database exists and is locked before tailbox starts.
        lock = c.add(h.InboxLock(wd.inbox))
        rng = random.Random(2)
        path = wd.log_path("bp.log")
        src = h.SourceFiles([path])
        write_lines(src, path, rng, "bp", 5000)
        tb.start()
        base = f"http://127.0.0.1:{port}/metrics"
        h.wait_until(lambda: parse_metrics(h.http_get(base)[1]).get(("tailbox_reader_paused", frozenset())) == 1,
                     30, "reading to pause at max_rows", tailbox=tb)
        peak = 0
        for _ in range(20):
            peak = max(peak, h.outbox_count(wd.outbox))
            time.sleep(0.1)
        # One 4 KiB chunk may land after the limit: about 50 lines of these.
        if peak > max_rows + 100:
            h.fail(f"outbox grew to {peak} rows with max_rows = {max_rows}")
        st = h.status_json(wd.config)
        if st["pending_rows"] >= 5000:
            h.fail("everything was read although the outbox was full")
        h.log(f"backpressure: paused with {peak} rows in the outbox (max_rows {max_rows})")
        lock.release()
        h.wait_until(lambda: h.inbox_count(wd.inbox) == 5000, 90, "all 5000 lines after release",
                     tailbox=tb)
        h.wait_until(lambda: parse_metrics(h.http_get(base)[1]).get(("tailbox_reader_paused", frozenset())) == 0,
                     10, "reading to resume")
        if tb.stop() != 0:
            h.fail("tailbox did not exit 0")
        h.check_exact(h.expected_from_files([path]), h.read_inbox(wd.inbox), host_id=HOST,
                      label="inbox after backpressure")


def case_disk_full():
    if os.geteuid() != 0:
        h.log("disk full: SKIPPED (needs root to mount a small tmpfs)")
        return
    with h.case("disk_full", None, prefix="tailbox-ops-disk-") as c:
        wd = c.wd
        mnt = os.path.join(wd.root, "small")
        os.mkdir(mnt)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt],
                                 capture_output=True).returncode == 0
        if not mounted:
            h.log("disk full: SKIPPED (mount -t tmpfs failed here)")
            return
        c.defer(subprocess.run, ["umount", "-l", mnt], capture_output=True)
        tb = c.tailbox()
        port = h.free_port()
        outbox = os.path.join(mnt, "outbox.db")
        # No headroom (min_free_bytes = 0): appends themselves meet the full
        # disk. With headroom, see outbox_disk_full_integration_test.py.
        h.write_config(wd, outbox={"path": outbox, "min_free_bytes": 0, "reserve_bytes": 0},
                       delivery={"backoff_min": "50ms", "backoff_max": "300ms"},
                       metrics={"listen": f"127.0.0.1:{port}"})
        lock = c.add(h.InboxLock(wd.inbox))
        rng = random.Random(3)
        path = wd.log_path("full.log")
        src = h.SourceFiles([path])
        write_lines(src, path, rng, "df", 30000)     # ~3 MB: cannot fit in 1 MiB
        tb.start()
        base = f"http://127.0.0.1:{port}/metrics"
        h.wait_until(lambda: parse_metrics(h.http_get(base)[1]).get(("tailbox_outbox_errors_total", frozenset()), 0) > 0,
                     60, "the outbox's file system to fill up (SQLITE_FULL)", tailbox=tb)
        tb.assert_alive("the disk was full")
        code, body = h.http_get(f"http://127.0.0.1:{port}/readyz")
        if code != 503 or "not writable" not in body:
            h.fail(f"/readyz should say the outbox is not writable: {code} {body}")
        h.log("disk full: SQLITE_FULL seen, relay alive, /readyz says why; giving space back")
        subprocess.run(["mount", "-o", "remount,size=256m", mnt], check=True)
        lock.release()
        h.wait_until(lambda: h.inbox_count(wd.inbox) == 30000, 120, "all 30000 lines after space returned",
                     tailbox=tb)
        if tb.stop() != 0:
            h.fail("tailbox did not exit 0")
        h.check_exact(h.expected_from_files([path]), h.read_inbox(wd.inbox), host_id=HOST,
                      label="inbox after disk full")


def case_damaged_outbox_and_second_relay():
    with h.case("damaged_outbox_and_second_relay", None, prefix="tailbox-ops-damaged-") as c:
        wd = c.wd
        tb = c.tailbox()
        h.write_config(wd)
        with open(wd.outbox, "wb") as f:
            f.write(b"SQLite format 3\x00" + os.urandom(8192))
        digest = hashlib.sha256(open(wd.outbox, "rb").read()).hexdigest()
        tb.start()
        try:
            rc = tb.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            h.fail("tailbox kept running on a damaged outbox")
        log_text = open(wd.tailbox_log, errors="replace").read()
        if rc != 1 or "damaged" not in log_text:
            h.fail(f"damaged outbox: exit {rc}, log:\n{log_text[-800:]}")
        r = h.run_cli(["check", "-c", wd.config, "--outbox"])
        if r.returncode != 1 or "What to do" not in r.stdout:
            h.fail(f"check --outbox on a damaged outbox: exit {r.returncode}\n{r.stdout}{r.stderr}")
        if hashlib.sha256(open(wd.outbox, "rb").read()).hexdigest() != digest:
            h.fail("the damaged outbox was modified")
        h.log("damaged outbox: refused with exit 1, check --outbox explains, file untouched")

        os.remove(wd.outbox)
        tb.start()
        h.wait_until(lambda: os.path.exists(wd.outbox + ".lock") and h.outbox_count(wd.outbox) >= 0, 15,
                     "the first relay to open its outbox", tailbox=tb)
        time.sleep(0.5)
        tb2 = subprocess.run([h.tailbox_bin(), "run", "-c", wd.config], capture_output=True, text=True,
                             timeout=15)
        if tb2.returncode != 1 or "in use by another tailbox" not in tb2.stderr + tb2.stdout:
            h.fail(f"a second relay on the same outbox: exit {tb2.returncode}: {tb2.stderr}")
        if oct(os.stat(wd.outbox).st_mode & 0o777) != "0o600":
            h.fail(f"outbox mode is {oct(os.stat(wd.outbox).st_mode & 0o777)}, expected 0600")
        if tb.stop() != 0:
            h.fail("first relay did not exit 0")
        h.log("second relay refused; outbox created 0600")

        with open(wd.config, "a") as f:
            f.write("\n[bogus]\nx = 1\n")
        r = h.run_cli(["check", "-c", wd.config])
        if r.returncode != 2 or "bogus" not in r.stderr:
            h.fail(f"unknown table: exit {r.returncode}: {r.stderr}")


def test():
    case_metrics()
    case_backpressure()
    case_disk_full()
    case_damaged_outbox_and_second_relay()


if __name__ == "__main__":
    h.main(test, "ops_integration_test")
