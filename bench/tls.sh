#!/usr/bin/env bash
# bench/tls.sh [BUILD_DIR] - TLS benchmarks, side by side in one run:
#   echo:       TLS echo throughput, BUILD/examples/echo_server --tls-cert/--tls-key against the
#               hand-written libuv + OpenSSL baseline BUILD/bench/uv_tls_echo_server, loaded by
#               BUILD/bench/loadgen --tls (every byte verified);
#   handshakes: new and resumed TLS handshakes per second (loadgen --handshakes) against
#               openssl s_server, the baseline and echo_server;
#   relay:      plain -> TLS -> plain through a pair of BUILD/tools/pipeworks-relay processes
#               (tls:// endpoints), a pair of stunnel4 and a pair of socat, loaded by iperf3;
#   idle:       server memory per idle TLS connection (bench/tls_idle.py: BENCH_TLS_IDLE_CONNS
#               handshaken connections that echoed one byte each), echo_server and the baseline;
#   instructions: the user-space instructions each echo server executes per message, counted
#               by valgrind --tool=callgrind (not timed, so free of the machine's noise): two
#               runs of the echo workloads, BENCH_INSTR_SHORT and BENCH_INSTR_LONG seconds long,
#               and (Ir_long - Ir_short) / (messages_long - messages_short), which leaves out
#               start-up and handshakes. The kernel's share (the same system calls for both
#               servers) is not in it.
# Prints every command line, each result, and Markdown tables of the medians with ratios.
# BUILD_DIR defaults to build-bench (relative to the current directory or to the repository);
# it needs -Dbenchmarks=true. Needs openssl, python3, and for the relay section iperf3, socat
# and stunnel4 (Debian: apt-get install iperf3 socat stunnel4), and for the instructions section
# valgrind. Results go to stdout only.
#
# Every connection uses TLS 1.3 with TLS_AES_128_GCM_SHA256 and an ECDSA P-256 certificate
# made for 127.0.0.1 by this script: OPENSSL_CONF points every process at a configuration that
# allows only that suite (stunnel, which sets its own suites, is told in its configuration),
# and the suite each TLS server negotiates is checked with an unrestricted openssl s_client.
#
# Environment (defaults in brackets):
#   BENCH_DURATION   measured seconds per run [5]
#   BENCH_WARMUP     loadgen warmup seconds before measuring [1]
#   BENCH_ROUNDS     runs per server (path) and workload; the tables show the median [3]
#   BENCH_PIN        shared | split | none [shared]: as in bench/run.sh, for the echo and
#                    handshake sections (the relay section is never pinned)
#   BENCH_HS_CONNS   concurrent connections of the handshake workloads [4]
#   BENCH_ONLY       comma-separated sections to run, of echo, handshakes, relay, idle,
#                    instructions [all]
#   BENCH_TLS_IDLE_CONNS connections of the idle section [2000]
#   BENCH_PIPEWORKS_ARGS extra arguments for echo_server, e.g. "--idle-timeout 0" [unset]
#   BENCH_BASELINE_ARGS  extra arguments for uv_tls_echo_server, e.g. "--idle-timeout 60" (the
#                    idle deadline echo_server has by default, as a timer per connection) [unset]
#   BENCH_INSTR_SHORT, BENCH_INSTR_LONG  the instructions section's two run lengths [2, 8]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/common.sh
. "$here/common.sh"
build=$(build_dir tls.sh "${1:-build-bench}")

DURATION=${BENCH_DURATION:-5}
WARMUP=${BENCH_WARMUP:-1}
ROUNDS=${BENCH_ROUNDS:-3}
PIN=${BENCH_PIN:-shared}
HS_CONNS=${BENCH_HS_CONNS:-4}
ONLY=${BENCH_ONLY:-}
if [[ ! $ROUNDS =~ ^[1-9][0-9]*$ || ! $HS_CONNS =~ ^[1-9][0-9]*$ ]]; then
    echo "tls.sh: BENCH_ROUNDS and BENCH_HS_CONNS must be positive integers" >&2
    exit 2
fi
sections='(echo|handshakes|relay|idle|instructions)'
if [[ -n $ONLY && ! $ONLY =~ ^$sections(,$sections)*$ ]]; then
    echo "tls.sh: BENCH_ONLY must be a comma-separated list of echo, handshakes, relay, idle," \
        "instructions" >&2
    exit 2
fi
section_on() { [[ -z $ONLY || ,$ONLY, == *,$1,* ]]; }
case $PIN in
    shared) server_pin=(taskset -c 0) client_pin=(taskset -c 0) ;;
    split) server_pin=(taskset -c 0) client_pin=(taskset -c 1) ;;
    none) server_pin=() client_pin=() ;;
    *)
        echo "tls.sh: BENCH_PIN must be shared, split or none" >&2
        exit 2
        ;;
esac

baseline_bin=$build/bench/uv_tls_echo_server
pipeworks_bin=$build/examples/echo_server
loadgen=$build/bench/loadgen
relay_bin=$build/tools/pipeworks-relay
for f in "$baseline_bin" "$pipeworks_bin" "$loadgen"; do
    if [[ ! -x $f ]]; then
        echo "tls.sh: $f is missing; build with -Dbenchmarks=true (ninja -C $build)" >&2
        exit 2
    fi
done
for tool in openssl python3 taskset; do
    if ! command -v "$tool" >/dev/null; then
        echo "tls.sh: $tool is missing" >&2
        exit 2
    fi
done

clk_tck=$(getconf CLK_TCK) # used by measure (common.sh)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pipeworks-tls-bench.XXXXXX")
SERVER_PID=""
CHAIN_PIDS=""
IPERF_PID=""
failures=0
cleanup() {
    local pid
    for pid in $SERVER_PID $CHAIN_PIDS $IPERF_PID; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in $SERVER_PID $CHAIN_PIDS $IPERF_PID; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- certificate, suite

tls_cert=$tmp/cert.pem
tls_key=$tmp/key.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout "$tls_key" -out "$tls_cert" \
    2>"$tmp/req.err" || {
    echo "tls.sh: openssl req failed: $(head -c 500 "$tmp/req.err")" >&2
    exit 1
}
SUITE=TLS_AES_128_GCM_SHA256
cat >"$tmp/openssl.cnf" <<EOF
openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1.3
Ciphersuites = $SUITE
EOF
export OPENSSL_CONF=$tmp/openssl.cnf

# check_suite NAME PORT: the protocol and suite the TLS server on 127.0.0.1:PORT picks for a
# client that offers every version and suite of OpenSSL's defaults; a warning unless they are
# TLS 1.3 and $SUITE.
check_suite() {
    local got
    got=$(OPENSSL_CONF=/dev/null timeout 5 openssl s_client -connect "127.0.0.1:$2" \
        </dev/null 2>/dev/null | awk '/Cipher is/ { sub(",", "", $2); print $2, $NF; exit }') ||
        true
    echo "$1 negotiates: ${got:-nothing}"
    if [[ $got != "TLSv1.3 $SUITE" ]]; then
        echo "WARNING: $1 did not negotiate TLSv1.3 $SUITE"
    fi
}

# ---------------------------------------------------------------- environment

echo "# TLS benchmarks: echo, handshakes, relays"
echo
machine_header "openssl:  $(openssl version)" "build:    $build" \
    "settings: ${DURATION} s per run (loadgen warmup ${WARMUP} s), ${ROUNDS} round(s), pinning '$PIN', ${HS_CONNS} handshake connections; TLS 1.3 $SUITE, ECDSA P-256"
echo

declare -A MPS CPU # "workload,server" -> space-separated values, one per successful run

# tls_server NAME: starts TLS server NAME (baseline, pipeworks, s_server) on 127.0.0.1 with the
# certificate; sets SERVER_PID and SERVER_ADDR.
tls_server() {
    SERVER_TERM_STATUS=0
    case $1 in
        baseline)
            local -a extra=()
            read -r -a extra <<<"${BENCH_BASELINE_ARGS:-}"
            start_server "$baseline_bin" --tls-cert "$tls_cert" --tls-key "$tls_key" "${extra[@]}"
            ;;
        pipeworks)
            local -a extra=()
            read -r -a extra <<<"${BENCH_PIPEWORKS_ARGS:-}"
            start_server "$pipeworks_bin" --tls-cert "$tls_cert" --tls-key "$tls_key" "${extra[@]}"
            ;;
        s_server)
            # s_server takes a port, not 0: one the OS has just given out and taken back.
            local port
            port=$(free_port)
            # Its stdin is what it sends to each client: a FIFO held open sends nothing and
            # never ends (at EOF it would close every connection at once).
            [[ -p $tmp/s_server.in ]] || mkfifo "$tmp/s_server.in"
            local cmd=("${server_pin[@]}" openssl s_server -accept "127.0.0.1:$port"
                -cert "$tls_cert" -key "$tls_key" -quiet)
            show_cmd "${cmd[@]}"
            "${cmd[@]}" <>"$tmp/s_server.in" >"$tmp/server.out" 2>"$tmp/server.err" &
            SERVER_PID=$!
            SERVER_TERM_STATUS=143 # its normal end on SIGTERM
            if ! wait_listening "$port"; then
                echo "ERROR: openssl s_server did not listen: $(head -c 500 "$tmp/server.err")"
                stop_server
                return 1
            fi
            SERVER_ADDR=127.0.0.1:$port
            ;;
    esac
}

# run_tls KEY LABEL NAME PLURAL UNIT LOADGEN_ARGS: one loadgen --tls run against a fresh server.
run_tls() {
    local wkey=$1 label=$2 name=$3 plural=$4 unit=$5
    local -a largs
    read -r -a largs <<<"$6"
    echo "--- $label / $name"
    if ! tls_server "$name"; then
        failures=$((failures + 1))
        return
    fi
    measure "$wkey" "$name" "$plural" "$unit" "${client_pin[@]}" "$loadgen" \
        --target "$SERVER_ADDR" "${largs[@]}" --duration "$DURATION" --warmup "$WARMUP" \
        --tls --tls-ca "$tls_cert"
}

# median_table VALUES COLUMN FORMAT GOAL KEYS NAMES SERVERS: a Markdown table, one row per
# workload (KEYS: its keys in the associative array named VALUES, space-separated; NAMES: its
# labels, separated by "|"), one column "SERVER COLUMN" per server of SERVERS with the median
# of its values (FORMAT: fmt_int or fmt_dec), then the ratios pipeworks / each other server,
# and when GOAL is not empty whether the first of these ratios reaches it.
median_table() {
    local -n values=$1
    local column=$2 format=$3 goal=$4
    local -a keys names servers others=()
    read -r -a keys <<<"$5"
    IFS='|' read -r -a names <<<"$6"
    read -r -a servers <<<"$7"
    local s w head="| workload |" rule="|---|"
    for s in "${servers[@]}"; do
        head+=" $s $column |"
        rule+="---:|"
        [[ $s == pipeworks ]] || others+=("$s")
    done
    for s in "${others[@]}"; do
        head+=" pipeworks / $s |"
        rule+="---:|"
    done
    if [[ -n $goal ]]; then
        head+=" goal | met |"
        rule+="---|---|"
    fi
    echo "$head"
    echo "$rule"
    for w in "${!keys[@]}"; do
        local row="| ${names[$w]} |"
        local -A med=()
        for s in "${servers[@]}"; do
            # shellcheck disable=SC2086 # word splitting of the value lists is intended
            med[$s]=$(median ${values[${keys[$w]},$s]:-})
            row+=" $("$format" "${med[$s]}") |"
        done
        for s in "${others[@]}"; do row+=" $(ratio "${med[$s]}" "${med[pipeworks]}") |"; done
        if [[ -n $goal ]]; then
            row+=" pipeworks / ${others[0]} >= $goal |"
            row+=" $(meets "${med[${others[0]}]}" "${med[pipeworks]}" "$goal") |"
        fi
        echo "$row"
    done
    echo
}

# round_ratios VALUES KEYS NAMES: for each workload, pipeworks / baseline of every round (the
# two runs of a round are back to back, so a ratio compares like with like when the machine's
# speed drifts), their median, and in how many rounds pipeworks was ahead. Only when both
# servers completed every round (the lists would not pair up otherwise).
round_ratios() {
    local -n rvalues=$1
    local -a keys names
    read -r -a keys <<<"$2"
    IFS='|' read -r -a names <<<"$3"
    local w
    echo "Per round, pipeworks / baseline msgs/s:"
    echo
    for w in "${!keys[@]}"; do
        local -a base_v pw_v
        read -r -a base_v <<<"${rvalues[${keys[$w]},baseline]:-}"
        read -r -a pw_v <<<"${rvalues[${keys[$w]},pipeworks]:-}"
        if ((${#base_v[@]} == 0 || ${#base_v[@]} != ${#pw_v[@]})); then
            echo "- ${names[$w]}: n/a (runs failed)"
            continue
        fi
        local -a r=()
        local i ahead=0
        for i in "${!base_v[@]}"; do
            r+=("$(awk -v a="${base_v[$i]}" -v b="${pw_v[$i]}" 'BEGIN { printf "%.2f", b / a }')")
            awk -v a="${base_v[$i]}" -v b="${pw_v[$i]}" 'BEGIN { exit !(b > a) }' &&
                ahead=$((ahead + 1))
        done
        local med
        med=$(awk -v m="$(median "${r[@]}")" 'BEGIN { printf "%.2f", m }')
        echo "- ${names[$w]}: ${r[*]}; median $med, pipeworks ahead in $ahead of ${#r[@]}"
    done
    echo
}

# ---------------------------------------------------------------- echo

if section_on echo; then
    echo "## TLS echo"
    echo
    for s in baseline pipeworks; do
        tls_server "$s" && check_suite "$s" "${SERVER_ADDR##*:}"
        stop_server
    done
    ew_keys="e0 e1"
    ew_names="64-byte pipelined (10 connections x 16 in flight)|16 KiB messages (4 connections x 4 in flight)"
    ew_load=("--conns 10 --inflight 16 --size 64" "--conns 4 --inflight 4 --size 16384")
    IFS='|' read -r -a ew_label <<<"$ew_names"
    e_servers=(baseline pipeworks)
    for w in 0 1; do
        for ((r = 1; r <= ROUNDS; r++)); do
            mapfile -t order < <(round_order 2 "$r")
            for s in "${order[@]}"; do
                run_tls "e$w" "TLS echo ${ew_label[$w]}" "${e_servers[$s]}" messages msg \
                    "${ew_load[$w]}"
            done
        done
    done
    echo
    echo "TLS echo, median of ${ROUNDS} run(s) of ${DURATION} s each; baseline:"
    echo "uv_tls_echo_server, pipeworks: echo_server --tls-cert/--tls-key."
    echo
    median_table MPS msgs/s fmt_int 1.0 "$ew_keys" "$ew_names" "baseline pipeworks"
    round_ratios MPS "$ew_keys" "$ew_names"
    echo "TLS echo, server CPU time per message (lower is better); ratios above 1: pipeworks"
    echo "spends more."
    echo
    median_table CPU us/msg fmt_dec "" "$ew_keys" "$ew_names" "baseline pipeworks"
fi

# ---------------------------------------------------------------- handshakes

if section_on handshakes; then
    echo "## TLS handshakes"
    echo
    tls_server s_server && check_suite s_server "${SERVER_ADDR##*:}"
    stop_server
    hw_keys="h0 h1"
    hw_names="new (full handshake, $HS_CONNS connections)|resumed (TLS 1.3 ticket, $HS_CONNS connections)"
    hw_mode=(new resumed)
    IFS='|' read -r -a hw_label <<<"$hw_names"
    h_servers=(s_server baseline pipeworks)
    for w in 0 1; do
        for ((r = 1; r <= ROUNDS; r++)); do
            mapfile -t order < <(round_order 3 "$r")
            for s in "${order[@]}"; do
                run_tls "h$w" "handshakes ${hw_label[$w]}" "${h_servers[$s]}" handshakes \
                    handshake "--conns $HS_CONNS --handshakes ${hw_mode[$w]}"
            done
        done
    done
    echo
    echo "TLS handshakes per second, median of ${ROUNDS} run(s) of ${DURATION} s each (loadgen"
    echo "--handshakes: connect, handshake, close_notify, close; resumed: every connection"
    echo "resumes its predecessor's session). s_server: openssl s_server, one connection at a"
    echo "time; baseline: uv_tls_echo_server; pipeworks: echo_server --tls-cert/--tls-key."
    echo
    median_table MPS handshakes/s fmt_int "" "$hw_keys" "$hw_names" "s_server baseline pipeworks"
    echo "Server CPU time per handshake (lower is better); ratios above 1: pipeworks spends more."
    echo
    median_table CPU us/handshake fmt_dec "" "$hw_keys" "$hw_names" "s_server baseline pipeworks"
fi

# ---------------------------------------------------------------- relay pairs

# start_bg OUT ERR CMD...: starts CMD in the background, its stdout to OUT and stderr to ERR
# (ERR may be OUT), and adds its PID to CHAIN_PIDS.
start_bg() {
    local out=$1 err=$2
    shift 2
    show_cmd "$@"
    : >"$out"
    if [[ $err == "$out" ]]; then
        "$@" >"$out" 2>&1 &
    else
        "$@" >"$out" 2>"$err" &
    fi
    CHAIN_PIDS+=" $!"
}

stop_chain() {
    local pid
    for pid in $CHAIN_PIDS; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in $CHAIN_PIDS; do
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    CHAIN_PIDS=""
}

# start_chain NAME: starts the pair of path NAME (direct: none) in front of iperf3 -s on
# iperf_port; sets PATH_PORT, where iperf3 -c connects. The terminating side (TLS in, plain
# out to iperf3 -s) starts first, then the originating side (plain in, TLS out to it).
start_chain() {
    local term
    CHAIN_PIDS=""
    case $1 in
        direct) PATH_PORT=$iperf_port ;;
        pipeworks-relay)
            start_bg "$tmp/term.out" "$tmp/term.err" "$relay_bin" --cert "$tls_cert" \
                --key "$tls_key" tls://127.0.0.1:0 "tcp://127.0.0.1:$iperf_port"
            term=$(listening_port "$tmp/term.out") || {
                echo "ERROR: the terminating pipeworks-relay did not listen:" \
                    "$(head -c 500 "$tmp/term.err")"
                return 1
            }
            start_bg "$tmp/orig.out" "$tmp/orig.err" "$relay_bin" --ca "$tls_cert" \
                tcp://127.0.0.1:0 "tls://127.0.0.1:$term"
            PATH_PORT=$(listening_port "$tmp/orig.out") || {
                echo "ERROR: the originating pipeworks-relay did not listen:" \
                    "$(head -c 500 "$tmp/orig.err")"
                return 1
            }
            ;;
        stunnel)
            # stunnel and socat take ports, not 0: ones the OS has just given out and taken back.
            term=$(free_port)
            PATH_PORT=$(free_port)
            cat >"$tmp/stunnel-term.conf" <<EOF
foreground = yes
pid =
[term]
accept = 127.0.0.1:$term
connect = 127.0.0.1:$iperf_port
cert = $tls_cert
key = $tls_key
sslVersionMin = TLSv1.3
ciphersuites = $SUITE
EOF
            cat >"$tmp/stunnel-orig.conf" <<EOF
foreground = yes
pid =
[orig]
client = yes
accept = 127.0.0.1:$PATH_PORT
connect = 127.0.0.1:$term
CAfile = $tls_cert
verifyChain = yes
checkIP = 127.0.0.1
sslVersionMin = TLSv1.3
ciphersuites = $SUITE
EOF
            start_bg "$tmp/term.err" "$tmp/term.err" stunnel4 "$tmp/stunnel-term.conf"
            start_bg "$tmp/orig.err" "$tmp/orig.err" stunnel4 "$tmp/stunnel-orig.conf"
            ;;
        socat)
            term=$(free_port)
            PATH_PORT=$(free_port)
            start_bg "$tmp/term.err" "$tmp/term.err" socat \
                "OPENSSL-LISTEN:$term,bind=127.0.0.1,fork,reuseaddr,cert=$tls_cert,key=$tls_key,verify=0" \
                "TCP:127.0.0.1:$iperf_port"
            start_bg "$tmp/orig.err" "$tmp/orig.err" socat \
                "TCP-LISTEN:$PATH_PORT,bind=127.0.0.1,fork,reuseaddr" \
                "OPENSSL:127.0.0.1:$term,cafile=$tls_cert,verify=1"
            ;;
    esac
    if [[ $1 != direct ]]; then
        if ! wait_listening "$term" || ! wait_listening "$PATH_PORT"; then
            echo "ERROR: the $1 pair did not listen: $(head -c 300 "$tmp/term.err")" \
                "$(head -c 300 "$tmp/orig.err")"
            return 1
        fi
        CHAIN_TERM_PORT=$term
    fi
}

if section_on relay; then
    echo "## Plain -> TLS -> plain through a pair of relays"
    echo
    missing=""
    for tool in iperf3 socat stunnel4; do
        command -v "$tool" >/dev/null || missing+=" $tool"
    done
    if [[ -n $missing ]]; then
        echo "NOTE: skipped: missing$missing (Debian: apt-get install iperf3 socat stunnel4)"
        echo
    else
        paths=(direct stunnel socat)
        relay_note=""
        if [[ ! -x $relay_bin ]]; then
            relay_note="$relay_bin is not built (-Dtools=true)"
        else
            # Whether this pipeworks-relay takes tls:// endpoints: started once, as in the runs.
            : >"$tmp/probe.out"
            "$relay_bin" --cert "$tls_cert" --key "$tls_key" tls://127.0.0.1:0 tcp://127.0.0.1:9 \
                >"$tmp/probe.out" 2>"$tmp/probe.err" &
            probe=$!
            if listening_port "$tmp/probe.out" >/dev/null; then
                paths=(direct pipeworks-relay stunnel socat)
            else
                relay_note="pipeworks-relay refuses tls:// endpoints with --cert/--key:"
                relay_note+=" $(head -n 1 "$tmp/probe.err")"
            fi
            kill -TERM "$probe" 2>/dev/null || true
            wait "$probe" 2>/dev/null || true
        fi
        if [[ -n $relay_note ]]; then
            echo "NOTE: the pipeworks-relay pair is skipped: $relay_note"
            echo
        fi
        echo "tools: $(iperf3 --version | head -n 1); $(socat -V | awk '/socat version/ { print; exit }');" \
            "$(stunnel4 -version 2>&1 | awk '/^stunnel/ { print; exit }')"
        echo
        declare -A GBPS MED
        iperf_port=$(free_port)
        # The suites, before iperf3 -s listens: the terminating sides' connections onwards fail
        # then, and no stray connection can reach iperf3 -s.
        for name in "${paths[@]}"; do
            [[ $name == direct ]] && continue
            if start_chain "$name" >"$tmp/chain.log"; then
                check_suite "$name (terminating side)" "$CHAIN_TERM_PORT"
            else
                cat "$tmp/chain.log"
            fi
            stop_chain
        done
        echo
        start_iperf_server "$iperf_port"
        iperf_prefix=(timeout $((DURATION + 30)))
        iperf_args=()
        iperf_rounds start_chain stop_chain "${paths[@]}"
        kill -TERM "$IPERF_PID" 2>/dev/null || true
        wait "$IPERF_PID" 2>/dev/null || true
        IPERF_PID=""

        echo
        echo "Plain -> TLS -> plain, iperf3 through each pair, median of ${ROUNDS} run(s) of" \
            "${DURATION} s, receiver side, Gbit/s."
        echo
        gbps_table stunnel "${paths[@]}"
        echo
        if [[ -n $relay_note ]]; then
            echo "pipeworks-relay / stunnel: n/a (skipped: $relay_note)"
        else
            r=$(ratio "${MED[stunnel]}" "${MED[pipeworks-relay]}")
            echo "pipeworks-relay / stunnel: $r (goal >= 1.2: $(meets "${MED[stunnel]}" "${MED[pipeworks-relay]}" 1.2))"
        fi
        echo
    fi
fi

# ---------------------------------------------------------------- idle connections

if section_on idle; then
    IDLE_N=${BENCH_TLS_IDLE_CONNS:-2000}
    echo "## Memory per idle TLS connection ($IDLE_N connections)"
    echo
    declare -A IDLE_KIB=()
    for name in baseline pipeworks; do
        if [[ $name == baseline ]]; then
            cmd=("$baseline_bin" --tls-cert "$tls_cert" --tls-key "$tls_key")
        else
            cmd=("$pipeworks_bin" --tls-cert "$tls_cert" --tls-key "$tls_key"
                --max-clients 1000000 --idle-timeout 0)
        fi
        show_cmd python3 "$here/tls_idle.py" --cert "$tls_cert" --key "$tls_key" \
            --count "$IDLE_N" -- "${cmd[@]}"
        if out=$(python3 "$here/tls_idle.py" --cert "$tls_cert" --key "$tls_key" \
            --count "$IDLE_N" -- "${cmd[@]}"); then
            echo "$name: $out"
            IDLE_KIB[$name]=$(sed -n 's/.*per_conn_kib=\([0-9.]*\).*/\1/p' <<<"$out")
        else
            echo "ERROR: $name: the idle measurement failed: $out"
            failures=$((failures + 1))
        fi
    done
    echo
    echo "| server | KiB per idle TLS connection |"
    echo "|---|---:|"
    for name in baseline pipeworks; do echo "| $name | ${IDLE_KIB[$name]:-n/a} |"; done
    if [[ -n ${IDLE_KIB[pipeworks]:-} ]]; then
        echo
        echo "pipeworks: ${IDLE_KIB[pipeworks]} KiB (goal <= 40:" \
            "$(awk -v v="${IDLE_KIB[pipeworks]}" 'BEGIN { print (v <= 40) ? "met" : "MISSED" }'))"
    fi
    echo
fi

# ---------------------------------------------------------------- instructions per message

# callgrind_run NAME SECONDS LOADGEN_ARGS: server NAME under callgrind, loaded for SECONDS (no
# warmup); prints "MESSAGES INSTRUCTIONS" (nothing on failure, which adds to failures).
callgrind_run() {
    local name=$1 seconds=$2 bin out
    local -a largs
    read -r -a largs <<<"$3"
    case $name in
        baseline) bin=$baseline_bin ;;
        pipeworks) bin=$pipeworks_bin ;;
    esac
    local saved_pin=("${server_pin[@]}")
    server_pin=(valgrind --tool=callgrind "--callgrind-out-file=$tmp/callgrind.out")
    rm -f "$tmp/callgrind.out"
    if ! start_server "$bin" --tls-cert "$tls_cert" --tls-key "$tls_key" >&2; then
        server_pin=("${saved_pin[@]}")
        return
    fi
    server_pin=("${saved_pin[@]}")
    local cmd=("${client_pin[@]}" "$loadgen" --target "$SERVER_ADDR" "${largs[@]}"
        --duration "$seconds" --warmup 0 --tls --tls-ca "$tls_cert")
    show_cmd "${cmd[@]}" >&2
    if ! out=$("${cmd[@]}" 2>"$tmp/loadgen.err"); then
        echo "ERROR: loadgen failed: $(head -c 500 "$tmp/loadgen.err")" >&2
        stop_server >&2
        return
    fi
    stop_server >&2
    local ir
    ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$tmp/callgrind.out" 2>/dev/null)
    if [[ -z $ir ]]; then
        echo "ERROR: callgrind wrote no totals for $name" >&2
        return
    fi
    echo "$(field total_msgs "$out") $ir"
}

if section_on instructions; then
    if ! command -v valgrind >/dev/null; then
        echo "tls.sh: the instructions section needs valgrind" >&2
        exit 2
    fi
    SHORT=${BENCH_INSTR_SHORT:-2}
    LONG=${BENCH_INSTR_LONG:-8}
    echo "## TLS echo, user-space instructions per message (callgrind)"
    echo
    declare -A IR=()
    iw_names=("64-byte pipelined (10 connections x 16 in flight)"
        "16 KiB messages (4 connections x 4 in flight)")
    iw_load=("--conns 10 --inflight 16 --size 64" "--conns 4 --inflight 4 --size 16384")
    for w in 0 1; do
        for name in baseline pipeworks; do
            echo "--- ${iw_names[$w]} / $name"
            a=$(callgrind_run "$name" "$SHORT" "${iw_load[$w]}")
            b=$(callgrind_run "$name" "$LONG" "${iw_load[$w]}")
            m1="" i1="" m2="" i2=""
            read -r m1 i1 <<<"$a" || true
            read -r m2 i2 <<<"$b" || true
            if [[ -n $m1 && -n $m2 ]] && ((m2 > m1)); then
                IR[$w,$name]=$(awk -v a="$i1" -v b="$i2" -v m="$m1" -v n="$m2" \
                    'BEGIN { printf "%.0f", (b - a) / (n - m) }')
                echo "$SHORT s: $m1 messages, $i1 instructions; $LONG s: $m2 messages," \
                    "$i2 instructions; ${IR[$w,$name]} per message"
            else
                echo "ERROR: $name: no usable callgrind runs ('$a', '$b')"
                failures=$((failures + 1))
            fi
        done
    done
    echo
    echo "| workload | baseline instructions/msg | pipeworks instructions/msg | pipeworks / baseline |"
    echo "|---|---:|---:|---:|"
    for w in 0 1; do
        echo "| ${iw_names[$w]} | ${IR[$w,baseline]:-n/a} | ${IR[$w,pipeworks]:-n/a} |" \
            "$(ratio "${IR[$w,baseline]:-}" "${IR[$w,pipeworks]:-}") |"
    done
    echo
fi

echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) at the end;" \
    "CPU $(cpu_busy_pct)% busy over 1 s"
if ((failures > 0)); then
    echo "$failures run(s) FAILED (see the ERROR lines above)"
    exit 1
fi
