#!/usr/bin/env python3
"""Reload (SIGHUP and --watch-config) never loses or repeats a line.

One real relay (sqlite inbox) runs through a series of configuration changes
while lines are written to its files between them. Each accepted change
reloads in place (same pid: the binary executes itself again and resumes from
the outbox's checkpoints); each refused one leaves the running relay as it was.
At the end the inbox must hold every line of every file exactly once.
Changes: a source added; a source renamed; globs narrowed (a file dropped, its
position kept) and widened again (resumed, not read again); a sink setting;
delivery settings; an invalid file (refused, reason logged, still delivering);
an unchanged file (nothing done); and the same through --watch-config.
Usage: TAILBOX_BIN=build/tailbox python3 tests/integration/reload_integration_test.py
"""

import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HOST = "edge1"


def configure(wd, sources, sink_extra=None, delivery=None, garbage=False):
    """Writes the config with `sources` ([(name, [globs])]) as [[source]] tables."""
    first_name, first_globs = sources[0]
    h.write_config(wd, host_id=HOST, source={"name": first_name, "paths": first_globs},
                   sink_extra=sink_extra, delivery=delivery,
                   tail={"poll_interval": "200ms", "read_interval": "50ms"})
    with open(wd.config) as f:
        text = f.read()
    extra = ""
    for name, globs in sources[1:]:
        extra += (f"\n[[source]]\nname = \"{name}\"\npaths = [" +
                  ", ".join(f"\"{g}\"" for g in globs) + "]\nread_from = \"head\"\n")
    text += extra   # more [[source]] tables: TOML takes them after the other tables too
    if garbage:
        text = "this is = not toml ]]]\n" + text
    with open(wd.config, "w") as f:
        f.write(text)


def reloads(wd):
    with open(wd.tailbox_log, errors="replace") as f:
        return f.read().count("started again (reload)")


def test():
    seed = h.seed_from_env()
    rng = random.Random(seed)
    with h.case("reload", seed, prefix="tailbox-reload-") as c:
        wd = c.wd
        logs = wd.logs
        g_log, g_txt, g_a = (os.path.join(logs, "*.log"), os.path.join(logs, "*.txt"),
                             os.path.join(logs, "a.log"))
        configure(wd, [("app", [g_log])])
        w = h.Writer(wd, rng, files=("a.log", "b.log", "c.txt"))
        w.spread(600, 6)
        tb = c.tailbox()
        tb.start()
        pid = tb.pid
        read = [w.paths[0], w.paths[1]]
        h.wait_until(lambda: h.caught_up(wd, read), 30, "the .log files read", tailbox=tb)

        def change(what, expect_reload=True, **kwargs):
            before = reloads(wd)
            configure(wd, **kwargs)
            os.kill(tb.pid, signal.SIGHUP)
            if expect_reload:
                h.wait_until(lambda: reloads(wd) == before + 1, 30, f"the reload ({what})",
                             tailbox=tb)
            w.spread(300, 3)
            h.log(f"{what}: {'reloaded' if expect_reload else 'not reloaded'}")

        change("a source added (*.txt)", sources=[("app", [g_log]), ("extra", [g_txt])])
        read = list(w.paths)
        h.wait_until(lambda: h.caught_up(wd, read), 30, "every file read", tailbox=tb)
        change("a source renamed (app -> web)", sources=[("web", [g_log]), ("extra", [g_txt])])
        h.wait_until(lambda: h.caught_up(wd, read), 30, "every file read after the rename",
                     tailbox=tb)
        change("globs narrowed (b.log dropped)", sources=[("web", [g_a]), ("extra", [g_txt])])
        time.sleep(1)
        change("globs widened (b.log back)", sources=[("web", [g_log]), ("extra", [g_txt])])
        h.wait_until(lambda: h.caught_up(wd, read), 30, "b.log resumed", tailbox=tb)
        change("a sink setting (synchronous = normal)",
               sources=[("web", [g_log]), ("extra", [g_txt])], sink_extra={"synchronous": "normal"})
        change("delivery settings (2 workers, batches of 50)",
               sources=[("web", [g_log]), ("extra", [g_txt])], sink_extra={"synchronous": "normal"},
               delivery={"workers": 2, "batch_rows": 50})
        h.wait_until(lambda: h.caught_up(wd, read), 30, "every file read", tailbox=tb)

        # Refused: the relay goes on as it was and says why.
        before = reloads(wd)
        change("an invalid file", expect_reload=False, garbage=True,
               sources=[("web", [g_log]), ("extra", [g_txt])])
        h.wait_until(lambda: "the new configuration is refused" in open(wd.tailbox_log).read(),
                     10, "the refusal in the log", tailbox=tb)
        h.wait_until(lambda: h.caught_up(wd, read), 30, "lines written after the refusal",
                     tailbox=tb)
        if reloads(wd) != before:
            h.fail("an invalid configuration was applied")
        # The running configuration's file back: unchanged, nothing to do.
        configure(wd, sources=[("web", [g_log]), ("extra", [g_txt])],
                  sink_extra={"synchronous": "normal"}, delivery={"workers": 2, "batch_rows": 50})
        os.kill(tb.pid, signal.SIGHUP)
        h.wait_until(lambda: "unchanged; nothing to reload" in open(wd.tailbox_log).read(), 10,
                     "the running configuration's file left alone", tailbox=tb)
        if reloads(wd) != before:
            h.fail("an unchanged configuration was reloaded")
        if tb.pid != pid:
            h.fail("the pid changed across reloads")
        h.stop_clean(tb)

        # --watch-config: a change of the file is enough.
        tb = c.tailbox(run_args=["--watch-config"])
        tb.start()
        h.wait_until(lambda: open(wd.tailbox_log).read().count(" starting: ") == 2, 30,
                     "tailbox started with --watch-config", tailbox=tb)
        h.wait_until(lambda: h.caught_up(wd, read), 30, "every file read (watching)", tailbox=tb)
        before = reloads(wd)
        configure(wd, sources=[("web", [g_log]), ("extra", [g_txt])])
        h.wait_until(lambda: reloads(wd) == before + 1, 30, "the reload on a file change",
                     tailbox=tb)
        w.spread(300, 3)
        h.wait_until(lambda: h.caught_up(wd, read), 30, "every file read at the end", tailbox=tb)
        h.stop_clean(tb)
        w.close()
        summary = h.check_exact(h.expected_from_files(read), h.read_inbox(wd.inbox),
                                host_id=HOST, label="inbox after the reloads")
        h.log(summary)


if __name__ == "__main__":
    h.main(test, "reload_integration_test")
