"""Shared helpers for tailbox's integration and chaos tests (Python 3, stdlib only).

The tests run as `python3 tests/integration/<name>.py` with TAILBOX_BIN naming the
binary (default: build/tailbox in the repository). Exit status 0 means pass; a
failure prints its reason, the case and its seed, the work directory and the end
of each tailbox log.

  env       failures, log(), the binary, seeds, Workdir, wait_until
  case      case(name, seed): one case's work directory, processes and failure report;
            run_cases(), main()
  config    write_config(), write_sink_config()
  process   Tailbox (one `tailbox run`), run_cli(), status_json(), stop_clean()
  outbox    SQL on the outbox and the sqlite sink's inbox; the schema from schema/*.sql
  checks    Rec, reading destinations, expected_from_files(), check_exact()
  workload  make_line(), SourceFiles, Writer
  net       free_port(), TcpProxy

Everything is re-exported here: `import harness as h; h.Tailbox(...)`.

Environment:
  TAILBOX_BIN   the tailbox binary
  TAILBOX_SEED  seed for the tests that use randomness (default: a random one, printed)
  TAILBOX_CASE  run only the case of this name (tests made of named cases)
  TAILBOX_KEEP  "1": keep the temporary directory even when the test passes
"""

from .env import (MAX_LINE_BYTES, REPO_ROOT, TestFailure, Workdir, fail, log,
                  seed_from_env, tail_of_file, tailbox_bin, wait_until)
from .config import _toml_value, write_config, write_sink_config
from .process import (Tailbox, proc_status_kib, run_cli, status_json, stop_clean,
                      stop_summary)
from .outbox import (SCHEMA_DIR, InboxLock, caught_up, caught_up_reading, create_outbox_schema,
                     dead_rows, inbox_count, outbox_count, outbox_states, pending_rows,
                     schema_files, sqlite_connect)
from .checks import (INBOX_TYPES, NewlineCounter, Rec, check_exact,
                     expected_from_files, inbox_type_problems, read_inbox, read_ndjson,
                     rec_from_ndjson)
from .workload import _WORDS, SourceFiles, Writer, _write_all, make_line
from .net import TcpProxy, free_port, http_get, wait_server_ready
from .case import Case, case, case_workdir, main, report_failure_context, run_cases, selected

__all__ = [
    "Case",
    "INBOX_TYPES",
    "MAX_LINE_BYTES",
    "NewlineCounter",
    "REPO_ROOT",
    "Rec",
    "SCHEMA_DIR",
    "SourceFiles",
    "Tailbox",
    "TcpProxy",
    "TestFailure",
    "Workdir",
    "Writer",
    "_WORDS",
    "_toml_value",
    "_write_all",
    "case",
    "case_workdir",
    "caught_up",
    "caught_up_reading",
    "check_exact",
    "create_outbox_schema",
    "dead_rows",
    "expected_from_files",
    "fail",
    "free_port",
    "inbox_count",
    "InboxLock",
    "http_get",
    "inbox_type_problems",
    "log",
    "main",
    "make_line",
    "outbox_count",
    "outbox_states",
    "pending_rows",
    "proc_status_kib",
    "read_inbox",
    "read_ndjson",
    "rec_from_ndjson",
    "report_failure_context",
    "run_cases",
    "run_cli",
    "schema_files",
    "seed_from_env",
    "selected",
    "sqlite_connect",
    "status_json",
    "stop_clean",
    "stop_summary",
    "tail_of_file",
    "tailbox_bin",
    "wait_server_ready",
    "wait_until",
    "write_config",
    "write_sink_config",
]
