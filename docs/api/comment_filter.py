#!/usr/bin/env python3
"""Doxygen INPUT_FILTER: reads a public header's plain // comments as documentation.

The headers keep ordinary // comments (the project's style); this filter turns them into
Doxygen comments on the way in, without changing the line count, so warnings point at the
right lines:
  - the comment block that opens a file documents the file;
  - a comment block directly above a declaration documents it;
  - a comment after code on the same line documents that member (and a comment line under it,
    starting in the same column, continues it);
  - everything else (section rulers, notes followed by a blank line) stays a plain comment.
"""
import re
import sys

COMMENT = re.compile(r"^(\s*)//(?![/!])\s?(.*)$")
TRAILING = re.compile(r"^(?P<code>.*?\S)(?P<gap>\s+)//(?![/!<])\s?(?P<text>.*)$")
NO_MEMBER = re.compile(r"^\s*(\}|#|namespace\b)")


def in_string(code):
    return code.count('"') % 2 == 1


def filter_lines(lines):
    out = list(lines)
    n = len(lines)
    i = 0
    seen_code = False
    trailing_col = None  # column of the last trailing comment, for continuation lines
    while i < n:
        line = lines[i]
        m = COMMENT.match(line)
        if m:
            if trailing_col is not None and len(m.group(1)) == trailing_col:
                out[i] = f"{m.group(1)}///< {m.group(2)}"
                i += 1
                continue
            trailing_col = None
            start = i
            while i < n and COMMENT.match(lines[i]):
                i += 1
            block = range(start, i)
            ruler = COMMENT.match(lines[start]).group(2).startswith("----")
            nxt = lines[i] if i < n else ""
            if not seen_code:
                for k in block:
                    c = COMMENT.match(lines[k])
                    out[k] = f"{c.group(1)}/// {c.group(2)}"
                # The line after the file's opening block (#pragma once) becomes @file.
                if i < n and nxt.startswith("#pragma once"):
                    out[i] = "/// @file"
                    seen_code = True
                    i += 1
            elif not ruler and nxt.strip() and not NO_MEMBER.match(nxt):
                for k in block:
                    c = COMMENT.match(lines[k])
                    out[k] = f"{c.group(1)}/// {c.group(2)}"
            continue
        if line.strip():
            seen_code = True
        t = TRAILING.match(line)
        if t and not in_string(t.group("code")) and not NO_MEMBER.match(t.group("code")):
            out[i] = f"{t.group('code')}{t.group('gap')}///< {t.group('text')}"
            trailing_col = len(t.group("code")) + len(t.group("gap"))
        else:
            trailing_col = None
        i += 1
    return out


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        lines = f.read().split("\n")
    sys.stdout.write("\n".join(filter_lines(lines)))


if __name__ == "__main__":
    main()
