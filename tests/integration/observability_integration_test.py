#!/usr/bin/env python3
"""The Grafana dashboard and the Prometheus alerts against the real tools and a real relay.

- `promtool check rules` on examples/prometheus-alerts.yml, and `promtool test rules`
  on tests/integration/prometheus_alerts_test.yml (each alert fires on the series it is for);
- a running tailbox ships 6,000 lines; its /metrics scrape passes `promtool check metrics`;
- a real Prometheus server (Debian package `prometheus`), started here on loopback with its
  own port, data directory and a 1 s scrape interval, scrapes the relay and loads the alerts;
  its HTTP query API must return tailbox_sink_delivered_rows_total = 6000;
- examples/grafana-dashboard.json: valid JSON, the panel structure Grafana needs, every
  expression accepted by that Prometheus server, and every metric name in the expressions
  (and in the alerts) one the live scrape exposes.

Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/observability_integration_test.py
"""

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ALERTS = os.path.join(h.REPO_ROOT, "examples", "prometheus-alerts.yml")
ALERT_TESTS = os.path.join(h.REPO_ROOT, "tests", "integration", "prometheus_alerts_test.yml")
DASHBOARD = os.path.join(h.REPO_ROOT, "examples", "grafana-dashboard.json")
LINES = 6000
# Series Prometheus makes itself for every target (not in the relay's scrape).
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def tool(name):
    path = shutil.which(name)
    if not path:
        h.fail(f"{name} not found: install the Debian package `prometheus` (tools/install-deps)")
    return path


def run(cmd, stdin_text=None, timeout=60):
    r = subprocess.run(cmd, input=stdin_text, capture_output=True, text=True, timeout=timeout)
    return r.returncode, (r.stdout + r.stderr).strip()


# ---------------------------------------------------------------------------
# Metric names out of PromQL
# ---------------------------------------------------------------------------

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}


def metric_names(expr):
    """The metric names an expression selects (a small PromQL lexer, enough for ours).

    Strings, label matchers {...}, ranges [...] and grouping clauses by/without/on/
    ignoring/group_*(...) are removed first; Grafana variables ($x, ${x}) too. What is
    left that is an identifier not followed by "(" and not a keyword is a metric name.
    """
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*(\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def check_metric_names_selftest():
    cases = {
        'sum by (instance, sink) (rate(tailbox_sink_retries_total{instance=~"$instance"}[$__rate_interval]))':
            {"tailbox_sink_retries_total"},
        'a_x / on (instance) group_left(sink) b_y > 0.8 and up{job="t"} == 0': {"a_x", "b_y", "up"},
        'histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))': {"h_bucket"},
        'time() - (t_seconds{x="a{b}"} > 0)': {"t_seconds"},
    }
    for expr, want in cases.items():
        got = metric_names(expr)
        if got != want:
            h.fail(f"metric_names({expr!r}) = {got}, expected {want} (test bug)")


def scrape_names(text):
    """Every sample name in a Prometheus text exposition (with _bucket/_sum/_count)."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.match(r"[A-Za-z_:][\w:]*", line).group(0))
    return names


def scrape_value(text, name):
    """The sum of a metric's samples in a scrape (None when it has none)."""
    vals = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if re.match(re.escape(name) + r"(\{| )", line)]
    return sum(vals) if vals else None


def alert_exprs(path):
    """The expr of every rule in the alerts file (a YAML subset: `expr: x` or `expr: |`)."""
    exprs, lines = [], open(path).read().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", lines[i])
        if m:
            indent, rest = len(m.group(1)), m.group(2).strip()
            if rest in ("|", ">", "|-", ">-"):
                body = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or
                                          len(lines[i]) - len(lines[i].lstrip()) > indent):
                    body.append(lines[i].strip())
                    i += 1
                exprs.append(" ".join(body).strip())
                continue
            exprs.append(rest)
        i += 1
    return exprs


# ---------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------

class PrometheusServer:
    """A throwaway Prometheus on 127.0.0.1:port with its own data directory."""

    def __init__(self, root, target, rules):
        self.dir = os.path.join(root, "prometheus")
        os.makedirs(os.path.join(self.dir, "data"))
        self.port = h.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    f"rule_files:\n  - {json.dumps(rules)}\n"
                    "scrape_configs:\n  - job_name: tailbox\n"
                    f"    static_configs:\n      - targets: [{json.dumps(target)}]\n")
        self.log_path = os.path.join(self.dir, "prometheus.log")
        self.proc = None

    def start(self):
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [tool("prometheus"), f"--config.file={self.config}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
            start_new_session=True)
        t0 = time.monotonic()
        h.wait_until(lambda: self.proc.poll() is not None or h.http_get(self.base + "/-/ready")[0] == 200,
                     60, "Prometheus to be ready")
        if self.proc.poll() is not None:
            h.fail(f"prometheus exited {self.proc.returncode}:\n{h.tail_of_file(self.log_path)}")
        h.log(f"prometheus ready on {self.base} after {time.monotonic() - t0:.1f}s")

    def api(self, path, **params):
        url = f"{self.base}/api/v1/{path}?" + urllib.parse.urlencode(params)
        code, body = h.http_get(url, timeout=10)
        try:
            return code, json.loads(body)
        except ValueError:
            return code, {"status": "error", "error": body[:300]}

    def query(self, expr):
        """The instant vector [(labels, float)], or fails on an error answer."""
        code, ans = self.api("query", query=expr)
        if code != 200 or ans.get("status") != "success":
            h.fail(f"Prometheus refused {expr!r}: {code} {ans.get('error')}")
        return [(r["metric"], float(r["value"][1])) for r in ans["data"]["result"]]

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.logf.close()


# ---------------------------------------------------------------------------
# The dashboard
# ---------------------------------------------------------------------------

def dashboard_exprs():
    """[(where, expr)] of every query in the dashboard; fails on a structural problem."""
    try:
        with open(DASHBOARD) as f:
            dash = json.load(f)
    except ValueError as e:
        h.fail(f"{DASHBOARD} is not valid JSON: {e}")
    for key in ("title", "uid", "panels", "schemaVersion", "templating"):
        if key not in dash:
            h.fail(f"dashboard has no {key!r}")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    if variables.get("datasource", {}).get("type") != "datasource" or \
            variables["datasource"].get("query") != "prometheus":
        h.fail("dashboard needs a Prometheus data source variable named 'datasource'")
    exprs, ids, kinds = [], set(), set()
    for v in variables.values():
        q = v.get("query")
        if v["type"] == "query":
            text = q["query"] if isinstance(q, dict) else q
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text)
            if not m:
                h.fail(f"variable {v['name']}: unexpected query {text!r}")
            exprs.append((f"variable {v['name']}", m.group(1)))
    for p in dash["panels"]:
        for key in ("id", "type", "title", "gridPos"):
            if key not in p:
                h.fail(f"panel {p.get('title', p)} has no {key!r}")
        if p["id"] in ids:
            h.fail(f"panel id {p['id']} used twice")
        ids.add(p["id"])
        g = p["gridPos"]
        if not (0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0):
            h.fail(f"panel {p['title']!r}: gridPos {g} outside the 24-column grid")
        if p["type"] == "row":
            continue
        kinds.add(p["type"])
        if p.get("datasource", {}).get("uid") != "${datasource}":
            h.fail(f"panel {p['title']!r} does not use the $datasource variable")
        if not p.get("targets"):
            h.fail(f"panel {p['title']!r} has no query")
        refs = [t["refId"] for t in p["targets"]]
        if len(set(refs)) != len(refs):
            h.fail(f"panel {p['title']!r}: refId used twice")
        for t in p["targets"]:
            if not t.get("expr", "").strip():
                h.fail(f"panel {p['title']!r} target {t['refId']} has no expr")
            exprs.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
    h.log(f"dashboard: {len(ids)} panels ({', '.join(sorted(kinds))}), {len(exprs)} expressions")
    return exprs


def grafana_to_promql(expr):
    """The expression as Grafana would send it (its variables substituted)."""
    return (expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
            .replace('"$instance"', '".*"'))


# ---------------------------------------------------------------------------

def test():
    check_metric_names_selftest()
    promtool = tool("promtool")

    t0 = time.monotonic()
    rc, out = run([promtool, "check", "rules", ALERTS])
    if rc != 0:
        h.fail(f"promtool check rules {ALERTS}:\n{out}")
    rc, out = run([promtool, "test", "rules", ALERT_TESTS])
    if rc != 0:
        h.fail(f"promtool test rules {ALERT_TESTS}:\n{out}")
    h.log(f"promtool: the alerts check and their unit tests pass ({time.monotonic() - t0:.1f}s)")

    with h.case("observability", None, prefix="tailbox-observability-") as c:
        wd = c.wd
        tb = c.tailbox()
        port = h.free_port()
        h.write_config(wd, metrics={"listen": f"127.0.0.1:{port}"})
        rng = random.Random(13)
        paths = [wd.log_path("a.log"), wd.log_path("b.log")]
        src = h.SourceFiles(paths)
        for i, p in enumerate(paths):
            data = b"".join(h.make_line(rng, f"o{i}", n, variety=False) for n in range(LINES // 2))
            src.write(p, data, LINES // 2)
        src.close()
        tb.start()
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        h.wait_until(lambda: h.inbox_count(wd.inbox) == LINES, 60, f"{LINES} lines delivered", tailbox=tb)
        h.wait_until(lambda: scrape_value(h.http_get(metrics_url)[1], "tailbox_sink_delivered_rows_total")
                     == LINES, 15, f"the scrape to show {LINES} delivered rows")

        code, scrape = h.http_get(metrics_url)
        if code != 200:
            h.fail(f"/metrics answered {code}")
        rc, out = run([promtool, "check", "metrics"], stdin_text=scrape)
        if rc != 0 or out:
            h.fail(f"promtool check metrics on a live scrape (exit {rc}):\n{out}")
        exposed = scrape_names(scrape)
        h.log(f"promtool check metrics: a live scrape of {len(exposed)} series names is clean")

        prom = c.add(PrometheusServer(wd.root, f"127.0.0.1:{port}", ALERTS))
        c.on_failure("prometheus log", lambda: h.tail_of_file(prom.log_path))
        prom.start()

        def delivered():
            res = prom.query('tailbox_sink_delivered_rows_total{job="tailbox"}')
            return res if res and res[0][1] == LINES else None
        res = h.wait_until(delivered, 30, f"Prometheus to return tailbox_sink_delivered_rows_total = {LINES}",
                           tailbox=tb)
        labels = res[0][0]
        if not labels.get("sink", "").startswith("sqlite:") or labels.get("instance") != f"127.0.0.1:{port}":
            h.fail(f"unexpected labels on the delivered-rows series: {labels}")
        up = prom.query('up{job="tailbox"}')
        if [v for _, v in up] != [1.0]:
            h.fail(f"up{{job=\"tailbox\"}} = {up}")
        read = prom.query('sum(tailbox_source_lines_read_total{job="tailbox"})')
        if [v for _, v in read] != [float(LINES)]:
            h.fail(f"lines read according to Prometheus: {read}")
        h.log(f"Prometheus scraped the relay: delivered = {LINES}, lines read = {LINES}, up = 1")

        code, ans = prom.api("rules")
        rules = [r for g in ans["data"]["groups"] for r in g["rules"]] if code == 200 else []
        alert_names = [r["name"] for r in rules if r["type"] == "alerting"]
        want = {"TailboxDeliveryStalled", "TailboxOutboxFilling", "TailboxDeadRowsGrowing",
                "TailboxReaderPaused", "TailboxSinkDown", "TailboxReadersFailed"}
        if not want <= set(alert_names):
            h.fail(f"Prometheus loaded alerts {alert_names}, expected at least {sorted(want)}")
        h.wait_until(lambda: all(r.get("health") == "ok" for r in
                                 (x for g in prom.api("rules")[1]["data"]["groups"] for x in g["rules"])),
                     15, "every alert rule to evaluate without error")
        _, ans = prom.api("alerts")
        firing = [a["labels"]["alertname"] for a in ans["data"]["alerts"]]
        if firing:
            h.fail(f"alerts pending or firing on a healthy relay: {firing}")
        h.log(f"Prometheus loaded {len(alert_names)} alerts; all evaluate, none fires on a healthy relay")

        unknown = []
        for where, expr in dashboard_exprs():
            names = metric_names(expr)
            if not names:
                h.fail(f"{where}: no metric name found in {expr!r}")
            unknown += [f"{where}: {n}" for n in sorted(names - exposed)]
            prom.query(grafana_to_promql(expr))       # fails on a PromQL error
        exprs = alert_exprs(ALERTS)
        if len(exprs) != len(rules):
            h.fail(f"read {len(exprs)} expressions from {ALERTS}, Prometheus loaded {len(rules)} rules (test bug)")
        for expr in exprs:
            unknown += [f"alert expr {expr!r}: {n}" for n in sorted(metric_names(expr) - exposed - SYNTHETIC)]
        if unknown:
            h.fail("metric names the relay does not export:\n  " + "\n  ".join(unknown))
        h.log("dashboard and alerts: every expression parses and names only exported metrics")

        if tb.stop() != 0:
            h.fail("tailbox did not exit 0 on SIGTERM")


if __name__ == "__main__":
    h.main(test, "integration_observability")
