#!/usr/bin/env python3
"""The network sinks are modules, loaded only when configured: real binary, real
files, real processes, /proc/PID/maps read.

  file_and_sqlite_map_no_network_library
      A relay delivering to the file sink, then to the sqlite inbox, maps none of
      libpq, librdkafka, libnats, librabbitmq, libcurl, OpenSSL, GnuTLS, Kerberos
      or LDAP, and no sink module (before the change, the binary linked them all).
  postgres_loads_its_module
      With a postgres sink (nothing listening on its port) the relay maps
      tailbox-sink-postgres.so and libpq, not the other modules, and says it
      cannot connect; `tailbox check` accepts the config.
  missing_module_is_a_config_error
      TAILBOX_SINK_DIR naming an empty directory: `tailbox check`, `tailbox run`
      and `tailbox audit` exit 2 and name the sink type and the module file.
  broken_modules_are_config_errors
      Modules made here with cc: one that needs a library that is not installed
      (the message names the library and the Debian package for libpq), one not a
      shared object, one built for another ABI: each exit 2 with the sink type and
      the file named, never a crash.

Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/sink_modules_integration_test.py
"""

import os
import random
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

NETWORK_LIBS = ("libpq.so", "librdkafka.so", "libnats.so", "librabbitmq.so", "libcurl.so",
                "libssl.so", "libcrypto.so", "libgnutls.so", "libkrb5.so", "libldap",
                "tailbox-sink-")


def mapped_files(pid):
    """The basenames of the files mapped into process `pid`."""
    names = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                names.add(os.path.basename(parts[5].strip()))
    return names


def network_mapped(pid):
    return sorted(n for n in mapped_files(pid) if any(n.startswith(p) for p in NETWORK_LIBS))


def postgres_sink(port):
    return {"type": "postgres", "conninfo": f"host=127.0.0.1 port={port} dbname=logs user=tailbox "
                                            "connect_timeout=2"}


def file_and_sqlite_map_no_network_library(c):
    wd = c.wd
    w = h.Writer(wd, random.Random(3), files=("a.log",))
    for sink in ("file", "sqlite"):
        h.write_config(wd, sink=sink)
        w.spread(500, 1)
        tb = c.tailbox()
        tb.start()
        h.wait_until(lambda: h.caught_up(wd, w.paths), 60, f"lines delivered to the {sink} sink",
                     tailbox=tb)
        found = network_mapped(tb.pid)
        if found:
            h.fail(f"the relay with a {sink} sink maps network sink libraries: {', '.join(found)}")
        h.log(f"{sink} sink: {len(mapped_files(tb.pid))} files mapped, none of a network sink")
        h.stop_clean(tb)
        tb.close()
    w.close()


def postgres_loads_its_module(c):
    wd = c.wd
    port = h.free_port()
    h.write_sink_config(wd, postgres_sink(port))
    w = h.Writer(wd, random.Random(5), files=("a.log",))
    w.spread(50, 1)
    tb = c.tailbox()
    tb.start()
    h.wait_until(lambda: "cannot open postgres:" in open(wd.tailbox_log, errors="replace").read(),
                 30, "the relay saying it cannot connect to PostgreSQL", tailbox=tb)
    tb.assert_alive("while PostgreSQL is unreachable")
    found = network_mapped(tb.pid)
    if "tailbox-sink-postgres.so" not in found or not any(n.startswith("libpq.so") for n in found):
        h.fail(f"the postgres sink's module and libpq are not mapped: {found}")
    others = [n for n in found if n.startswith(("tailbox-sink-", "librdkafka", "libnats",
                                                "librabbitmq"))
              and n != "tailbox-sink-postgres.so"]
    if others:
        h.fail(f"a postgres relay maps other sinks' modules or libraries: {others}")
    h.log(f"postgres sink: mapped {found}")
    tb.stop()
    tb.close()
    w.close()


def expect_config_error(args, env, wants, what):
    r = subprocess.run([h.tailbox_bin()] + args, capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=30)
    out = r.stdout + r.stderr
    if r.returncode != 2:
        h.fail(f"{what}: `tailbox {' '.join(args)}` exited {r.returncode}, not 2: {out.strip()}")
    for want in wants:
        if want not in out:
            h.fail(f"{what}: the message does not say {want!r}: {out.strip()}")
    h.log(f"{what}: exit 2: {out.strip().splitlines()[-1]}")


def missing_module_is_a_config_error(c):
    wd = c.wd
    h.write_sink_config(wd, postgres_sink(h.free_port()))
    empty = os.path.join(wd.root, "no-modules")
    os.mkdir(empty)
    env = dict(os.environ, TAILBOX_SINK_DIR=empty)
    wants = ['sink "postgres"', "tailbox-sink-postgres.so", empty]
    for args in (["check", "-c", wd.config], ["run", "-c", wd.config],
                 ["audit", "-c", wd.config]):
        expect_config_error(args, env, wants, f"no module ({args[0]})")


def cc(args, what):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        h.fail("no C compiler (cc) to build the test's modules")
    r = subprocess.run([compiler] + args, capture_output=True, text=True)
    if r.returncode != 0:
        h.fail(f"cc could not build {what}: {r.stderr}")


def broken_modules_are_config_errors(c):
    wd = c.wd
    h.write_sink_config(wd, postgres_sink(h.free_port()))
    build = tempfile.mkdtemp(dir=wd.root)
    mods = os.path.join(wd.root, "mods")
    os.mkdir(mods)
    module = os.path.join(mods, "tailbox-sink-postgres.so")
    env = dict(os.environ, TAILBOX_SINK_DIR=mods)

    # 1. It needs libpq.so.404, which is nowhere.
    src = os.path.join(build, "dep.c")
    with open(src, "w") as f:
        f.write("int tailbox_test_dep(void) { return 1; }\n")
    dep = os.path.join(build, "libpq.so.404")
    cc(["-shared", "-fPIC", "-Wl,-soname,libpq.so.404", "-o", dep, src], "a library")
    src = os.path.join(build, "mod.c")
    with open(src, "w") as f:
        f.write("int tailbox_test_dep(void);\nint tailbox_test_use(void) { return tailbox_test_dep(); }\n")
    cc(["-shared", "-fPIC", "-o", module, src, dep], "a module needing it")
    os.unlink(dep)
    expect_config_error(["check", "-c", wd.config], env,
                        ['sink "postgres"', module, "libpq.so.404", "libpq5"],
                        "a module whose library is missing")

    # 2. Not a shared object at all.
    with open(module, "w") as f:
        f.write("not an ELF file\n")
    expect_config_error(["run", "-c", wd.config], env, ['sink "postgres"', module],
                        "a module that is not a shared object")

    # 3. A module of another build: same entry point, another ABI number.
    with open(src, "w") as f:
        f.write("struct m { unsigned abi; const char* version; const char* type; void* a; void* b; };\n"
                "static const struct m table = {999, \"0.0.0\", \"postgres\", 0, 0};\n"
                "const struct m* tailbox_sink_module_v1(void) { return &table; }\n")
    cc(["-shared", "-fPIC", "-o", module, src], "a module of another ABI")
    expect_config_error(["check", "-c", wd.config], env,
                        ['sink "postgres"', module, "another tailbox"],
                        "a module of another build")


CASES = [file_and_sqlite_map_no_network_library, postgres_loads_its_module,
         missing_module_is_a_config_error, broken_modules_are_config_errors]


def test():
    for fn in CASES:
        if not h.selected(fn.__name__):
            continue
        with h.case(fn.__name__, None, prefix="tailbox-modules-") as c:
            fn(c)


if __name__ == "__main__":
    h.main(test, "sink_modules_integration_test")
