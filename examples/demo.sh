#!/usr/bin/env bash
# Quick start, step 1: installs any missing system packages that building needs (.ci/install-deps
# build), builds pipeworks into build/ and runs the demo (an echo over TCP and UDP on the
# loopback interface, printing statistics).
# Works from any directory; extra arguments are passed to the demo.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

.ci/install-deps build
if [[ -f build/meson-private/coredata.dat ]]; then
  .ci/build build -Dexamples=true
else
  # Only what building needs is installed, so a new build/ leaves the test suites out (they
  # need doctest); tests/run.sh turns them on.
  .ci/build build -Dexamples=true -Dtests=false
fi
exec build/examples/demo "$@"
