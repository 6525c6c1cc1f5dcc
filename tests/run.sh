#!/usr/bin/env bash
# Quick start, step 2: installs any missing system packages that building and the tests need
# (.ci/install-deps build test), builds pipeworks into build/ and runs the whole test suite,
# then prints a summary line ("tests: N passed, N failed") that adds up the test cases of every
# suite. Works from any directory; extra arguments go to meson test (for example a suite name,
# or --repeat 5).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

.ci/install-deps build test
rm -f build/meson-logs/testlog.json
status=0
if .ci/build build -Dtests=true; then
  meson test -C build --print-errorlogs "$@" || status=$?
else
  status=1   # no test log: the summary below counts the failed build as one failure
fi
if ! python3 .ci/count_tests.py --label tests build && ((status == 0)); then
  status=1
fi
exit "$status"
