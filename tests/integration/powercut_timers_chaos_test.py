#!/usr/bin/env python3
"""Power-cut chaos with timer-flushed records, into the sqlite inbox.

Like powercut_local_chaos_test.py (tailbox under the power-cut shim, seeded
kill -9 + rollback of every undurable write, restart), but the records are
cut by timers, so where a record ends depends on when tailbox read the file:

  partial    [[source]] partial_line_timeout = "300ms"; writers sometimes
             write a line in two pieces with 0.6 s between them: the first
             piece is flushed as a record of its own, the rest follows as
             another record.
  multiline  multiline.start_pattern = "^EVT ", multiline.timeout = "300ms";
             writers write events (a start line and 0-6 "  at frame" lines),
             sometimes the start line, then 0.6 s, then the continuation
             lines: the start line is flushed alone.

Each runs with [outbox] synchronous = "normal" (the default) and "full". The
check is line by line (event by event) on the exact bytes: the records whose
offsets fall in a line's byte range must make up its bytes exactly (one
record, or the pieces in order). It is not enough that the line's key is
present: after a cut has rolled back the outbox, the file is read again and
the same offset can come out as a longer record (the whole line); if the
destination already holds the first, shorter record under that key it drops
the longer one, and the rest of the line is lost. The check reports that as
"records do not make up their bytes exactly".

Usage: TAILBOX_BIN=build/tailbox POWERCUT_SHIM=build/tests/powercut_shim.so \
       python3 tests/integration/powercut_timers_chaos_test.py partial|multiline
TAILBOX_CASE=partial_normal (etc.) runs one scenario; TAILBOX_SEED, POWERCUT_CUTS.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import powercut_chaos as pcc  # noqa: E402

TIMEOUT, PAUSE = "300ms", 0.6


def scenario(kind, sync):
    multiline = kind == "multiline"
    source = ({"multiline.start_pattern": "^EVT ", "multiline.timeout": TIMEOUT} if multiline
              else {"partial_line_timeout": TIMEOUT})

    def configure(wd):
        h.write_config(wd, sink="sqlite", host_id=pcc.HOST, source=source,
                       outbox={"synchronous": sync}, delivery={"workers": 2, "linger": "20ms"})

    def writers(wd, rng):
        return [pcc.LogWriter(wd, name, rng.randrange(1 << 30), style=kind, rate=400,
                              p_special=0.3, pause=PAUSE, line=pcc.simple_line)
                for name in ("a.log", "b.log", "c.log")]

    def check(wd, delivered):
        return pcc.check_tiling(wd, delivered, multiline, f"inbox ({kind}, {sync})")

    return pcc.Scenario(f"{kind}_{sync}", configure, writers, pcc.read_inbox, check=check,
                        cuts=8, gap=(0.3, 1.5))


def test():
    kinds = sys.argv[1:] or ["partial", "multiline"]
    for k in kinds:
        if k not in ("partial", "multiline"):
            h.fail(f"unknown scenario kind {k!r} (partial or multiline)")
    pcc.run_scenarios([scenario(k, s) for k in kinds for s in ("normal", "full")],
                      "powercut_timers")


if __name__ == "__main__":
    h.main(test, "powercut_timers_chaos_test " + " ".join(sys.argv[1:]))
