#!/usr/bin/env python3
"""docs_links: the documentation's links resolve, and the front page's set-up
commands are still the ones CI and reviewers run.

Checks, for README.md and every docs/**/*.md:
  - every relative link or image, [text](path) or [text](path#anchor), names a file
    or directory that exists in the repository;
  - every #anchor (on its own, or after a .md path) is the GitHub slug of a heading
    of that file (headings inside fenced code blocks do not count);
  - README.md's "Set-up on a fresh Debian 12 machine" section holds, byte for byte,
    the two commands it held when the docs were split (SETUP_COMMANDS below), and the
    command .ci/run executes is one of them.
Links to other sites (http:, https:, mailto:) are not followed: tests run offline.

Before checking the repository, the checker is run on a small tree with one broken
link, one broken anchor and one good link of each kind, and must find exactly the
broken ones: a checker that finds nothing fails.

Usage: docs_links_test.py [REPO_ROOT]   (default: two directories above this file)
"""
import os
import re
import sys
import tempfile

# The front page's set-up commands, as on main when the README was split into docs/
# (commit ea45233). CI (.ci/run) runs the second; reviewers run both on a fresh machine.
SETUP_COMMANDS = [
    "./tools/install-deps && ./tools/demo",
    "./tools/install-deps && ./tools/test",
]
SETUP_HEADING = "## Set-up on a fresh Debian 12 machine"

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def strip_code_spans(line):
    return CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)


def prose_lines(text):
    """(line number, line) for lines outside fenced code blocks."""
    fenced = False
    for n, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield n, line


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = heading.strip()
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)   # a link's text only
    text = text.replace("`", "")
    text = re.sub(r"<[^>]+>", "", text)                        # inline HTML
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)                       # punctuation goes; _ and - stay
    return text.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        seen, result = {}, set()
        with open(path, encoding="utf-8") as f:
            for _, line in prose_lines(f.read()):
                m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
                if not m:
                    continue
                base = slug(m.group(2))
                k = seen.get(base, 0)
                seen[base] = k + 1
                result.add(base if k == 0 else f"{base}-{k}")
        cache[path] = result
    return cache[path]


def doc_files(root):
    files = [os.path.join(root, "README.md")]
    for d, _, names in os.walk(os.path.join(root, "docs")):
        files += [os.path.join(d, n) for n in sorted(names) if n.endswith(".md")]
    return sorted(files)


def check_links(root):
    errors = []
    for md in doc_files(root):
        rel = os.path.relpath(md, root)
        with open(md, encoding="utf-8") as f:
            text = f.read()
        for n, line in prose_lines(text):
            for m in LINK.finditer(strip_code_spans(line)):
                target = m.group(1)
                if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                    continue                       # http:, https:, mailto: ...
                path, _, anchor = target.partition("#")
                dest = md if path == "" else os.path.normpath(os.path.join(os.path.dirname(md), path))
                where = f"{rel}:{n}: [{target}]"
                if not os.path.realpath(dest).startswith(os.path.realpath(root) + os.sep):
                    errors.append(f"{where} points outside the repository")
                    continue
                if not os.path.exists(dest):
                    errors.append(f"{where}: no file {os.path.relpath(dest, root)}")
                    continue
                if anchor:
                    if not dest.endswith(".md") or os.path.isdir(dest):
                        errors.append(f"{where}: an anchor into a file that is not Markdown")
                    elif anchor not in anchors(dest):
                        errors.append(f"{where}: no heading with the anchor #{anchor} in "
                                      f"{os.path.relpath(dest, root)}")
    return errors


def check_setup(root):
    errors = []
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    if SETUP_HEADING not in lines:
        return [f"README.md: no heading {SETUP_HEADING!r}"]
    start = lines.index(SETUP_HEADING) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    section = lines[start:end]
    # Each command must be a line of its own in a ```sh block of the section, byte for byte
    # (indentation inside the list item aside).
    in_sh, commands = False, []
    for line in section:
        if FENCE.match(line):
            in_sh = not in_sh and line.strip() == "```sh"
            continue
        if in_sh:
            commands.append(line.strip(" "))
    if commands != SETUP_COMMANDS:
        errors.append(f"README.md: the set-up section's commands are {commands!r}, "
                      f"expected exactly {SETUP_COMMANDS!r}")
    with open(os.path.join(root, ".ci", "run"), encoding="utf-8") as f:
        ci = [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]
    ci_command = ci[-1] if ci else ""
    if ci_command not in SETUP_COMMANDS:
        errors.append(f".ci/run runs {ci_command!r}, which is not one of the README's "
                      f"set-up commands {SETUP_COMMANDS!r}")
    return errors


def self_test():
    """The checker must find a broken link and a broken anchor, and only those."""
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "docs", "sub"))
        with open(os.path.join(root, "README.md"), "w") as f:
            f.write("# Top\n\n## A `code` heading: yes?\n\n"
                    "[ok](docs/a.md) [ok](#a-code-heading-yes) [ok](docs/sub/b.md#second-1)\n"
                    "![img](docs/a.md) [ext](https://example.com/x)\n"
                    "[broken](docs/missing.md)\n"
                    "```\n[in code](nowhere.md)\n# not a heading\n```\n"
                    "`[in a span](nowhere.md)`\n")
        with open(os.path.join(root, "docs", "a.md"), "w") as f:
            f.write("# A\n\n[up](../README.md#top) [bad anchor](sub/b.md#third)\n")
        with open(os.path.join(root, "docs", "sub", "b.md"), "w") as f:
            f.write("# B\n## Second\n## Second\n")
        errors = check_links(root)
    found = sorted(e.split("]", 1)[0] + "]" for e in errors)
    expected = ["README.md:7: [docs/missing.md]", "docs/a.md:3: [sub/b.md#third]"]
    if found != expected:
        print("self-test: the checker reported", errors, "expected errors at", expected)
        return False
    return True


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    if not self_test():
        return 1
    errors = check_links(root) + check_setup(root)
    files = doc_files(root)
    for e in errors:
        print(e)
    if errors:
        print(f"docs_links: {len(errors)} problem(s) in {len(files)} files")
        return 1
    print(f"docs_links: {len(files)} files, every relative link and anchor resolves; "
          f"set-up commands unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
