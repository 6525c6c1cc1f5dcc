#!/usr/bin/env python3
"""Adds up test results and prints one line: "N passed, N failed".

Usage: count_tests.py [--label WORD] [--checks FILE] [BUILD_DIR ...]

For every BUILD_DIR, reads BUILD_DIR/meson-logs/testlog.json (one JSON object per line, one per
test that meson ran). A suite that printed doctest's summary
    [doctest] test cases: N | N passed | N failed | N skipped
counts its test cases. A suite without that summary counts as one test: passed when meson says
it passed, failed otherwise (a crash, a timeout). A suite whose summary shows no failure but which
meson counts as failed (a sanitizer report at exit, for example) adds one failure. Tests meson
skipped are left out. A BUILD_DIR without a test log counts as one failure.

--checks FILE: further checks, one a line, "PASS name" or "FAIL name" (other lines are ignored).

The exit status is 1 when anything failed, 0 otherwise.
"""

import argparse
import json
import os
import re
import sys

SUMMARY = re.compile(
    r"\[doctest\] test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed(?:\s*\|\s*(\d+) skipped)?"
)
OK_RESULTS = {"OK", "EXPECTEDFAIL"}
SKIPPED_RESULTS = {"SKIP"}


def failure_lines(output, limit=12):
    """The doctest lines that say which test case failed and how, so that a CI log that shows
    only its last lines still names the failure."""
    keep = []
    for line in output.splitlines():
        line = line.rstrip()
        if (
            line.startswith("TEST CASE:")
            or line.startswith("  ")
            and "TEST CASE" not in line
            and keep
            and keep[-1].startswith("TEST CASE:")
            or re.search(r"(ERROR|FATAL ERROR|CHECK|REQUIRE)", line)
            and ":" in line
        ):
            keep.append(line.strip())
        if len(keep) >= limit:
            break
    return keep


def count_log(path):
    """Returns (passed, failed, notes) for one meson testlog.json."""
    passed = failed = 0
    notes = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                failed += 1
                notes.append(f"{path}:{lineno}: unreadable entry")
                continue
            name = entry.get("name", "?")
            result = entry.get("result", "")
            if result in SKIPPED_RESULTS:
                continue
            output = (entry.get("stdout") or "") + "\n" + (entry.get("stderr") or "")
            matches = SUMMARY.findall(output)
            ok = result in OK_RESULTS
            if matches:
                _, p, fl, _ = matches[-1]
                p, fl = int(p), int(fl)
                if not ok and fl == 0:
                    fl = 1
                    notes.append(f"{name}: {result} although every test case passed")
                passed += p
                failed += fl
                if fl:
                    notes.extend(f"{name}: {x}" for x in failure_lines(output))
            elif ok:
                passed += 1
            else:
                failed += 1
                notes.append(f"{name}: {result} without a doctest summary")
    return passed, failed, notes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", help="a word printed before the counts, followed by a colon")
    ap.add_argument("--checks", help="a file of PASS/FAIL lines to add")
    ap.add_argument("builds", nargs="*", help="meson build directories")
    args = ap.parse_args()

    passed = failed = 0
    notes = []
    for build in args.builds:
        log = os.path.join(build, "meson-logs", "testlog.json")
        if not os.path.exists(log):
            failed += 1
            notes.append(f"{build}: no test log (build or test run failed before any test ran)")
            continue
        p, fl, n = count_log(log)
        passed += p
        failed += fl
        notes.extend(f"{build}: {x}" for x in n)
    if args.checks and os.path.exists(args.checks):
        with open(args.checks, encoding="utf-8") as f:
            for line in f:
                word, _, name = line.strip().partition(" ")
                if word == "PASS":
                    passed += 1
                elif word == "FAIL":
                    failed += 1
                    notes.append(f"check failed: {name}")

    for note in notes:
        print(f"  {note}")
    prefix = f"{args.label}: " if args.label else ""
    print(f"{prefix}{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
