#!/usr/bin/env python3
"""Lines per Rust function (signature to closing brace), largest first.

    scripts/fn-sizes.py crates/broker/src/connection/*.rs | head

Counts a function from its `fn` line to the `}` at the same indentation (rustfmt layout);
closures and nested items count towards the function that holds them.
"""
import re
import sys


def sizes(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(pub(\([^)]*\))? )?(const )?(async )?fn (\w+)", line)
        if not m:
            continue
        indent = m.group(1)
        j = i
        while j < len(lines) and not lines[j].rstrip().endswith(("{", ";")):
            j += 1
        if j >= len(lines) or lines[j].rstrip().endswith(";"):
            continue
        k = j + 1
        while k < len(lines) and lines[k] != indent + "}":
            k += 1
        yield k - i + 1, f"{path}:{i + 1}", m.group(6)


rows = [row for path in sys.argv[1:] for row in sizes(path)]
for n, where, name in sorted(rows, reverse=True):
    print(f"{n:5d} {where} {name}")
