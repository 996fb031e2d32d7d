"""Loopback networking for tests: a free port, and the accept loop of the TCP proxies
that the chaos tests put between tailbox and a server."""

import socket
import threading
import time
import urllib.error
import urllib.request


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_server_ready(proc, port, greet, what, log_tail, timeout, connect_timeout=1.0,
                      interval=0.05):
    """Until greet(sock), on a fresh connection to 127.0.0.1:port, returns true.

    Raises RuntimeError (with log_tail()) when `proc` exits or after `timeout` s.
    A refused or failed connection (OSError) means "not yet".
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=connect_timeout) as s:
                if greet(s):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout}s:\n{log_tail()}")
        time.sleep(interval)


def http_get(url, timeout=5):
    """(status, body text) of a GET; (0, "") when nothing answers (not listening yet)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


class TcpProxy:
    """Listens on a free loopback port and connects each client to 127.0.0.1:target_port.

    Subclasses decide what flows: connected(client, server) is called on the accept
    thread for each pair (both sockets blocking) and starts the pumps.
    """

    def __init__(self, target_port):
        self.target = target_port
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            self.connected(client, server)

    def connected(self, client, server):
        raise NotImplementedError

    @staticmethod
    def shut(*socks):
        """shutdown(SHUT_RDWR) of each socket, ignoring the ones already gone."""
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
