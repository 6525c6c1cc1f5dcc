#!/usr/bin/env python3
"""Checks that the errc table of docs/guide.md lists every enumerator of include/pipeworks/error.hpp.

Usage: .ci/check_error_table.py [ERROR_HPP] [GUIDE_MD]
The table is the one whose header row starts with "| `errc`"; each of its rows names one
enumerator in backticks in its first column. Exits 1 naming what is missing or unknown.
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
header = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else root / "include/pipeworks/error.hpp"
guide = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else root / "docs/guide.md"

body = re.search(r"enum class errc\s*\{(.*?)\};", header.read_text(encoding="utf-8"), re.S)
if not body:
    sys.exit(f"{header}: no `enum class errc` found")
code = re.sub(r"//[^\n]*", "", body.group(1))
enumerators = [m.group(1) for m in re.finditer(r"\b([a-z_][a-z0-9_]*)\s*(?:=[^,]*)?,", code)]
if not enumerators:
    sys.exit(f"{header}: enum class errc has no enumerators")

rows = []
in_table = False
for line in guide.read_text(encoding="utf-8").splitlines():
    if line.startswith("| `errc`"):
        in_table = True
        continue
    if in_table:
        if not line.startswith("|"):
            break
        m = re.match(r"\|\s*`([a-z_0-9]+)`", line)
        if m:
            rows.append(m.group(1))
if not rows:
    sys.exit(f"{guide}: no errc table (a table whose header starts with | `errc`)")

missing = [e for e in enumerators if e not in rows]
unknown = [r for r in rows if r not in enumerators]
for e in missing:
    print(f"{guide}: errc::{e} is not in the error table", file=sys.stderr)
for r in unknown:
    print(f"{guide}: the error table lists `{r}`, which is not an errc value", file=sys.stderr)
if missing or unknown:
    sys.exit(1)
print(f"error table: all {len(enumerators)} errc values listed")
