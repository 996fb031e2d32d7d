#!/usr/bin/env python3
"""Writes the linker's --dynamic-list for the tailbox binary: the symbols the
sink modules use or define (nm -D), the only ones of its own that the binary
exports. A module's references to tailbox's code and to the template statics
it shares with the binary (Boost.Asio's service ids and call stacks) then bind
to the binary's copies, and the dynamic loader does not page in a symbol
table of every function in the binary (export_dynamic: ~230 KiB more RSS).

Usage: dynamic_list.py OUTPUT MODULE.so...
"""

import subprocess
import sys


def main():
    out, modules = sys.argv[1], sys.argv[2:]
    names = set()
    for m in modules:
        listing = subprocess.run(["nm", "-D", m], capture_output=True, text=True, check=True).stdout
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) >= 2:
                names.add(fields[-1].split("@", 1)[0])
    with open(out, "w") as f:
        f.write("{\n")
        for n in sorted(names):
            f.write(f'  "{n}";\n')
        f.write("};\n")


if __name__ == "__main__":
    main()
