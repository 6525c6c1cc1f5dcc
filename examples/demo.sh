#!/usr/bin/env bash
# Quick start, step 1: installs any missing system packages, builds pipeworks into build/ and
# runs the demo (an echo over TCP and UDP on the loopback interface, printing statistics).
# Works from any directory; extra arguments are passed to the demo.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

.ci/install-deps
.ci/build build -Dexamples=true
exec build/examples/demo "$@"
