#!/usr/bin/env bash
# bench/relay.sh [BUILD_DIR] - TCP relay throughput: iperf3 over loopback, side by side in one
# run: direct (no relay), through BUILD/tools/pipeworks-relay, through socat
# (socat TCP-LISTEN:P,fork,reuseaddr TCP:127.0.0.1:Q), and through BUILD/bench/splice_relay
# (the bound: bytes moved socket to socket inside the kernel). Prints Gbit/s per run, the
# medians, and the ratio pipeworks-relay / socat (goal: >= 2). BUILD_DIR defaults to
# build-bench (relative to the current directory or to the repository); any build with
# -Dtools=true will do (the splice row needs -Dbenchmarks=true).
# Needs iperf3 and socat (Debian: apt-get install iperf3 socat). Results go to stdout only.
#
# Environment (defaults in brackets):
#   BENCH_DURATION  seconds per iperf3 run [5]
#   BENCH_ROUNDS    runs per path; the table shows the median [3]
#   BENCH_PARALLEL  iperf3 -P: parallel streams [1]
#   BENCH_REVERSE   1: iperf3 -R (the server sends, the data crosses the relay the other way) [0]
#   BENCH_PIN       none | shared  [none]; shared pins everything to CPU 0 (compare the CPU
#                   cost of the relays rather than what spare cores give them)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/common.sh
. "$here/common.sh"
root=$(dirname "$here")

build=${1:-build-bench}
if [[ ! -d $build && $build != /* && -d $root/$build ]]; then
    build=$root/$build
fi
relay_bin=$build/tools/pipeworks-relay
if [[ ! -x $relay_bin ]]; then
    echo "relay.sh: $relay_bin not found; run: meson setup $build && ninja -C $build" >&2
    exit 2
fi
relay_bin=$(cd "$(dirname "$relay_bin")" && pwd)/pipeworks-relay
# The splice(2) bound (built with -Dbenchmarks=true): a relay that never copies through user
# space; the row is left out when it is not built.
splice_bin=$build/bench/splice_relay
for tool in iperf3 socat python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "relay.sh: $tool is missing (Debian: apt-get install iperf3 socat)" >&2
        exit 2
    fi
done

DURATION=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-3}
PARALLEL=${BENCH_PARALLEL:-1}
REVERSE=${BENCH_REVERSE:-0}
PIN=${BENCH_PIN:-none}
if [[ ! $ROUNDS =~ ^[1-9][0-9]*$ || ! $PARALLEL =~ ^[1-9][0-9]*$ ]]; then
    echo "relay.sh: BENCH_ROUNDS and BENCH_PARALLEL must be positive integers" >&2
    exit 2
fi
case $PIN in
    none) pin=() ;;
    shared) pin=(taskset -c 0) ;;
    *)
        echo "relay.sh: BENCH_PIN must be none or shared" >&2
        exit 2
        ;;
esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pipeworks-relay-bench.XXXXXX")
IPERF_PID=""
RELAY_PID=""
cleanup() {
    for pid in $RELAY_PID $IPERF_PID; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.2
    for pid in $RELAY_PID $IPERF_PID; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- environment

echo "# pipeworks-relay benchmark: iperf3 direct, through pipeworks-relay, through socat"
echo
machine_header \
    "tools:    $(iperf3 --version | head -n 1); $(socat -V | awk '/socat version/ { print; exit }')" \
    "relay:    $relay_bin" \
    "settings: ${DURATION} s per run, ${ROUNDS} round(s), ${PARALLEL} stream(s), reverse=${REVERSE}, pinning '$PIN'"
echo

# ---------------------------------------------------------------- runs

iperf_port=$(free_port)
start_iperf_server "$iperf_port" "${pin[@]}"

# start_path NAME: starts the relay of path NAME (none for direct); sets PATH_PORT.
start_path() {
    RELAY_PID=""
    case $1 in
        direct) PATH_PORT=$iperf_port ;;
        pipeworks-relay | splice)
            if [[ $1 == splice ]]; then
                cmd=("${pin[@]}" "$splice_bin" "$iperf_port")
            else
                cmd=("${pin[@]}" "$relay_bin" "tcp://127.0.0.1:0" "tcp://127.0.0.1:$iperf_port")
            fi
            show_cmd "${cmd[@]}"
            : >"$tmp/relay.out" # not the last run's line: the child truncates it only later
            "${cmd[@]}" >"$tmp/relay.out" 2>"$tmp/relay.err" &
            RELAY_PID=$!
            if ! PATH_PORT=$(listening_port "$tmp/relay.out"); then
                echo "ERROR: $1 printed no 'listening on' line: '$(head -c 200 "$tmp/relay.out")'" \
                    "$(head -c 500 "$tmp/relay.err")"
                return 1
            fi
            ;;
        socat)
            PATH_PORT=$(free_port)
            cmd=("${pin[@]}" socat "TCP-LISTEN:$PATH_PORT,bind=127.0.0.1,fork,reuseaddr"
                "TCP:127.0.0.1:$iperf_port")
            show_cmd "${cmd[@]}"
            "${cmd[@]}" 2>"$tmp/socat.err" &
            RELAY_PID=$!
            wait_listening "$PATH_PORT" || {
                echo "ERROR: socat did not listen: $(head -c 500 "$tmp/socat.err")"
                return 1
            }
            ;;
    esac
}

stop_path() {
    [[ -n $RELAY_PID ]] || return 0
    local status=0
    kill -TERM "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || status=$?
    # socat exits 143 on SIGTERM; pipeworks-relay must exit 0.
    if [[ $1 == pipeworks-relay ]] && ((status != 0)); then
        echo "WARNING: pipeworks-relay exited with status $status after SIGTERM"
    fi
    RELAY_PID=""
}

paths=(direct pipeworks-relay socat)
if [[ -x $splice_bin ]]; then paths+=(splice); fi
declare -A GBPS MED
failures=0
iperf_prefix=("${pin[@]}")
iperf_args=(-P "$PARALLEL")
if [[ $REVERSE == 1 ]]; then iperf_args+=(-R); fi
iperf_rounds start_path stop_path "${paths[@]}"

# ---------------------------------------------------------------- summary

echo
echo "Median of ${ROUNDS} run(s) of ${DURATION} s, receiver side, Gbit/s."
echo
gbps_table direct "${paths[@]}"
echo
r=$(ratio "${MED[socat]}" "${MED[pipeworks-relay]}")
echo "pipeworks-relay / socat: $r (goal >= 2: $(meets "${MED[socat]}" "${MED[pipeworks-relay]}" 2))"
if [[ -n ${MED[splice]:-} ]]; then
    echo "pipeworks-relay / splice bound: $(ratio "${MED[splice]}" "${MED[pipeworks-relay]}");" \
        "splice bound / socat: $(ratio "${MED[socat]}" "${MED[splice]}")"
fi
if ((failures > 0)); then
    echo "$failures run(s) failed"
    exit 1
fi
