#!/usr/bin/env python3
"""Embeds schema/*.sql into a C++ header: kSchemaMigrations[i] upgrades user_version i -> i+1."""
import sys

out, inputs = sys.argv[1], sys.argv[2:]
with open(out, "w") as f:
    f.write("// Generated from schema/*.sql by schema/embed.py. Do not edit.\n#pragma once\n")
    f.write("#include <array>\n#include <string_view>\nnamespace tailbox::outbox {\n")
    f.write("inline constexpr std::array<std::string_view, %d> kSchemaMigrations = {\n" % len(inputs))
    for path in sorted(inputs):
        text = open(path).read()
        f.write('R"tbsql(' + text + ')tbsql",\n')
    f.write("};\n}  // namespace tailbox::outbox\n")
