#!/usr/bin/env bash
# Context switches and CPU per operation, machine-wide, for Sillok binaries.
#
# Timing figures on this shared 2-core machine move by 30% between runs;
# the number of context switches an operation causes barely moves, so it
# shows whether a change to how work is handed between threads and processes
# did anything. For each binary (in turn, ROUNDS times, alternating): a fresh
# `sillok dev` (nodes at `sillok node`'s upkeep pace), then for each size of
# SIZES a PUT phase and a GET phase of loadgen at concurrency 8, each under
# `perf stat -a -e context-switches,cpu-clock`. Machine-wide: loadgen and
# everything else running is counted too, the same for every binary.
#
# Usage: benches/switch-figures.sh NAME=BINARY [NAME=BINARY ...]
#   e.g. benches/switch-figures.sh before=/tmp/sillok-before after=target/release/sillok
# Environment: SIZES (default "256KiB 1MiB"), COUNT_<size> (default 1500 for
#   sizes under 1 MiB, else 500), ROUNDS (2), LOADGEN (target/release/loadgen),
#   GET_REPEAT (default 1): the GET phase reads the objects this many times
#   (a GET phase is short next to its PUT phase; repeating it gives the
#   CPU figure more samples), UPKEEP_MS (default 30000, `sillok node`'s
#   pace): the nodes' anti-entropy and rebuild rounds (the collector's is
#   twice it); a round that falls inside a phase is counted with it, so a
#   long pace (600000) keeps comparisons of request paths cleaner.
# Output: one line per (round, binary, size, op) on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 1 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2; }
command -v perf >/dev/null || { echo "switch-figures: needs perf (linux-perf)" >&2; exit 1; }
LOADGEN=$(realpath "${LOADGEN:-target/release/loadgen}")
SIZES=${SIZES:-"256KiB 1MiB"}
ROUNDS=${ROUNDS:-2}

run_one() {   # NAME BINARY
    local name=$1 bin=$2 d dev sz n op flag st cs cpu
    d=$(mktemp -d /tmp/sillok-switches.XXXXXX)
    "$bin" dev --data "$d" --port 0 --node-arg=--sync-every-ms="${UPKEEP_MS:-30000}" \
        --node-arg=--rebuild-every-ms="${UPKEEP_MS:-30000}" --node-arg=--collect-every-ms="$((2 * ${UPKEEP_MS:-30000}))" >"$d/dev.log" 2>&1 &
    dev=$!
    for _ in $(seq 600); do
        [ -s "$d/cluster.env" ] && [ -s "$d/gateway.pid" ] && break
        kill -0 "$dev" 2>/dev/null || { echo "$name: sillok dev exited; $d/dev.log:" >&2; tail "$d/dev.log" >&2; exit 1; }
        sleep 0.2
    done
    (
        # shellcheck disable=SC1091
        . "$d/cluster.env"
        export S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
        sleep 10   # start-up work (first catch-up rounds) out of the way
        for sz in $SIZES; do
            var="COUNT_${sz//./_}"
            case $sz in *KiB) n=${!var:-1500} ;; *) n=${!var:-500} ;; esac
            for op in put get; do
                flag="--${op}s-only"
                st="$d/stat-$sz-$op.csv"
                reps=1
                [ "$op" = get ] && reps=${GET_REPEAT:-1}
                t0=$(date +%s.%N)
                perf stat -a -x, -e context-switches,cpu-clock -o "$st" -- \
                    bash -c 'for _ in $(seq "$1"); do "${@:2}" || exit 1; done' _ "$reps" \
                    "$LOADGEN" --objects-only "$sz" --count "$n" "$flag" --concurrency 8 --prefix "sw$sz/" \
                    >"$d/loadgen-$sz-$op.txt" 2>&1 || { echo "$name: loadgen failed:" >&2; tail "$d/loadgen-$sz-$op.txt" >&2; exit 1; }
                t1=$(date +%s.%N)
                cs=$(awk -F, '$3 == "context-switches" { print $1 }' "$st")
                cpu=$(awk -F, '$3 ~ /^cpu-clock/ { print $1 }' "$st")
                awk -v r="$ROUND" -v name="$name" -v sz="$sz" -v op="$op" -v n="$((n * reps))" -v cs="$cs" -v cpu="$cpu" -v t0="$t0" -v t1="$t1" 'BEGIN {
                    printf "round %s  %-12s %-7s %-3s x%-5d context switches/op %7.1f   CPU ms/op (machine) %6.2f   ops/s %7.1f\n",
                        r, name, sz, op, n, cs / n, cpu / n, n / (t1 - t0) }'
            done
        done
    )
    kill "$dev"
    wait "$dev" 2>/dev/null || true
    rm -rf "$d"
}

for ROUND in $(seq "$ROUNDS"); do
    args=("$@")
    # Alternate which binary goes first.
    if [ $((ROUND % 2)) -eq 0 ]; then
        rev=()
        for ((i = ${#args[@]} - 1; i >= 0; i--)); do rev+=("${args[i]}"); done
        args=("${rev[@]}")
    fi
    for a in "${args[@]}"; do
        run_one "${a%%=*}" "${a#*=}"
    done
done
