"""A throwaway PostgreSQL 15 server for tailbox's tests and tools/bench-postgres.

    with PgServer() as pg:          # initdb + start on 127.0.0.1, a free port
        pg.psql("CREATE DATABASE t")
        pg.stop(); pg.start()       # an outage in the middle of a test

The cluster lives in a fresh temporary directory owned by the `postgres` OS
user (PostgreSQL refuses to run as root); the server listens on 127.0.0.1 only,
on TAILBOX_PG_PORT or a free port, with its Unix socket in the same temporary
directory, and with fsync off (speed; the tests kill tailbox, not the server).
Authentication: trust for everyone, except the role PASSWORD_USER, which
must log in over TCP with its password (scram-sha-256).

When the PostgreSQL 15 binaries (Debian: postgresql-15) or the `postgres` user
are missing, require_postgres() prints why and exits 77, which meson counts as
a skipped test.
"""

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

from harness import free_port

BIN = os.environ.get("TAILBOX_PG_BIN", "/usr/lib/postgresql/15/bin")
PASSWORD_USER = "tailbox_pw"
SKIP = 77


def missing():
    """Why a server cannot be started here, or None."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not os.access(os.path.join(BIN, tool), os.X_OK):
            return f"{os.path.join(BIN, tool)} not found (install postgresql-15)"
    if shutil.which("psql") is None:
        return "psql not found (install postgresql-client-15)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no `postgres` OS user to run the server as (install postgresql-15)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser not found (util-linux)"
    return None


def require_postgres():
    why = missing()
    if why:
        print(f"SKIP: cannot start a PostgreSQL 15 server: {why}", flush=True)
        # In CI the server is installed by tools/install-deps: missing is a failure.
        sys.exit(1 if os.environ.get("CI") == "true" else SKIP)


class PgServer:
    def __init__(self, port=None, extra_settings=None, fsync=False):
        self.port = int(port or os.environ.get("TAILBOX_PG_PORT") or free_port())
        self.root = os.path.realpath(tempfile.mkdtemp(prefix="tailbox-pg-", dir="/tmp"))
        self.data = os.path.join(self.root, "data")
        self.sockdir = self.root
        self.logfile = os.path.join(self.root, "server.log")
        self.settings = {"listen_addresses": "127.0.0.1", "fsync": "on" if fsync else "off",
                         "full_page_writes": "off" if not fsync else "on",
                         "max_connections": "50", "shared_buffers": "128MB"}
        self.settings.update(extra_settings or {})
        self.running = False
        pw = pwd.getpwnam("postgres")
        self._uid, self._gid = pw.pw_uid, pw.pw_gid
        os.chown(self.root, self._uid, self._gid)
        os.chmod(self.root, 0o700)

    # -- running as the postgres user -------------------------------------
    def _as_postgres(self, args, timeout=120, check=True):
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout, cwd="/")
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {r.returncode}:\n{r.stdout}{r.stderr}"
                               f"\n{self.server_log_tail()}")
        return r

    def init(self):
        self._as_postgres([os.path.join(BIN, "initdb"), "-D", self.data, "-A", "trust",
                           "-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"])
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("# written by tests/integration/pg_server.py\n"
                    "local all all trust\n"
                    f"host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n"
                    "host all all 127.0.0.1/32 trust\n")
        return self

    def start(self, timeout=60):
        opts = f"-p {self.port} -k {self.sockdir} " + " ".join(
            f"-c {k}={v}" for k, v in self.settings.items())
        self._as_postgres([os.path.join(BIN, "pg_ctl"), "-D", self.data, "-l", self.logfile,
                           "-o", opts, "-w", "-t", str(timeout), "start"], timeout=timeout + 30)
        self.running = True
        return self

    def stop(self, mode="fast"):
        if not self.running:
            return
        self._as_postgres([os.path.join(BIN, "pg_ctl"), "-D", self.data, "-m", mode, "-w",
                           "-t", "60", "stop"], timeout=90, check=False)
        self.running = False

    def cleanup(self, keep=False):
        try:
            self.stop("immediate")
        finally:
            if not keep:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        self.init().start()
        return self

    def __exit__(self, exc_type, *_):
        self.cleanup(keep=exc_type is not None and os.environ.get("TAILBOX_KEEP") == "1")
        return False

    def pids(self):
        """The postmaster's pid and its children's (backends, checkpointer...)."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            master = int(f.readline())
        out = [master]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        stat = f.read()
                    if int(stat[stat.rindex(")") + 2:].split()[1]) == master:
                        out.append(int(entry))
                except (OSError, ValueError):
                    pass
        return out

    # -- clients -----------------------------------------------------------
    def conninfo(self, dbname="postgres", user="postgres"):
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"

    def psql(self, sql, dbname="postgres", timeout=120, binary=False):
        """Runs sql with psql (unaligned, tuples only, \\x1f between fields, \\x1e
        between rows); returns stdout (bytes with binary=True). Raises on error."""
        cmd = ["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
               "-d", dbname, "-At", "-F", "\x1f", "-R", "\x1e", "-v", "ON_ERROR_STOP=1",
               "-c", sql]
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                           env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
        if r.returncode != 0:
            raise RuntimeError(f"psql failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
        return r.stdout if binary else r.stdout.decode("utf-8", "replace")

    def rows(self, sql, dbname="postgres"):
        """The result of sql as a list of tuples of strings."""
        out = self.psql(sql, dbname)
        if out.endswith("\n"):
            out = out[:-1]
        return [tuple(r.split("\x1f")) for r in out.split("\x1e") if r != ""]

    def scalar(self, sql, dbname="postgres"):
        return self.psql(sql, dbname).strip()

    def server_log_tail(self, lines=30):
        try:
            with open(self.logfile, "rb") as f:
                text = f.read()[-32768:].decode("utf-8", "replace")
            return "\n".join(text.splitlines()[-lines:])
        except OSError:
            return "(no server log)"


if __name__ == "__main__":
    # Manual use: start a server and wait (Ctrl-C stops and removes it).
    require_postgres()
    with PgServer() as pg:
        print(f"PostgreSQL on 127.0.0.1:{pg.port}, data in {pg.data}; "
              f"psql -h 127.0.0.1 -p {pg.port} -U postgres", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
