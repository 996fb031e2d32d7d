"""tailbox configuration files for tests: write_config() and a [sink] table of any type."""

import json
import os

from .env import fail
from .process import run_cli


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)   # a JSON string is a valid TOML basic string for our values
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def write_config(wd, sink="sqlite", host_id="edge1", source=None, tail=None, outbox=None,
                 delivery=None, sink_extra=None, top=None, metrics=None):
    """Writes wd.config and returns its path. Each keyword overrides/extends a table.

    The metrics endpoint is off (listen = "") unless `metrics` says otherwise: its
    default fixed port would clash between concurrent tests.
    """
    src = {"name": "app", "paths": [os.path.join(wd.logs, "*.log")], "read_from": "head"}
    src.update(source or {})
    tl = {"poll_interval": "200ms", "read_interval": "50ms"}
    tl.update(tail or {})
    ob = {"path": wd.outbox}
    ob.update(outbox or {})
    dl = {"workers": 4, "batch_rows": 1000, "linger": "20ms"}
    dl.update(delivery or {})
    if sink == "sqlite":
        sk = {"type": "sqlite", "path": wd.inbox}
    elif sink == "file":
        sk = {"type": "file", "path": wd.ndjson, "format": "ndjson"}
    else:
        raise ValueError(sink)
    sk.update(sink_extra or {})
    mt = {"listen": ""}
    mt.update(metrics or {})

    lines = [f"host_id = {_toml_value(host_id)}"]
    for k, v in (top or {}).items():
        lines.append(f"{k} = {_toml_value(v)}")
    for name, table in (("[[source]]", src), ("[tail]", tl), ("[outbox]", ob),
                        ("[delivery]", dl), ("[metrics]", mt), ("[sink]", sk)):
        lines.append("")
        lines.append(name)
        for k, v in table.items():
            lines.append(f"{k} = {_toml_value(v)}")
    with open(wd.config, "w") as f:
        f.write("\n".join(lines) + "\n")
    return wd.config



def write_sink_config(wd, sink, **kwargs):
    """write_config() with `sink` (a dict) as the [sink] table; `tailbox check` must accept it."""
    write_config(wd, **kwargs)
    with open(wd.config) as f:
        text = f.read()
    text = text[:text.index("\n[sink]\n")]
    text += "\n[sink]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in sink.items())
    with open(wd.config, "w") as f:
        f.write(text)
    r = run_cli(["check", "-c", wd.config])
    if r.returncode != 0:
        fail(f"tailbox check rejected the test config: {r.stdout}{r.stderr}")
    return r

