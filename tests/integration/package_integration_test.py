#!/usr/bin/env python3
"""The Debian package, built and installed for real on this machine.

tools/package builds tailbox_<version>_amd64.deb from TAILBOX_BIN and fails unless
lintian is clean. The test checks the package's contents, installs it with
`dpkg -i`, runs the installed /usr/bin/tailbox (--version, check of the packaged
/etc/tailbox/tailbox.toml, and `run` as the tailbox user on that configuration
until a line written to /var/log arrives in the inbox), checks the tailbox system
user and /var/lib/tailbox's ownership, that a changed conffile survives a
reinstall, and that `dpkg --purge` removes everything but the system user (kept,
as Debian does). It never starts the systemd unit.

Needs root (dpkg -i); skipped (exit 77) otherwise, and on a machine where a
tailbox package is already installed. It leaves the machine as it found it: the
package purged and, if the test created them, the tailbox user and group deleted.

Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/package_integration_test.py
"""

import gzip
import grp
import os
import pwd
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import shutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SKIP = 77
CONFIG = "/etc/tailbox/tailbox.toml"
STATE = "/var/lib/tailbox"
EXPECTED_FILES = [
    "./usr/bin/tailbox",
    "./lib/systemd/system/tailbox.service",
    "./etc/tailbox/tailbox.toml",
    "./usr/share/man/man1/tailbox.1.gz",
    "./usr/share/bash-completion/completions/tailbox",
    "./usr/share/doc/tailbox/copyright",
    "./usr/share/doc/tailbox/changelog.gz",
    "./usr/share/doc/tailbox/examples/grafana-dashboard.json",
    "./usr/share/doc/tailbox/examples/prometheus-alerts.yml",
    "./usr/share/doc/tailbox/examples/tailbox.toml",
    "./usr/share/doc/tailbox/README.md.gz",
    "./usr/share/doc/tailbox/docs/configuration.md.gz",
    "./usr/share/doc/tailbox/docs/operations.md.gz",
    "./usr/share/doc/tailbox/docs/sinks/kafka.md.gz",
] + [f"./usr/lib/tailbox/sinks/tailbox-sink-{s}.so" for s in ("postgres", "http", "kafka", "nats",
                                                                "rabbitmq")]


def run(cmd, timeout=120, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if check and r.returncode != 0:
        h.fail(f"`{' '.join(cmd)}` exited {r.returncode}:\n{r.stdout}{r.stderr}")
    return r


def installed():
    r = run(["dpkg-query", "-W", "-f=${db:Status-Status}", "tailbox"], check=False)
    return r.returncode == 0 and r.stdout.strip() not in ("", "not-installed", "config-files")


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def complete(words):
    """What the installed bash completion offers for `words` (the last one being typed)."""
    script = ("source /usr/share/bash-completion/completions/tailbox\n"
              f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
              "_tailbox; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    return set(run(["bash", "-c", script]).stdout.split())


def inbox_lines(path):
    if not os.path.exists(path):
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [bytes(r[0]) if isinstance(r[0], (bytes, memoryview)) else r[0].encode()
                for r in conn.execute("SELECT line FROM inbox")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def check_contents(deb):
    listing = run(["dpkg-deb", "-c", deb]).stdout
    paths = {line.split()[5] for line in listing.splitlines()}
    missing = [p for p in EXPECTED_FILES if p not in paths]
    if missing:
        h.fail(f"the package lacks {missing}")
    conffiles = run(["dpkg-deb", "-f", deb, "Package"]).stdout.strip()
    if conffiles != "tailbox":
        h.fail(f"package name {conffiles!r}")
    with tempfile.TemporaryDirectory() as ctl:
        run(["dpkg-deb", "-e", deb, ctl])
        if open(os.path.join(ctl, "conffiles")).read().split() != [CONFIG]:
            h.fail("DEBIAN/conffiles must list exactly /etc/tailbox/tailbox.toml")


def run_installed_relay(user_uid):
    """`tailbox run` as the tailbox user on the packaged configuration, until a line
    written to a new /var/log/*.log file is in the inbox; then SIGTERM."""
    marker = f"tailbox package test line {os.getpid()} {time.time():.6f}"
    logfile = f"/var/log/tailbox-package-test-{os.getpid()}.log"
    out = open(os.path.join(tempfile.gettempdir(), f"tailbox-package-run-{os.getpid()}.log"), "w+")
    pw = pwd.getpwuid(user_uid)

    def become_tailbox():
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    proc = subprocess.Popen(["/usr/bin/tailbox", "run", "-c", CONFIG], preexec_fn=become_tailbox,
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd="/", env={"PATH": "/usr/bin:/bin", "HOME": STATE})
    try:
        def alive(what):
            if proc.poll() is not None:
                out.seek(0)
                h.fail(f"the installed tailbox exited {proc.returncode} {what}:\n{out.read()[-2000:]}")
        h.wait_until(lambda: alive("at start") or os.path.exists(f"{STATE}/outbox.db"), 30,
                     "the installed relay to create its outbox")
        with open(logfile, "w") as f:            # a file created after the start: read from byte 0
            f.write(marker + "\n")
        os.chmod(logfile, 0o644)
        h.wait_until(lambda: alive("while running") or marker.encode() in inbox_lines(f"{STATE}/inbox.db"),
                     30, "the test line to arrive in /var/lib/tailbox/inbox.db")
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=30)
        if rc != 0:
            out.seek(0)
            h.fail(f"the installed tailbox exited {rc} on SIGTERM:\n{out.read()[-2000:]}")
        for name in ("outbox.db", "inbox.db"):
            st = os.stat(f"{STATE}/{name}")
            if st.st_uid != user_uid:
                h.fail(f"{STATE}/{name} is owned by uid {st.st_uid}, not tailbox")
        if stat.S_IMODE(os.stat(f"{STATE}/outbox.db").st_mode) != 0o600:
            h.fail("the outbox is not mode 0600")
        h.log("the installed relay, as user tailbox, shipped a new /var/log line into its inbox and stopped with 0")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close()
        os.unlink(out.name)
        if os.path.exists(logfile):
            os.unlink(logfile)


def undo_install(had_user, had_group, had_state):
    """Purges the package and removes the user, group and state it made (not what was there)."""
    if installed() or run(["dpkg-query", "-W", "tailbox"], check=False).returncode == 0:
        run(["dpkg", "--purge", "tailbox"], check=False)
    if not had_user and user_exists("tailbox"):
        run(["deluser", "--system", "--quiet", "tailbox"], check=False)
    if not had_group and group_exists("tailbox"):
        run(["delgroup", "--system", "--quiet", "tailbox"], check=False)
    if not had_state and os.path.exists(STATE):
        shutil.rmtree(STATE, ignore_errors=True)


def check_installed_modules(wd):
    """The installed binary finds each network sink's module in /usr/lib/tailbox/sinks."""
    sinks = {
        "postgres": 'conninfo = "host=127.0.0.1 port=1 dbname=logs"\n',
        "http": 'url = "http://127.0.0.1:1/logs"\n',
        "kafka": 'brokers = "127.0.0.1:1"\ntopic = "logs"\n',
        "nats": 'url = "nats://127.0.0.1:1"\nstream = "LOGS"\n',
        "rabbitmq": 'port = 1\nqueue = "logs"\nqueue_type = "quorum"\npassword_env = "PW"\n',
    }
    env = {k: v for k, v in os.environ.items() if k != "TAILBOX_SINK_DIR"}
    for sink, settings in sinks.items():
        cfg = os.path.join(wd.root, f"{sink}.toml")
        with open(cfg, "w") as f:
            f.write(f'[[source]]\nname = "a"\npaths = ["{wd.logs}/*.log"]\n'
                    f'[outbox]\npath = "{wd.outbox}"\n[sink]\ntype = "{sink}"\n{settings}')
        r = run(["/usr/bin/tailbox", "check", "-c", cfg], check=False, env=env)
        if r.returncode != 0 or "is valid" not in r.stdout:
            h.fail(f"the installed tailbox cannot load its {sink} module: {r.stdout}{r.stderr}")
    h.log(f"the installed tailbox loads its {len(sinks)} sink modules from /usr/lib/tailbox/sinks")


def test():
    if os.geteuid() != 0:
        print("SKIP: installing a package needs root")
        sys.exit(SKIP)
    if installed():
        print("SKIP: a tailbox package is already installed here; not replacing it")
        sys.exit(SKIP)
    for tool in ("dpkg-deb", "lintian", "pandoc"):
        if not shutil.which(tool):
            h.fail(f"{tool} not found (tools/install-deps)")
    binary = h.tailbox_bin()
    version = run([binary, "--version"]).stdout.split()[1]
    had_user, had_group = user_exists("tailbox"), group_exists("tailbox")
    had_state = os.path.exists(STATE)
    if had_state:
        h.fail(f"{STATE} exists although no tailbox package is installed; not touching it")

    with h.case("package", None, prefix="tailbox-package-") as c:
        c.defer(undo_install, had_user, had_group, had_state)
        out = c.wd.root
        t0 = time.monotonic()
        r = run([os.path.join(h.REPO_ROOT, "tools", "package"), "--out", out], timeout=300,
                env=dict(os.environ, TAILBOX_BIN=binary))
        deb = r.stdout.strip().splitlines()[-1]
        if os.path.basename(deb) != f"tailbox_{version}_amd64.deb" or not os.path.isfile(deb):
            h.fail(f"tools/package made {deb!r}, expected tailbox_{version}_amd64.deb")
        if "lintian: clean" not in r.stderr:
            h.fail(f"tools/package did not report lintian clean:\n{r.stderr}")
        h.log(f"tools/package: {os.path.basename(deb)} built, lintian clean ({time.monotonic() - t0:.1f}s)")
        check_contents(deb)

        run(["dpkg", "-i", deb])
        if not installed():
            h.fail("dpkg -i did not leave tailbox installed")
        r = run(["/usr/bin/tailbox", "--version"])
        if r.stdout.strip() != f"tailbox {version}":
            h.fail(f"installed tailbox --version says {r.stdout.strip()!r}")
        r = run(["/usr/bin/tailbox", "check", "-c", CONFIG])
        if "is valid" not in r.stdout:
            h.fail(f"tailbox check on the packaged config: {r.stdout}")
        h.log(f"installed: {r.stdout.strip()}")
        check_installed_modules(c.wd)

        pw = pwd.getpwnam("tailbox")
        if pw.pw_uid >= 1000 or pw.pw_dir != STATE or not pw.pw_shell.endswith("nologin"):
            h.fail(f"tailbox user is not a system user with home {STATE} and no shell: {pw}")
        if grp.getgrgid(pw.pw_gid).gr_name != "tailbox":
            h.fail("the tailbox user's primary group is not tailbox")
        st = os.stat(STATE)
        if (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (pw.pw_uid, pw.pw_gid, 0o700):
            h.fail(f"{STATE}: uid {st.st_uid} gid {st.st_gid} mode {oct(st.st_mode)}, "
                   "expected tailbox:tailbox 0700")
        h.log(f"user tailbox (uid {pw.pw_uid}, system, nologin) owns {STATE} (0700)")

        with gzip.open("/usr/share/man/man1/tailbox.1.gz", "rt") as f:
            man = f.read()
        if f'.TH "TAILBOX" "1"' not in man or version not in man or "EXIT STATUS" not in man:
            h.fail("the man page lacks its title, version or EXIT STATUS section")
        r = run(["man", "-l", "/usr/share/man/man1/tailbox.1.gz"], check=False,
                env=dict(os.environ, MANPAGER="cat", MANWIDTH="80"))
        if r.returncode == 0 and "tailbox check" not in r.stdout:
            h.fail("man -l does not render the man page")
        if not {"run", "check", "status", "--help", "--version"} <= complete(["tailbox", ""]):
            h.fail(f"bash completion of subcommands: {complete(['tailbox', ''])}")
        if complete(["tailbox", "check", "--o"]) != {"--outbox"} or \
                complete(["tailbox", "status", "--j"]) != {"--json"} or \
                complete(["tailbox", "run", "--log-level", "w"]) != {"warn"}:
            h.fail("bash completion of options is wrong")
        unit = open("/lib/systemd/system/tailbox.service").read()
        for want in ("ExecStart=/usr/bin/tailbox run -c /etc/tailbox/tailbox.toml", "User=tailbox"):
            if want not in unit:
                h.fail(f"the unit lacks {want!r}")
        r = run(["systemd-analyze", "verify", "/lib/systemd/system/tailbox.service"], check=False)
        if shutil.which("systemd-analyze") and r.returncode != 0 and "tailbox.service" in r.stderr:
            h.fail(f"systemd-analyze verify: {r.stderr}")
        h.log("man page, bash completion and systemd unit installed")

        run_installed_relay(pw.pw_uid)

        with open(CONFIG, "a") as f:
            f.write("# changed by the package test\n")
        run(["dpkg", "-i", deb])
        if "# changed by the package test" not in open(CONFIG).read():
            h.fail("reinstalling replaced a changed conffile")
        h.log("a changed /etc/tailbox/tailbox.toml survives a reinstall (conffile)")

        run(["dpkg", "--purge", "tailbox"])
        for p in ("/usr/bin/tailbox", CONFIG, "/etc/tailbox", STATE, "/lib/systemd/system/tailbox.service"):
            if os.path.exists(p):
                h.fail(f"{p} is still there after dpkg --purge")
        if not user_exists("tailbox"):
            h.fail("the tailbox system user was removed on purge (Debian keeps system users)")
        h.log("dpkg --purge removed the files, the config and /var/lib/tailbox; the system user is kept")

if __name__ == "__main__":
    h.main(test, "integration_package")
