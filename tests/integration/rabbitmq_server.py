"""A throwaway rabbitmq-server for tailbox's tests (Python 3, stdlib only).

    with RabbitServer() as rs:      # own node name, ports, data dir, cookie, epmd
        rs.port                     # AMQP on 127.0.0.1
        rs.stop(); rs.start()       # an outage; the data dir is kept

Everything the node writes lives under its own directory: RABBITMQ_MNESIA_BASE
(data, stream segments), RABBITMQ_LOG_BASE, HOME (the Erlang cookie). It listens
on 127.0.0.1 only: AMQP on a free port (RABBITMQ_NODE_PORT), the Erlang
distribution on another (RABBITMQ_DIST_PORT), and runs its own epmd on a third
(ERL_EPMD_PORT), so it never meets a system RabbitMQ or another test's node.
/etc/rabbitmq is not read (RABBITMQ_CONF_ENV_FILE and RABBITMQ_CONFIG_FILE point
into the directory). Started through /usr/lib/rabbitmq/bin/rabbitmq-server, not
the Debian wrapper in /usr/sbin (which switches to the rabbitmq user).

Readiness: the AMQP port answers the protocol header with connection.start.
Booting takes ~10 s on 2 busy cores (start_seconds is measured each time).

When rabbitmq-server is missing, require_rabbitmq_server() prints why and
exits 1 under CI=true (tools/install-deps installs it), 77 (skip) otherwise.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from harness import free_port, wait_server_ready

SKIP = 77
BINARY = os.environ.get("TAILBOX_RABBITMQ_SERVER", "/usr/lib/rabbitmq/bin/rabbitmq-server")


def require_rabbitmq_server():
    if not os.access(BINARY, os.X_OK):
        print(f"SKIP: {BINARY} not found (install the Debian package rabbitmq-server)", flush=True)
        sys.exit(1 if os.environ.get("CI") == "true" else SKIP)


class RabbitServer:
    def __init__(self, name="tailbox-test"):
        self.root = os.path.realpath(tempfile.mkdtemp(prefix="tailbox-rabbitmq-", dir="/tmp"))
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.nodename = f"{name}@localhost"
        self.logfile = os.path.join(self.root, "server.out")
        self.proc = None
        self.logf = None
        self.start_seconds = None
        with open(os.path.join(self.root, "rabbitmq.conf"), "w") as f:
            f.write("listeners.tcp.1 = 127.0.0.1:%d\n" % self.port)
            f.write("loopback_users.guest = true\n")
            f.write("log.console = false\nlog.file.level = info\n")
            # The disk alarm would block publishers on a nearly full /tmp.
            f.write("disk_free_limit.absolute = 50MB\n")
        with open(os.path.join(self.root, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        with open(os.path.join(self.root, "rabbitmq-env.conf"), "w") as f:
            f.write("")
        home = os.path.join(self.root, "home")
        os.makedirs(home, exist_ok=True)
        cookie = os.path.join(home, ".erlang.cookie")
        with open(cookie, "w") as f:
            f.write("TAILBOXTESTCOOKIE")
        os.chmod(cookie, 0o400)

    def env(self):
        e = dict(os.environ)
        e.update({
            "HOME": os.path.join(self.root, "home"),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # Lets `epmd -kill` end it while the killed node is still registered.
            "ERL_EPMD_RELAXED_COMMAND_CHECK": "1",
            "RABBITMQ_MNESIA_BASE": os.path.join(self.root, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.root, "log"),
            "RABBITMQ_CONFIG_FILE": os.path.join(self.root, "rabbitmq"),
            "RABBITMQ_CONF_ENV_FILE": os.path.join(self.root, "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.root, "enabled_plugins"),
            "RABBITMQ_PID_FILE": os.path.join(self.root, "server.pid"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(self.root, "advanced.config"),
        })
        return e

    @property
    def url(self):
        return f"amqp://127.0.0.1:{self.port}"

    def start(self, wait=True, timeout=120):
        if self.running():
            raise RuntimeError("rabbitmq-server started twice")
        if self.logf is None:
            self.logf = open(self.logfile, "ab", buffering=0)
        self.logf.write(f"===== start at {time.time():.3f} =====\n".encode())
        t0 = time.monotonic()
        self.proc = subprocess.Popen([BINARY], env=self.env(), cwd=self.root,
                                     stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_ready(timeout)
            self.start_seconds = time.monotonic() - t0
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=120):
        """Until the AMQP listener answers the protocol header with a frame."""
        def greet(s):
            s.sendall(b"AMQP\x00\x00\x09\x01")
            return s.recv(7)[:1] == b"\x01"    # a method frame: connection.start
        wait_server_ready(self.proc, self.port, greet, "rabbitmq-server", self.log_tail, timeout,
                          connect_timeout=2, interval=0.2)

    def _group_signal(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout=60):
        """SIGTERM to the node (a clean shutdown), then its epmd."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill9()

    def kill9(self):
        """SIGKILL to the node's process group (beam, erl_child_setup). Its
        epmd daemonized itself out of the group: kill_epmd() ends it."""
        if self.proc is not None:
            self._group_signal(signal.SIGKILL)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass

    def kill_epmd(self):
        """Ends the epmd of our port (ours alone: no other node uses it). It
        daemonized itself out of the node's process group, so kill9() misses it."""
        epmd = shutil.which("epmd")
        if not epmd:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], env=self.env(),
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=20, check=False)
            out = r.stdout + r.stderr
            if "Killed" in out or "Cannot connect" in out:
                return
            time.sleep(0.2)

    def log_tail(self, lines=30):
        out = []
        for path in (self.logfile, os.path.join(self.root, "log", f"{self.nodename}.log")):
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "replace").splitlines()[-lines:]
                out.append(f"--- {path} ---\n" + "\n".join(text))
            except OSError:
                pass
        return "\n".join(out) or "(no log)"

    def cleanup(self, keep=False):
        try:
            self.kill9()
            self.kill_epmd()
        finally:
            if self.logf is not None:
                self.logf.close()
                self.logf = None
            if not keep:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup(keep=os.environ.get("TAILBOX_KEEP") == "1")


if __name__ == "__main__":
    # Measures a start: python3 rabbitmq_server.py
    require_rabbitmq_server()
    with RabbitServer() as rs:
        print(f"ready on {rs.url} after {rs.start_seconds:.1f}s ({rs.root})", flush=True)
        if len(sys.argv) > 1:
            time.sleep(float(sys.argv[1]))
