# shellcheck shell=bash disable=SC2034,SC2154
# Helpers shared by the benchmark scripts (bench/run.sh, bench/relay.sh, bench/tls.sh); sourced,
# not run. The server helpers use the caller's tmp (a scratch directory) and server_pin (a
# command prefix array, possibly empty).

# build_dir SCRIPT DIR: DIR (relative to the current directory or to the repository) as an
# absolute path; exits 2 with a hint when there is no such directory.
build_dir() {
    local build=$2 root
    root=$(dirname "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)")
    if [[ ! -d $build && $build != /* && -d $root/$build ]]; then
        build=$root/$build
    fi
    if [[ ! -d $build ]]; then
        echo "$1: build directory '$build' not found;" \
            "run: meson setup build-bench -Dbenchmarks=true && ninja -C build-bench" >&2
        exit 2
    fi
    (cd "$build" && pwd)
}

show_cmd() { # prints a command as it could be typed again
    printf '$'
    printf ' %q' "$@"
    printf '\n'
}

cpu_busy_pct() { # share of all CPUs' time not idle during the next second, in percent
    local -a s0 s1
    read -r -a s0 </proc/stat
    sleep 1
    read -r -a s1 </proc/stat
    local i total=0 idle
    for ((i = 1; i <= 8; i++)); do total=$((total + s1[i] - s0[i])); done
    idle=$((s1[4] - s0[4] + s1[5] - s0[5]))
    if ((total > 0)); then echo $((100 - 100 * idle / total)); else echo 0; fi
}

# machine_header LINE...: the head of a run's output: date, host, each LINE, the load at the
# start, and a warning when the CPUs are busy already.
machine_header() {
    echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host:     $(uname -srm), $(nproc) CPU(s):" \
        "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    local line busy
    for line in "$@"; do echo "$line"; done
    busy=$(cpu_busy_pct)
    echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) at start; CPU ${busy}% busy over 1 s"
    if ((busy > 10)); then
        echo "WARNING: the machine is not idle (CPU ${busy}% busy before starting): expect noise"
    fi
}

median() { # median of the numbers given as arguments, or FAIL when none
    if (($# == 0)); then
        echo FAIL
        return
    fi
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) printf "%.6g\n", v[(NR + 1) / 2]
        else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() { # ratio A B: B / A with 2 decimals, n/a when either is missing
    if [[ $1 =~ ^[0-9.e+]+$ && $2 =~ ^[0-9.e+]+$ ]]; then
        awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.2f\n", b / a; else print "n/a" }'
    else
        echo n/a
    fi
}

# start_server BIN [ARGS...]: starts it on 127.0.0.1:0, sets SERVER_PID and SERVER_ADDR.
start_server() {
    local bin=$1
    shift
    local cmd=("${server_pin[@]}" "$bin" "$@" --bind 127.0.0.1:0)
    show_cmd "${cmd[@]}"
    : >"$tmp/server.out"
    : >"$tmp/server.out" # exists before the reads below, however the start is scheduled
    "${cmd[@]}" >"$tmp/server.out" 2>"$tmp/server.err" &
    SERVER_PID=$!
    local line="" i
    for ((i = 0; i < 200; i++)); do
        if IFS= read -r line <"$tmp/server.out"; then break; fi # only a complete first line
        line=""
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    if [[ ! $line =~ ^listening\ on\ (.+:[0-9]+)$ ]]; then
        echo "ERROR: $bin printed no 'listening on HOST:PORT' line within 10 s" \
            "(got: '${line}'; stderr: $(head -c 500 "$tmp/server.err"))"
        stop_server
        return 1
    fi
    SERVER_ADDR=${BASH_REMATCH[1]}
}

# stop_server: SIGTERM (SIGKILL 5 s later) to SERVER_PID; a warning unless it exits 0 (or with
# SERVER_TERM_STATUS, for a server whose normal end on SIGTERM is another status).
stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    local pid=$SERVER_PID status=0 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "WARNING: server $pid did not exit within 5 s of SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || status=$?
    SERVER_PID=""
    if ((status != 0 && status != ${SERVER_TERM_STATUS:-0})); then
        echo "WARNING: server exited with status $status after SIGTERM"
        if [[ -s $tmp/server.err ]]; then head -c 1000 "$tmp/server.err"; fi
    fi
}

cpu_ticks() { # utime + stime of a process, all threads, in clock ticks
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) } # fields from 3 on; the command name may contain spaces
    local -a f
    read -r -a f <<<"$stat"
    echo $((f[11] + f[12]))
}

field() { # field KEY LINE: the value of KEY=VALUE in LINE, or nothing
    local re="(^| )$1=([^ ]+)"
    if [[ $2 =~ $re ]]; then echo "${BASH_REMATCH[2]}"; fi
}

fmt_int() { # a number rounded to an integer; anything else unchanged
    if [[ $1 =~ ^[0-9.e+-]+$ ]]; then printf '%.0f\n' "$1"; else echo "$1"; fi
}

fmt_dec() { # a number with 3 decimals; anything else unchanged
    if [[ $1 =~ ^[0-9.e+-]+$ ]]; then printf '%.3f\n' "$1"; else echo "$1"; fi
}



at_least() { # at_least RATIO GOAL: yes when RATIO >= GOAL, no when below, n/a without a ratio
    if [[ $1 =~ ^[0-9.e+]+$ ]]; then
        awk -v r="$1" -v g="$2" 'BEGIN { print (r >= g) ? "yes" : "no" }'
    else
        echo n/a
    fi
}

# meets A B GOAL: at_least for B / A unrounded, so that 0.995 (shown as 1.00) does not meet 1.0.
meets() {
    local r=n/a
    if [[ $1 =~ ^[0-9.e+]+$ && $2 =~ ^[0-9.e+]+$ ]]; then
        r=$(awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.6f\n", b / a; else print "n/a" }')
    fi
    at_least "$r" "$3"
}

# round_order N ROUND: the server indices 0 .. N-1 rotated by ROUND - 1 (AB, BA, AB, ... for
# two servers; ABC, BCA, CAB, ... for three), so that slow drift in the machine affects all
# servers alike.
round_order() {
    local n=$1 r=$2 i
    for ((i = 0; i < n; i++)); do echo $(((i + r - 1) % n)); done
}

free_port() { # a TCP port on 127.0.0.1 that nothing listens on (as of now)
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# listening_port FILE: the port of a first line "listening on HOST:PORT" in FILE, which a
# server started in the background writes (5 s); a non-zero status when none came.
listening_port() {
    local line="" i
    for ((i = 0; i < 100; i++)); do
        if IFS= read -r line <"$1"; then break; fi # only a complete first line
        line=""
        sleep 0.05
    done
    [[ $line =~ ^listening\ on\ .+:([0-9]+)$ ]] || return 1
    echo "${BASH_REMATCH[1]}"
}

# wait_listening PORT: until a TCP socket listens on port PORT (5 s). It reads /proc/net/tcp*
# and connects to nothing: a probe connection through a relay would reach the server behind it
# (iperf3 -s, which then turns the next client away as busy).
wait_listening() {
    local i port
    port=$(printf ':%04X' "$1")
    for ((i = 0; i < 100; i++)); do
        if awk -v p="$port" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
            /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# start_iperf_server PORT [PREFIX...]: iperf3 -s on 127.0.0.1:PORT in the background (after the
# command prefix PREFIX), its PID in IPERF_PID; exits 1 when it does not listen.
start_iperf_server() {
    local port=$1
    shift
    local cmd=("$@" iperf3 -s -B 127.0.0.1 -p "$port")
    show_cmd "${cmd[@]}"
    "${cmd[@]}" >"$tmp/iperf-server.log" 2>&1 &
    IPERF_PID=$!
    if ! wait_listening "$port"; then
        echo "ERROR: iperf3 -s did not start: $(head -c 500 "$tmp/iperf-server.log")"
        exit 1
    fi
}

# iperf_rounds START STOP PATHS...: ROUNDS rounds over PATHS, the order rotated each round so
# that slow drift of the machine affects every path alike. For each: START NAME sets the path
# up and sets PATH_PORT (a non-zero status fails the run), iperf3 -c 127.0.0.1 -p PATH_PORT -t
# DURATION -J runs through it (after the prefix array iperf_prefix, with the extra arguments of
# the array iperf_args), STOP NAME tears it down. The receiver's Gbit/s of each run goes into
# GBPS[NAME] (space-separated); a failed run adds to failures. Uses tmp, ROUNDS, DURATION.
iperf_rounds() {
    local start=$1 stop=$2 r k name rc gbps
    shift 2
    local -a paths=("$@")
    for ((r = 1; r <= ROUNDS; r++)); do
        for ((k = 0; k < ${#paths[@]}; k++)); do
            name=${paths[$(((k + r - 1) % ${#paths[@]}))]}
            echo "--- round $r / $name"
            if ! "$start" "$name"; then
                failures=$((failures + 1))
                "$stop" "$name"
                continue
            fi
            local cmd=("${iperf_prefix[@]}" iperf3 -c 127.0.0.1 -p "$PATH_PORT" -t "$DURATION" -J
                "${iperf_args[@]}")
            show_cmd "${cmd[@]}"
            rc=0
            "${cmd[@]}" >"$tmp/iperf.json" 2>"$tmp/iperf.err" || rc=$?
            "$stop" "$name"
            gbps=$(python3 - "$tmp/iperf.json" <<'EOF' 2>/dev/null || true
import json, sys
d = json.load(open(sys.argv[1]))
if "error" in d:
    raise SystemExit(1)
print("%.3f" % (d["end"]["sum_received"]["bits_per_second"] / 1e9))
EOF
            )
            if ((rc != 0)) || [[ -z $gbps ]]; then
                echo "ERROR: iperf3 failed (status $rc): $(head -c 300 "$tmp/iperf.err")" \
                    "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error",""))' \
                        "$tmp/iperf.json" 2>/dev/null || true)"
                failures=$((failures + 1))
                continue
            fi
            echo "received: $gbps Gbit/s"
            # shellcheck disable=SC2004 # GBPS is the caller's associative array
            GBPS[$name]+="$gbps "
        done
    done
}

# gbps_table REF PATHS...: the Markdown table of the runs in GBPS, one row per path: its runs,
# their median (also left in MED[PATH], an associative array of the caller) and the ratio of
# that median to REF's.
gbps_table() {
    local ref=$1 name
    shift
    echo "| path | runs (Gbit/s) | median Gbit/s | / $ref |"
    echo "|---|---|---:|---:|"
    for name in "$@"; do
        # shellcheck disable=SC2086,SC2004 # word splitting of the value list is intended
        MED[$name]=$(median ${GBPS[$name]:-})
    done
    for name in "$@"; do
        printf '| %s | %s | %s | %s |\n' "$name" "${GBPS[$name]:-none}" "${MED[$name]}" \
            "$(ratio "${MED[$ref]}" "${MED[$name]}")"
    done
}

# measure KEY NAME PLURAL UNIT CMD...: runs the loadgen command line CMD against the running
# server SERVER_PID, then stops the server; appends loadgen's msgs_per_sec to MPS[KEY,NAME] and
# the server's CPU time per message (us, its utime + stime over the run / total_msgs) to
# CPU[KEY,NAME]. PLURAL and UNIT name what loadgen counts in the log ("messages", "msg"). A
# failed run adds to failures. Uses tmp and clk_tck.
measure() {
    local key=$1 name=$2 plural=$3 unit=$4
    shift 4
    show_cmd "$@"
    local t0 t1 out rc=0
    t0=$(cpu_ticks "$SERVER_PID" 2>/dev/null || echo 0)
    out=$("$@" 2>"$tmp/loadgen.err") || rc=$?
    t1=$(cpu_ticks "$SERVER_PID" 2>/dev/null || echo "$t0")
    stop_server
    echo "$out"
    if ((rc != 0)); then
        echo "ERROR: loadgen exited with status $rc: $(head -c 1000 "$tmp/loadgen.err")"
        failures=$((failures + 1))
        return
    fi
    local mps total cpu_us
    mps=$(field msgs_per_sec "$out")
    total=$(field total_msgs "$out")
    cpu_us=$(awk -v t=$((t1 - t0)) -v hz="$clk_tck" -v n="$total" \
        'BEGIN { if (n > 0) printf "%.4f", t * 1e6 / hz / n; else print "" }')
    local cpu_s
    cpu_s=$(awk -v t=$((t1 - t0)) -v hz="$clk_tck" 'BEGIN { printf "%.2f", t / hz }')
    echo "server CPU: $cpu_s s for $total $plural = ${cpu_us:-?} us/$unit"
    # shellcheck disable=SC2004 # MPS and CPU are the caller's associative arrays
    MPS[$key,$name]+="$mps "
    # shellcheck disable=SC2004
    if [[ -n $cpu_us ]]; then CPU[$key,$name]+="$cpu_us "; fi
}
