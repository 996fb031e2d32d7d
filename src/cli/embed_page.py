#!/usr/bin/env python3
"""Embeds status_page.html into a C++ header, with the Content-Security-Policy
that allows exactly its one inline <style> and one inline <script> (by SHA-256)
and nothing from elsewhere.

Usage: embed_page.py OUTPUT.hpp status_page.html
"""
import base64
import hashlib
import re
import sys

out, page = sys.argv[1], sys.argv[2]
html = open(page, encoding="utf-8").read()
if ")tbhtml\"" in html:
    sys.exit(f"{page}: contains the raw string's terminator")


def inline_hashes(tag):
    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
    if len(bodies) != 1:
        sys.exit(f"{page}: expected one inline <{tag}>, found {len(bodies)}")
    digest = hashlib.sha256(bodies[0].encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


if re.search(r"<(script|link|img|iframe)[^>]*\s(src|href)=", html, flags=re.I):
    sys.exit(f"{page}: loads an external resource; the page must be self-contained")
csp = ("default-src 'none'; script-src " + inline_hashes("script") + "; style-src " +
       inline_hashes("style") + "; connect-src 'self'; img-src 'self'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
with open(out, "w", encoding="utf-8") as f:
    f.write("// Generated from src/cli/status_page.html by src/cli/embed_page.py. Do not edit.\n")
    f.write("#pragma once\n#include <string_view>\nnamespace tailbox::cli {\n")
    f.write('inline constexpr std::string_view kStatusPageHtml = R"tbhtml(' + html + ')tbhtml";\n')
    f.write('inline constexpr std::string_view kStatusPageCsp = "' + csp + '";\n')
    f.write("}  // namespace tailbox::cli\n")
