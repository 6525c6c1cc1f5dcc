# Helpers shared by the benchmark scripts (bench/run.sh, bench/relay.sh); sourced, not run.

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
