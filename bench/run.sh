#!/usr/bin/env bash
# bench/run.sh [BUILD_DIR] - side-by-side comparison of the baseline libuv echo server
# (BUILD/bench/uv_echo_server) and the pipeworks echo server (BUILD/examples/echo_server), and
# of the framed echo (4-byte length prefix): the two baselines of
# BUILD/bench/uv_framed_echo_server (--mode each, --mode gathered) and
# BUILD/examples/echo_server --framing length. BUILD_DIR defaults to build-bench (relative to
# the current directory or to the repository).
# Results go to stdout only. See bench/README.md for what every number means.
#
# Environment (defaults in brackets):
#   BENCH_DURATION   measured seconds per loadgen run [5]
#   BENCH_WARMUP     warmup seconds before measuring [1]
#   BENCH_ROUNDS     runs per server and workload; the table shows the median [3]
#   BENCH_IDLE_CONNS idle connections for the memory measurement [10000]; 0 skips it
#   BENCH_PIN        shared | split | none  [shared] (see below)
#   BENCH_UDP        1 adds a UDP workload [0]
#   BENCH_NICE       run servers and loadgen under "nice -n VALUE" (e.g. -10 as root, to
#                    shield them from other work on a shared machine) [unset: no nice]
#   BENCH_FRAMED     0 skips the framed echo section [1]
#   BENCH_AWAIT      0 skips the coroutine echo section (examples/await_echo against
#                    examples/echo_server) [1]
#   BENCH_ONLY       comma-separated sections to run, of: echo (plain echo throughput),
#                    framed, idle (idle connections), await (coroutine echo)
#                    [unset: all enabled sections]
#   BENCH_PIPEWORKS_ARGS extra arguments for the pipeworks echo_server in the echo and framed
#                    sections, e.g. "--idle-timeout 0 --frame-timeout 0" to run it without the
#                    timers the baseline does not have [unset: echo_server's defaults]
#   BENCH_BASELINE_ARGS extra arguments for bench/uv_echo_server in the echo section, e.g.
#                    "--idle-timeout 60" to give it echo_server's default idle timeout [unset]
#
# CPU pinning. On the 2-vCPU VM this kit was tuned on, "split" (server on CPU 0, loadgen on
# CPU 1) was the least stable choice: both processes spent most of their time asleep waiting
# for cross-CPU wake-ups, the 64-byte pipelined workload ranged from 0.28 to 1.8 million
# msgs/s from one run to the next, and a ping-pong round trip took 50-70 us (two cross-CPU
# wake-ups) against ~20 us on one CPU. Unpinned runs varied as much (0.9 to 1.8 million).
# With both processes pinned to the same CPU ("shared") the runs agreed within a few percent
# (pipelined) and ~10% (ping-pong), so "shared" is the default. Then msgs/s reflects the CPU
# time per message of server and loadgen together; the loadgen's share is the same for both
# servers, so the msgs/s ratio understates the difference between the servers. The "server
# CPU per message" table gives the servers' own cost (utime + stime from /proc/PID/stat over
# the whole loadgen run divided by the messages it echoed), whatever the pinning.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/common.sh
. "$here/common.sh"
build=$(build_dir run.sh "${1:-build-bench}")

DURATION=${BENCH_DURATION:-5}
WARMUP=${BENCH_WARMUP:-1}
ROUNDS=${BENCH_ROUNDS:-3}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
PIN=${BENCH_PIN:-shared}
UDP=${BENCH_UDP:-0}
NICE=${BENCH_NICE:-}
FRAMED=${BENCH_FRAMED:-1}
AWAIT=${BENCH_AWAIT:-1}
ONLY=${BENCH_ONLY:-}

# section_on NAME: whether section NAME (echo, framed, idle) runs.
section_on() {
    if [[ -n $ONLY ]]; then
        [[ ,$ONLY, == *,$1,* ]]
        return
    fi
    case $1 in
        framed) [[ $FRAMED != 0 ]] ;;
        await) [[ $AWAIT != 0 ]] ;;
        *) true ;;
    esac
}
if [[ -n $ONLY && ! $ONLY =~ ^(echo|framed|idle|await)(,(echo|framed|idle|await))*$ ]]; then
    echo "run.sh: BENCH_ONLY must be a comma-separated list of echo, framed, idle, await" >&2
    exit 2
fi

baseline_bin=$build/bench/uv_echo_server
framed_bin=$build/bench/uv_framed_echo_server
pipeworks_bin=$build/examples/echo_server
await_bin=$build/examples/await_echo
loadgen=$build/bench/loadgen
idle_conns=$build/bench/idle_conns

needed=("$baseline_bin" "$loadgen" "$idle_conns")
if section_on framed; then needed+=("$framed_bin"); fi
for f in "${needed[@]}"; do
    if [[ ! -x $f ]]; then
        echo "run.sh: $f is missing; build with -Dbenchmarks=true (ninja -C $build)" >&2
        exit 2
    fi
done

servers=(baseline)
server_bins=("$baseline_bin")
have_pipeworks=0
if [[ -x $pipeworks_bin ]]; then
    servers+=(pipeworks)
    server_bins+=("$pipeworks_bin")
    have_pipeworks=1
fi

if [[ ! $ROUNDS =~ ^[1-9][0-9]*$ || ! $IDLE_CONNS =~ ^[0-9]+$ ]]; then
    echo "run.sh: BENCH_ROUNDS must be a positive integer, BENCH_IDLE_CONNS an integer" >&2
    exit 2
fi

ncpu=$(nproc)
case $PIN in
    shared) server_pin=(taskset -c 0) client_pin=(taskset -c 0) ;;
    split)
        if ((ncpu < 2)); then
            echo "run.sh: BENCH_PIN=split needs 2 CPUs, have $ncpu" >&2
            exit 2
        fi
        server_pin=(taskset -c 0) client_pin=(taskset -c 1)
        ;;
    none) server_pin=() client_pin=() ;;
    *)
        echo "run.sh: BENCH_PIN must be shared, split or none" >&2
        exit 2
        ;;
esac

if [[ -n $NICE ]]; then
    server_pin=(nice -n "$NICE" "${server_pin[@]}")
    client_pin=(nice -n "$NICE" "${client_pin[@]}")
fi

clk_tck=$(getconf CLK_TCK)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pipeworks-bench.XXXXXX")
SERVER_PID=""
IDLE_PID=""
failures=0

cleanup() {
    if [[ -n $IDLE_PID ]]; then kill -TERM "$IDLE_PID" 2>/dev/null || true; fi
    if [[ -n $SERVER_PID ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        sleep 0.5
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# Whether echo_server takes --framing length: start it once with it, on 127.0.0.1:0. Without
# the option it prints its usage and exits at once (status 2). Sets have_pipeworks_framing and,
# when 0, pipeworks_framing_note.
have_pipeworks_framing=0
pipeworks_framing_note=""
probe_pipeworks_framing() {
    if ((!have_pipeworks)); then
        pipeworks_framing_note="$pipeworks_bin is not built"
        return
    fi
    : >"$tmp/probe.out" # exists before the reads below, however the start is scheduled
    "$pipeworks_bin" --framing length --bind 127.0.0.1:0 >"$tmp/probe.out" 2>"$tmp/probe.err" &
    SERVER_PID=$!
    local line="" i status=0
    for ((i = 0; i < 100; i++)); do
        if IFS= read -r line <"$tmp/probe.out"; then break; fi
        line=""
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || status=$?
    SERVER_PID=""
    if [[ $line =~ ^listening\ on\ .+:[0-9]+$ ]]; then
        have_pipeworks_framing=1
    else
        pipeworks_framing_note="$pipeworks_bin does not accept --framing length (exit status"
        pipeworks_framing_note+=" $status: $(head -n 1 "$tmp/probe.err" | head -c 200))"
    fi
}
if section_on framed; then probe_pipeworks_framing; fi

# ---------------------------------------------------------------- environment

echo "# pipeworks benchmark: baseline libuv echo servers vs pipeworks echo server"
echo
echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo "host:     $(uname -srm), $ncpu CPU(s): $cpu_model"
if command -v pkg-config >/dev/null && pkg-config --exists libuv; then
    echo "libuv:    $(pkg-config --modversion libuv) (system pkg-config; the build may use its own)"
fi
echo "build:    $build"
busy=$(cpu_busy_pct)
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) at start;" \
    "CPU ${busy}% busy over 1 s"
echo "settings: duration ${DURATION} s, warmup ${WARMUP} s, ${ROUNDS} round(s), pinning '$PIN'" \
    "(server: ${server_pin[*]:-none}, loadgen: ${client_pin[*]:-none})"
sections=()
for sec in echo framed idle await; do
    if [[ $sec == idle ]] && ((IDLE_CONNS == 0)); then continue; fi
    if section_on "$sec"; then sections+=("$sec"); fi
done
echo "sections: ${sections[*]:-none}"
if section_on framed && ((have_pipeworks && !have_pipeworks_framing)); then
    echo "NOTE: framed echo without pipeworks: $pipeworks_framing_note;"
    echo "      measuring the two libuv baselines only."
fi
if ((!have_pipeworks)); then
    echo "NOTE: the pipeworks echo server is not built ($pipeworks_bin is missing): measuring"
    echo "      the baseline only. Configure with -Dexamples=true and build to compare."
fi
if ((busy > 10)); then
    echo "WARNING: the machine is not idle (CPU ${busy}% busy before starting): other work"
    echo "         competes with the servers for the CPU, expect noisy numbers"
fi
echo

# ---------------------------------------------------------------- throughput

wl_names=("64-byte pipelined (10 connections x 16 in flight)" "ping-pong (1 x 1)")
wl_load=("--conns 10 --inflight 16 --size 64" "--conns 1 --inflight 1 --size 64")
wl_server=("" "")
if [[ $UDP == 1 ]]; then
    wl_names+=("UDP 64-byte (10 sockets x 16 in flight)")
    wl_load+=("--udp --conns 10 --inflight 16 --size 64")
    wl_server+=("--udp")
fi

declare -A MPS CPU # "workload,server" -> space-separated values, one per successful run

# run_one KEY LABEL NAME BIN SERVER_ARGS LOADGEN_ARGS: one loadgen run against a fresh server
# (BIN SERVER_ARGS); appends its msgs/s to MPS[KEY,NAME] and its server CPU time per message
# to CPU[KEY,NAME]. LABEL names the workload in the log.
run_one() {
    local key=$1 label=$2 name=$3 bin=$4
    local -a sargs largs
    read -r -a sargs <<<"$5"
    read -r -a largs <<<"$6"
    echo "--- $label / $name"
    local -a extra=()
    if [[ $bin == "$pipeworks_bin" ]]; then
        read -r -a extra <<<"${BENCH_PIPEWORKS_ARGS:-}"
    elif [[ $bin == "$baseline_bin" ]]; then
        read -r -a extra <<<"${BENCH_BASELINE_ARGS:-}"
    fi
    sargs+=("${extra[@]}")
    if ! start_server "$bin" "${sargs[@]}"; then
        failures=$((failures + 1))
        return
    fi
    measure "$key" "$name" messages msg "${client_pin[@]}" "$loadgen" --target "$SERVER_ADDR" \
        "${largs[@]}" --duration "$DURATION" --warmup "$WARMUP"
}

if section_on echo; then
    echo "## Throughput"
    echo
    for w in "${!wl_names[@]}"; do
        for ((r = 1; r <= ROUNDS; r++)); do
            mapfile -t order < <(round_order "${#servers[@]}" "$r")
            for s in "${order[@]}"; do
                run_one "$w" "${wl_names[$w]}" "${servers[$s]}" "${server_bins[$s]}" \
                    "${wl_server[$w]}" "${wl_load[$w]}"
            done
        done
    done

    echo
    echo "Median of ${ROUNDS} run(s) of ${DURATION} s each; ratio = pipeworks / baseline."
    echo
    echo "| workload | baseline msgs/s | pipeworks msgs/s | ratio |"
    echo "|---|---:|---:|---:|"
    for w in "${!wl_names[@]}"; do
        # shellcheck disable=SC2086 # word splitting of the value lists is intended
        b=$(median ${MPS[$w,baseline]:-})
        p=n/a
        # shellcheck disable=SC2086
        if ((have_pipeworks)); then p=$(median ${MPS[$w,pipeworks]:-}); fi
        printf '| %s | %s | %s | %s |\n' "${wl_names[$w]}" "$(fmt_int "$b")" "$(fmt_int "$p")" \
            "$(ratio "$b" "$p")"
    done
    echo
    echo "Server CPU time per echoed message (lower is better); ratio = pipeworks / baseline."
    echo
    echo "| workload | baseline us/msg | pipeworks us/msg | ratio |"
    echo "|---|---:|---:|---:|"
    for w in "${!wl_names[@]}"; do
        # shellcheck disable=SC2086
        b=$(median ${CPU[$w,baseline]:-})
        p=n/a
        # shellcheck disable=SC2086
        if ((have_pipeworks)); then p=$(median ${CPU[$w,pipeworks]:-}); fi
        printf '| %s | %s | %s | %s |\n' "${wl_names[$w]}" "$(fmt_dec "$b")" "$(fmt_dec "$p")" \
            "$(ratio "$b" "$p")"
    done
    echo
fi

# ---------------------------------------------------------------- framed echo

# The framed echo (4-byte big-endian length prefix): pipeworks' echo_server --framing length
# against the two plain libuv baselines: "each" writes every message separately, "gathered"
# writes every frame completed by one read in a single write (the bound). Goals from the issue:
# pipeworks >= 0.90 x gathered and >= 5 x each on the 64-byte pipelined workload, >= 0.95 x
# gathered on ping-pong and 16 KiB.
if section_on framed; then
    echo "## Framed echo (4-byte length prefix)"
    echo
    fw_names=("64-byte pipelined (10 connections x 16 in flight)" "ping-pong (1 x 1)"
        "16 KiB pipelined (4 connections x 4 in flight)")
    fw_load=("--conns 10 --inflight 16 --size 64 --framing length"
        "--conns 1 --inflight 1 --size 64 --framing length"
        "--conns 4 --inflight 4 --size 16384 --framing length")
    fw_goal_gathered=(0.90 0.95 0.95) # least pipeworks / gathered
    fw_goal_each=(5 "" "")            # least pipeworks / each ("": no goal)
    f_servers=(each gathered)
    f_bins=("$framed_bin" "$framed_bin")
    f_args=("--mode each" "--mode gathered")
    if ((have_pipeworks_framing)); then
        f_servers+=(pipeworks)
        f_bins+=("$pipeworks_bin")
        f_args+=("--framing length")
    fi
    for w in "${!fw_names[@]}"; do
        for ((r = 1; r <= ROUNDS; r++)); do
            mapfile -t order < <(round_order "${#f_servers[@]}" "$r")
            for s in "${order[@]}"; do
                run_one "f$w" "framed ${fw_names[$w]}" "${f_servers[$s]}" "${f_bins[$s]}" \
                    "${f_args[$s]}" "${fw_load[$w]}"
            done
        done
    done

    echo
    echo "Framed echo, median of ${ROUNDS} run(s) of ${DURATION} s each. each: one uv_write per"
    echo "message; gathered: one write per read (the bound); pw = pipeworks."
    if ((!have_pipeworks_framing)); then
        echo "NOTE: no pipeworks column: $pipeworks_framing_note"
    fi
    echo
    echo "| workload | each msgs/s | gathered msgs/s | pipeworks msgs/s | pw / gathered |" \
        "pw / each | goal | met |"
    echo "|---|---:|---:|---:|---:|---:|---|---|"
    for w in "${!fw_names[@]}"; do
        # shellcheck disable=SC2086 # word splitting of the value lists is intended
        e=$(median ${MPS[f$w,each]:-})
        # shellcheck disable=SC2086
        g=$(median ${MPS[f$w,gathered]:-})
        p=n/a
        # shellcheck disable=SC2086
        if ((have_pipeworks_framing)); then p=$(median ${MPS[f$w,pipeworks]:-}); fi
        rg=$(ratio "$g" "$p")
        re=$(ratio "$e" "$p")
        goal="pw/gathered >= ${fw_goal_gathered[$w]}"
        met=$(meets "$g" "$p" "${fw_goal_gathered[$w]}")
        if [[ -n ${fw_goal_each[$w]} ]]; then
            goal+=", pw/each >= ${fw_goal_each[$w]}"
            met_each=$(meets "$e" "$p" "${fw_goal_each[$w]}")
            if [[ $met_each == no || $met == yes ]]; then met=$met_each; fi
        fi
        printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "${fw_names[$w]}" "$(fmt_int "$e")" \
            "$(fmt_int "$g")" "$(fmt_int "$p")" "$rg" "$re" "$goal" "$met"
    done
    echo
    echo "Framed echo, server CPU time per echoed message (lower is better); ratios above 1:"
    echo "pipeworks spends more CPU per message."
    echo
    echo "| workload | each us/msg | gathered us/msg | pipeworks us/msg | pw / gathered |" \
        "pw / each |"
    echo "|---|---:|---:|---:|---:|---:|"
    for w in "${!fw_names[@]}"; do
        # shellcheck disable=SC2086
        e=$(median ${CPU[f$w,each]:-})
        # shellcheck disable=SC2086
        g=$(median ${CPU[f$w,gathered]:-})
        p=n/a
        # shellcheck disable=SC2086
        if ((have_pipeworks_framing)); then p=$(median ${CPU[f$w,pipeworks]:-}); fi
        printf '| %s | %s | %s | %s | %s | %s |\n' "${fw_names[$w]}" "$(fmt_dec "$e")" \
            "$(fmt_dec "$g")" "$(fmt_dec "$p")" "$(ratio "$g" "$p")" "$(ratio "$e" "$p")"
    done
    echo
fi

# ---------------------------------------------------------------- coroutine echo

# The await style (docs/await.md): examples/await_echo, a Task per client looping on co::recv
# and co::send, against the callback examples/echo_server (on_message), the same workloads,
# runs interleaved. Both give a silent client 60 s. Goal from the issue: coroutine >= 0.9 x
# callback, pipelined and ping-pong.
if section_on await; then
    if [[ ! -x $await_bin || ! -x $pipeworks_bin ]]; then
        echo "NOTE: coroutine echo skipped: needs $await_bin and $pipeworks_bin"
        echo
    else
        echo "## Coroutine echo (await_echo) against the callback echo_server"
        echo
        a_servers=(callback coroutine)
        a_bins=("$pipeworks_bin" "$await_bin")
        for w in 0 1; do
            for ((r = 1; r <= ROUNDS; r++)); do
                mapfile -t order < <(round_order "${#a_servers[@]}" "$r")
                for s in "${order[@]}"; do
                    run_one "a$w" "await ${wl_names[$w]}" "${a_servers[$s]}" "${a_bins[$s]}" \
                        "" "${wl_load[$w]}"
                done
            done
        done

        echo
        echo "Coroutine echo, median of ${ROUNDS} run(s) of ${DURATION} s each;" \
            "ratio = coroutine / callback."
        echo
        echo "| workload | callback msgs/s | coroutine msgs/s | ratio | goal | met |" \
            "callback us/msg | coroutine us/msg |"
        echo "|---|---:|---:|---:|---|---|---:|---:|"
        for w in 0 1; do
            # shellcheck disable=SC2086 # word splitting of the value lists is intended
            b=$(median ${MPS[a$w,callback]:-})
            # shellcheck disable=SC2086
            c=$(median ${MPS[a$w,coroutine]:-})
            # shellcheck disable=SC2086
            bc=$(median ${CPU[a$w,callback]:-})
            # shellcheck disable=SC2086
            cc=$(median ${CPU[a$w,coroutine]:-})
            rc=$(ratio "$b" "$c")
            printf '| %s | %s | %s | %s | >= 0.9 | %s | %s | %s |\n' "${wl_names[$w]}" \
                "$(fmt_int "$b")" "$(fmt_int "$c")" "$rc" "$(meets "$b" "$c" 0.9)" \
                "$(fmt_dec "$bc")" "$(fmt_dec "$cc")"
        done
        echo
    fi
fi

# ---------------------------------------------------------------- packet requests

# The packet layer (cs.packetstream requests, docs/packets.md): examples/packet_server loaded by
# bench/packet_loadgen with echo requests of 64 bytes, side by side with the framed echo of the
# message layer (examples/echo_server --framing length, loaded by loadgen), runs interleaved.
# Goal from the issue: packet requests/s >= 0.5 x the framed echo's msgs/s, pipelined. Runs
# with the framed section (BENCH_ONLY=framed runs both); BENCH_PACKET=0 skips it.
packet_server_bin=$build/examples/packet_server
packet_loadgen_bin=$build/bench/packet_loadgen
if section_on framed && [[ ${BENCH_PACKET:-1} != 0 ]]; then
    echo "## Packet requests (cs.packetstream) vs the framed echo"
    echo
    if [[ ! -x $packet_server_bin || ! -x $packet_loadgen_bin ]] || ((!have_pipeworks_framing)); then
        echo "NOTE: skipped: needs $packet_server_bin, $packet_loadgen_bin and an echo_server"
        echo "      that takes --framing length"
        echo
    else
        pk_names=("64-byte pipelined (10 connections x 16 in flight)" "ping-pong (1 x 1)")
        pk_load=("--conns 10 --inflight 16 --size 64" "--conns 1 --inflight 1 --size 64")
        pk_goal=(0.5 "") # least packet / framed ("": no goal)
        for w in "${!pk_names[@]}"; do
            for ((r = 1; r <= ROUNDS; r++)); do
                mapfile -t order < <(round_order 2 "$r")
                for s in "${order[@]}"; do
                    if ((s == 0)); then
                        run_one "p$w" "packet section ${pk_names[$w]}" framed "$pipeworks_bin" \
                            "--framing length" "${pk_load[$w]} --framing length"
                    else
                        # run_one runs $loadgen: this assignment holds for that call only.
                        loadgen=$packet_loadgen_bin run_one "p$w" "packet section ${pk_names[$w]}" \
                            packet "$packet_server_bin" "" "${pk_load[$w]}"
                    fi
                done
            done
        done
        echo
        echo "Packet requests, median of ${ROUNDS} run(s) of ${DURATION} s each. framed: echo_server"
        echo "--framing length, msgs/s; packet: packet_server, requests/s (echo, API type 0)."
        echo
        echo "| workload | framed msgs/s | packet requests/s | packet / framed | goal | met |"
        echo "|---|---:|---:|---:|---|---|"
        for w in "${!pk_names[@]}"; do
            # shellcheck disable=SC2086 # word splitting of the value lists is intended
            f=$(median ${MPS[p$w,framed]:-})
            # shellcheck disable=SC2086
            p=$(median ${MPS[p$w,packet]:-})
            rp=$(ratio "$f" "$p")
            goal=- met=-
            if [[ -n ${pk_goal[$w]} ]]; then
                goal="packet/framed >= ${pk_goal[$w]}"
                met=$(meets "$f" "$p" "${pk_goal[$w]}")
            fi
            printf '| %s | %s | %s | %s | %s | %s |\n' "${pk_names[$w]}" "$(fmt_int "$f")" \
                "$(fmt_int "$p")" "$rp" "$goal" "$met"
        done
        echo
        echo "Server CPU time per request or message (lower is better); ratio = packet / framed."
        echo
        echo "| workload | framed us/msg | packet us/request | ratio |"
        echo "|---|---:|---:|---:|"
        for w in "${!pk_names[@]}"; do
            # shellcheck disable=SC2086
            f=$(median ${CPU[p$w,framed]:-})
            # shellcheck disable=SC2086
            p=$(median ${CPU[p$w,packet]:-})
            printf '| %s | %s | %s | %s |\n' "${pk_names[$w]}" "$(fmt_dec "$f")" \
                "$(fmt_dec "$p")" "$(ratio "$f" "$p")"
        done
        echo
    fi
fi

# ---------------------------------------------------------------- idle connections

if ((IDLE_CONNS > 0)) && section_on idle; then
    echo "## Idle connections"
    echo
    need=$((IDLE_CONNS + 1024))
    cur=$(ulimit -n)
    if [[ $cur != unlimited ]] && ((cur < need)); then
        hard=$(ulimit -Hn)
        if [[ $hard == unlimited ]] || ((hard >= need)); then
            show_cmd ulimit -n "$need"
            ulimit -n "$need"
        else
            show_cmd ulimit -Hn "$need"
            show_cmd ulimit -n "$need"
            if ! { ulimit -Hn "$need" && ulimit -n "$need"; } 2>/dev/null; then
                echo "ERROR: cannot raise the open-files limit to $need (hard limit $hard);" \
                    "run as root or lower BENCH_IDLE_CONNS"
                exit 1
            fi
        fi
    fi
    echo "open-files limit: $(ulimit -n)"

    declare -A RSS0 RSS1
    for s in "${!servers[@]}"; do
        name=${servers[$s]}
        echo "--- $IDLE_CONNS idle connections / $name"
        # echo_server's safe defaults (1024 clients, 60 s idle timeout) would cut the
        # measurement short: lifted here, as a server sized for many connections would.
        idle_args=()
        [[ ${server_bins[$s]} == "$pipeworks_bin" ]] && idle_args=(--max-clients 1000000 --idle-timeout 0)
        if ! start_server "${server_bins[$s]}" "${idle_args[@]}"; then
            failures=$((failures + 1))
            continue
        fi
        sleep 0.5
        rss0=$(rss_kib "$SERVER_PID")
        fd0=$(fd_count "$SERVER_PID")
        rm -f "$tmp/idle.in"
        mkfifo "$tmp/idle.in"
        cmd=("${client_pin[@]}" "$idle_conns" --target "$SERVER_ADDR" --count "$IDLE_CONNS"
            --settle 1 --max-time 300)
        show_cmd "${cmd[@]}"
        "${cmd[@]}" <"$tmp/idle.in" >"$tmp/idle.out" 2>"$tmp/idle.err" &
        IDLE_PID=$!
        exec {hold}>"$tmp/idle.in" # idle_conns holds its connections until this is closed
        line=""
        for ((i = 0; i < 1200; i++)); do # up to 120 s
            line=$(grep -m1 '^connected=' "$tmp/idle.out" || true)
            [[ -n $line ]] && break
            kill -0 "$IDLE_PID" 2>/dev/null || break
            sleep 0.1
        done
        echo "${line:-idle_conns printed nothing}"
        ok=0
        if [[ $(field connected "$line") == "$IDLE_CONNS" ]]; then
            # Wait (up to 30 s) until the server holds a descriptor for every connection.
            for ((i = 0; i < 300; i++)); do
                fds=$(fd_count "$SERVER_PID")
                ((fds - fd0 >= IDLE_CONNS)) && break
                sleep 0.1
            done
            if ((fds - fd0 >= IDLE_CONNS)); then
                sleep 1
                rss1=$(rss_kib "$SERVER_PID")
                echo "server: VmRSS ${rss0} KiB before, ${rss1} KiB with $IDLE_CONNS connections" \
                    "(open descriptors ${fd0} -> ${fds})"
                RSS0[$name]=$rss0
                RSS1[$name]=$rss1
                ok=1
            else
                echo "ERROR: the server holds only $((fds - fd0)) of $IDLE_CONNS connections"
            fi
        else
            echo "ERROR: idle_conns did not hold all $IDLE_CONNS connections (see its line above)"
        fi
        exec {hold}>&-
        rc=0
        wait "$IDLE_PID" || rc=$?
        IDLE_PID=""
        if ((rc != 0)); then
            echo "ERROR: idle_conns exited with status $rc: $(head -c 1000 "$tmp/idle.err")"
            ok=0
        fi
        stop_server
        ((ok)) || failures=$((failures + 1))
    done

    echo
    echo "Server resident memory (VmRSS) with $IDLE_CONNS idle TCP connections."
    echo
    echo "| server | VmRSS before (KiB) | VmRSS with $IDLE_CONNS (KiB) | KiB per connection |"
    echo "|---|---:|---:|---:|"
    for name in baseline pipeworks; do
        if [[ -n ${RSS1[$name]:-} ]]; then
            per=$(awk -v a="${RSS0[$name]}" -v b="${RSS1[$name]}" -v n="$IDLE_CONNS" \
                'BEGIN { printf "%.2f", (b - a) / n }')
            printf '| %s | %s | %s | %s |\n' "$name" "${RSS0[$name]}" "${RSS1[$name]}" "$per"
        elif [[ $name == baseline ]] || ((have_pipeworks)); then
            printf '| %s | FAIL | FAIL | FAIL |\n' "$name"
        else
            printf '| %s | n/a | n/a | n/a |\n' "$name"
        fi
    done
    echo
fi

echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) at the end;" \
    "CPU $(cpu_busy_pct)% busy over 1 s"
if ((failures > 0)); then
    echo "$failures run(s) FAILED (see the ERROR lines above)"
    exit 1
fi
