#!/usr/bin/env bash
# Builds the fuzz targets (in build-fuzz, configured with clang++ if it does not exist yet) and
# runs each for FUZZ_SECONDS seconds (default 60), starting from its seed corpus in
# fuzz/corpus/<target>/. Prints one line per target, "fuzz <target>: ok (runs=N)", and exits
# non-zero if any target crashed, leaked, timed out or broke an invariant; the input that did
# it and the log are kept and named. Targets to run may be given as arguments.
# Environment: FUZZ_SECONDS, FUZZ_BUILD (the build dir), FUZZ_OUT (where logs and findings go).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FUZZ_BUILD:-$root/build-fuzz}
seconds=${FUZZ_SECONDS:-60}
out=${FUZZ_OUT:-$build/fuzz-out}
targets=("$@")
((${#targets[@]})) || targets=(length_field delimiter json_header packet tls_records)

build_log=$(mktemp)
trap 'rm -f "$build_log"' EXIT
if ! {
  if [[ ! -f $build/build.ninja ]]; then
    CXX=${CXX:-clang++} meson setup "$build" "$root" -Dfuzzers=true -Dtests=false \
      -Dexamples=false
  else
    meson configure "$build" -Dfuzzers=true
  fi && ninja -C "$build" "${targets[@]/#/fuzz/fuzz_}"
} >"$build_log" 2>&1; then
  tail -n 30 "$build_log" >&2
  echo "fuzz: build failed" >&2
  exit 1
fi

mkdir -p "$out"
status=0
for t in "${targets[@]}"; do
  # New inputs go to a scratch corpus; the checked-in seeds are only read.
  scratch="$out/corpus-$t"
  mkdir -p "$scratch" "$out/findings-$t"
  log="$out/$t.log"
  rc=0
  "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/findings-$t/" \
    "$scratch" "$root/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  if ((rc == 0)); then
    echo "fuzz $t: ok (runs=${runs:-?})"
  else
    finding=$(ls -t "$out/findings-$t"/* 2>/dev/null | head -n 1 || true)
    echo "fuzz $t: FAILED (exit $rc; input: ${finding:-none}; log: $log)"
    status=1
  fi
done
exit "$status"
