"""Runs tools/receiver (the reference HTTP receiver) for a test: its own process,
127.0.0.1, a free port (the receiver binds port 0 and prints the one it got), its
own database. Also makes test certificates with the openssl CLI.

    with ReceiverProcess(db, ["--fail-rate", "0.2"]) as rx:
        rx.url("/ingest")            # http://127.0.0.1:PORT/ingest
        rx.records()                 # {id: (body dict, deliveries)}
"""

import json
import os
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

RECEIVER = os.path.join(h.REPO_ROOT, "tools", "receiver")


class ReceiverProcess:
    def __init__(self, db, extra_args=(), log_path=None, tls=False):
        self.db = db
        self.args = list(extra_args)
        self.log_path = log_path or db + ".log"
        self.scheme = "https" if tls else "http"
        self.proc = None
        self.port = None

    def start(self, timeout=15):
        """Starts it and reads its port from the first line of its log."""
        self.logf = open(self.log_path, "ab", buffering=0)
        start_at = self.logf.tell()
        self.proc = subprocess.Popen([sys.executable, RECEIVER, "--db", self.db, "--listen",
                                      "127.0.0.1:0"] + self.args,
                                     stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.port is None and time.monotonic() < deadline and self.proc.poll() is None:
            with open(self.log_path, "rb") as f:
                f.seek(start_at)
                for line in f:
                    if line.startswith(b"receiver: listening on "):
                        self.port = int(line.split()[3].rsplit(b":", 1)[1])
                        break
            time.sleep(0.05)
        if self.port is None:
            self.stop()
            h.fail(f"tools/receiver did not start; see {self.log_path}:\n"
                   f"{h.tail_of_file(self.log_path, 20)}")
        return self

    def url(self, path="/"):
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "logf", None) is not None:
            self.logf.close()
            self.logf = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- reading the database -------------------------------------------------

    def _query(self, sql):
        if not os.path.exists(self.db):
            return []
        conn = h.sqlite_connect(self.db)
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []
            raise
        finally:
            conn.close()

    def count(self):
        rows = self._query("SELECT count(*) FROM records")
        return rows[0][0] if rows else 0

    def records(self):
        """{id: (body as dict, deliveries)}"""
        return {i: (json.loads(b), d) for i, b, d in
                self._query("SELECT id, body, deliveries FROM records")}

    def stats(self):
        return dict(self._query("SELECT name, value FROM stats"))


def recs_of(records, id_field="_id"):
    """harness.Rec tuples from receiver records, for harness.check_exact."""
    import base64
    out = []
    for rid, (obj, _) in records.items():
        if "message_base64" in obj:
            line = base64.b64decode(obj["message_base64"])
        else:
            line = obj["message"].encode("utf-8")
        if obj.get(id_field) != rid:
            h.fail(f"receiver row {rid!r} holds a body with {id_field} = {obj.get(id_field)!r}")
        out.append(h.Rec(rid, obj["path"], int(obj["offset"]), line, obj.get("host"),
                         obj.get("source")))
    return out


def make_certs(directory):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate
    signed by it, and an unrelated second CA. Returns {name: path}."""
    def run(*args):
        r = subprocess.run(["openssl"] + list(args), cwd=directory, capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            h.fail(f"openssl {' '.join(args)} failed: {r.stderr.strip()}")

    p = {k: os.path.join(directory, k) for k in
         ("ca.pem", "ca.key", "other-ca.pem", "other-ca.key", "server.pem", "server.key",
          "client.pem", "client.key")}
    for name in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj",
            f"/CN=tailbox test {name}")
    with open(os.path.join(directory, "server.ext"), "w") as f:
        f.write("subjectAltName = IP:127.0.0.1, DNS:localhost\n"
                "extendedKeyUsage = serverAuth\n")
    with open(os.path.join(directory, "client.ext"), "w") as f:
        f.write("extendedKeyUsage = clientAuth\n")
    for name in ("server", "client"):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=tailbox test {name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return p
