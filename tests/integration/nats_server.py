"""Throwaway nats-server processes (JetStream) and a tiny NATS client, for
tailbox's tests and tools/bench (Python 3, stdlib only).

    with NatsServer() as ns:                 # -js, own store dir, 127.0.0.1, a free port
        c = NatsClient(ns.port)
        c.add_stream({"name": "LOGS", "subjects": ["logs.>"]})
        ns.stop(); ns.start()                # an outage; the store dir is kept
    with NatsCluster(3) as cl:               # 3 routed servers, each its own store dir
        cl.servers[1].kill9(); cl.servers[1].start()

The client speaks the plain NATS protocol on a socket and uses the JetStream
API as request/reply JSON ($JS.API.STREAM.INFO.<stream>, $JS.API.STREAM.MSG.GET.<stream>
with {"seq": n}, $JS.API.STREAM.MSG.DELETE.<stream>); publish() sends one message with
headers (HPUB) and returns its PubAck; read_stream() fetches every message of a stream with
pipelined MSG.GET requests.

When nats-server is missing, require_nats_server() prints why and exits 77,
which meson counts as a skipped test.
"""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from harness import free_port, wait_server_ready

SKIP = 77
BINARY = os.environ.get("TAILBOX_NATS_SERVER", "nats-server")


def require_nats_server():
    if shutil.which(BINARY) is None:
        print(f"SKIP: {BINARY} not found (install the Debian package nats-server)", flush=True)
        # In CI the server is installed by tools/install-deps: missing is a failure.
        sys.exit(1 if os.environ.get("CI") == "true" else SKIP)


class NatsServer:
    """One nats-server with JetStream. `config` is extra text for a -c file
    (e.g. "max_payload: 65536"). Routes make it a cluster member."""

    def __init__(self, name="n1", port=None, root=None, config=None, cluster_port=None,
                 routes=None, cluster_name=None):
        self.name = name
        self.port = port or free_port()
        self.root = root or os.path.realpath(tempfile.mkdtemp(prefix="tailbox-nats-", dir="/tmp"))
        self.own_root = root is None
        self.store = os.path.join(self.root, f"store-{name}")
        self.logfile = os.path.join(self.root, f"{name}.log")
        self.config = config
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.cluster_name = cluster_name
        self.proc = None
        self.logf = None

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def command(self):
        cmd = [BINARY, "-js", "-sd", self.store, "-a", "127.0.0.1", "-p", str(self.port),
               "-n", self.name]
        if self.config:
            path = os.path.join(self.root, f"{self.name}.conf")
            with open(path, "w") as f:
                f.write(self.config + "\n")
            cmd += ["-c", path]
        if self.cluster_port:
            cmd += ["--cluster_name", self.cluster_name or "tailbox",
                    "--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            if self.routes:
                cmd += ["--routes", ",".join(self.routes)]
        return cmd

    def start(self, wait=True, timeout=30):
        if self.running():
            raise RuntimeError(f"nats-server {self.name} started twice")
        os.makedirs(self.store, exist_ok=True)
        if self.logf is None:
            self.logf = open(self.logfile, "ab", buffering=0)
        self.logf.write(f"===== start at {time.time():.3f} =====\n".encode())
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_ready(timeout)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=30):
        """Until the server accepts a client connection (INFO received)."""
        wait_server_ready(self.proc, self.port, lambda s: s.recv(4096).startswith(b"INFO "),
                          f"nats-server {self.name}", self.log_tail, timeout)

    def stop(self, timeout=30):
        """SIGTERM (a clean shutdown, the store is flushed)."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()

    def kill9(self):
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=20)

    def log_tail(self, lines=30):
        try:
            with open(self.logfile, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"

    def cleanup(self, keep=False):
        try:
            self.kill9()
        finally:
            if self.logf is not None:
                self.logf.close()
                self.logf = None
            if self.own_root and not keep:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup(keep=os.environ.get("TAILBOX_KEEP") == "1")


class NatsCluster:
    """`size` JetStream servers routed to each other (one cluster)."""

    def __init__(self, size=3, config=None):
        self.root = os.path.realpath(tempfile.mkdtemp(prefix="tailbox-nats-cluster-", dir="/tmp"))
        cports = [free_port() for _ in range(size)]
        routes = [f"nats://127.0.0.1:{p}" for p in cports]
        self.servers = [NatsServer(name=f"n{i + 1}", root=self.root, config=config,
                                   cluster_port=cports[i],
                                   routes=[r for j, r in enumerate(routes) if j != i])
                        for i in range(size)]

    @property
    def url(self):
        return ",".join(s.url for s in self.servers)

    def start(self, timeout=60):
        for s in self.servers:
            s.start(wait=False)
        for s in self.servers:
            s.wait_ready(timeout)
        return self

    def log_tails(self):
        return "\n".join(f"--- {s.name} ---\n{s.log_tail(15)}" for s in self.servers)

    def cleanup(self, keep=False):
        for s in self.servers:
            s.cleanup(keep=True)
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup(keep=os.environ.get("TAILBOX_KEEP") == "1")


class NatsError(Exception):
    pass


class NatsClient:
    """A minimal blocking NATS client: requests, and pipelined stream reads.
    Tries the given ports in turn (a cluster member may be down)."""

    def __init__(self, ports, timeout=10.0, token=None):
        self.ports = [ports] if isinstance(ports, int) else list(ports)
        self.timeout = timeout
        self.token = token
        self.sock = None
        self.buf = b""
        self.inbox = "_INBOX." + uuid.uuid4().hex
        self.replies = {}
        self._connect()

    def _connect(self):
        last = None
        for port in self.ports:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=self.timeout)
                self.buf = b""
                self._read_line()   # INFO
                connect = {"verbose": False, "pedantic": False, "headers": True,
                           "no_responders": True, "protocol": 1, "name": "tailbox-test"}
                if self.token:
                    connect["auth_token"] = self.token
                self.sock.sendall(f"CONNECT {json.dumps(connect)}\r\nSUB {self.inbox}.* 1\r\n"
                                  f"PING\r\n".encode())
                while self._read_op() != "PONG":
                    pass
                return
            except OSError as e:
                last = e
                self.close()
        raise NatsError(f"cannot connect to any of ports {self.ports}: {last}")

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def _fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise NatsError("connection closed by the server")
        self.buf += data

    def _read_line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read_exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _read_op(self):
        """Reads one protocol operation; stores MSG/HMSG replies. Returns its name."""
        line = self._read_line()
        op = line.split(b" ", 1)[0].upper()
        if op == b"PING":
            self.sock.sendall(b"PONG\r\n")
        elif op == b"MSG":
            parts = line.split(b" ")
            subject, size = parts[1].decode(), int(parts[-1])
            self.replies[subject] = (None, self._read_exact(size))
        elif op == b"HMSG":
            parts = line.split(b" ")
            subject, hsize, size = parts[1].decode(), int(parts[-2]), int(parts[-1])
            data = self._read_exact(size)
            self.replies[subject] = (data[:hsize], data[hsize:])
        elif op == b"-ERR":
            raise NatsError(line.decode("utf-8", "replace"))
        return op.decode()

    def _wait(self, subjects, timeout):
        deadline = time.monotonic() + timeout
        while not all(s in self.replies for s in subjects):
            if time.monotonic() > deadline:
                raise NatsError(f"no reply within {timeout}s")
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self._read_op()
            except socket.timeout:
                pass
            finally:
                self.sock.settimeout(self.timeout)

    def request(self, subject, payload=b"", timeout=None):
        """The reply's payload as JSON; raises NatsError on no responders/timeouts."""
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload).encode()
        reply = f"{self.inbox}.{uuid.uuid4().hex[:12]}"
        self.sock.sendall(f"PUB {subject} {reply} {len(payload)}\r\n".encode() + payload + b"\r\n")
        self._wait([reply], timeout or self.timeout)
        hdr, data = self.replies.pop(reply)
        if hdr is not None and b" 503" in hdr.split(b"\r\n", 1)[0]:
            raise NatsError(f"no responders for {subject}")
        return json.loads(data) if data else {}

    def api(self, subject, payload=b"", timeout=None):
        r = self.request("$JS.API." + subject, payload, timeout)
        if "error" in r:
            raise NatsError(f"{subject}: {r['error']}")
        return r

    def add_stream(self, config):
        return self.api(f"STREAM.CREATE.{config['name']}", config)

    def delete_stream(self, stream):
        return self.api(f"STREAM.DELETE.{stream}")

    def stream_info(self, stream):
        return self.api(f"STREAM.INFO.{stream}")

    def delete_msg(self, stream, seq):
        """Deletes one message of `stream` by sequence ($JS.API.STREAM.MSG.DELETE)."""
        return self.api(f"STREAM.MSG.DELETE.{stream}", {"seq": seq})

    def publish(self, subject, payload, headers):
        """A JetStream publish with headers (HPUB); the PubAck as JSON."""
        block = ("NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                 + "\r\n").encode()
        reply = f"{self.inbox}.{uuid.uuid4().hex[:12]}"
        self.sock.sendall(f"HPUB {subject} {reply} {len(block)} {len(block) + len(payload)}\r\n"
                          .encode() + block + payload + b"\r\n")
        self._wait([reply], self.timeout)
        _, data = self.replies.pop(reply)
        return json.loads(data) if data else {}

    def read_stream(self, stream, window=512):
        """Every message of `stream` as dicts {seq, subject, headers, data, time} (seq order)."""
        state = self.stream_info(stream)["state"]
        first, last = state.get("first_seq", 0), state.get("last_seq", 0)
        out = []
        seq = max(first, 1)
        while seq <= last:
            chunk = range(seq, min(last, seq + window - 1) + 1)
            subjects = []
            for n in chunk:
                reply = f"{self.inbox}.g{n}"
                body = json.dumps({"seq": n}).encode()
                self.sock.sendall(f"PUB $JS.API.STREAM.MSG.GET.{stream} {reply} {len(body)}\r\n"
                                  .encode() + body + b"\r\n")
                subjects.append(reply)
            self._wait(subjects, 60)
            for reply in subjects:
                _, data = self.replies.pop(reply)
                r = json.loads(data)
                if "error" in r:
                    if r["error"].get("code") == 404:   # deleted message
                        continue
                    raise NatsError(f"MSG.GET {reply}: {r['error']}")
                m = r["message"]
                out.append({"seq": m["seq"], "subject": m["subject"],
                            "headers": parse_headers(base64.b64decode(m.get("hdrs", ""))),
                            "data": base64.b64decode(m.get("data", "")),
                            "time": m.get("time")})   # RFC 3339, when the stream stored it
            seq = chunk[-1] + 1
        return out


def parse_headers(block):
    """{name: value} of a "NATS/1.0\\r\\nName: value\\r\\n...\\r\\n\\r\\n" block."""
    headers = {}
    for line in block.decode("utf-8", "replace").split("\r\n")[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip()] = v.strip()
    return headers


def wait_jetstream(ports, timeout=60):
    """Until the JetStream API answers (a cluster has elected its meta leader)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            c = NatsClient(ports, timeout=2)
            try:
                c.api("INFO")
                return
            finally:
                c.close()
        except (NatsError, OSError) as e:
            last = e
        time.sleep(0.2)
    raise NatsError(f"JetStream not ready after {timeout}s: {last}")
