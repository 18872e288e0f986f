#!/usr/bin/env bash
# What mutual TLS inside the cluster costs, as a ratio of plain internal HTTP,
# in one run on this machine: PUT then GET of 1 MiB and 64 KiB objects through
# a fresh `sillok dev` with internal mTLS (the default) and through a fresh one
# with `--insecure-internal-http`, the same client (loadgen, same flags; the S3
# endpoint is plain HTTP in both), ROUNDS times with the order alternating.
# Each cluster is given WARMUP_S seconds after start (its first catch-up
# rounds) before the load. Around each phase the CPU seconds of every server
# process (gateway, nodes, catalog replicas; /proc/PID/stat) are read.
# Reports the medians over the rounds: MiB/s and server CPU ms per operation
# for each mode, and the ratios mTLS / plain.
# Usage: benches/mtls-figures.sh [OUT_DIR] [PROFILE]
#   OUT_DIR default target/mtls-figures; PROFILE `release` (default) or `dev`.
# Environment: ROUNDS (default 3), CONC (default 8), WARMUP_S (default 15),
#   COUNT_1MiB (default 400), COUNT_64KiB (default 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/mtls-figures}
PROFILE=${2:-release}
ROUNDS=${ROUNDS:-3}
CONC=${CONC:-8}
WARMUP_S=${WARMUP_S:-15}
COUNT_1MiB=${COUNT_1MiB:-400}
COUNT_64KiB=${COUNT_64KiB:-2000}
mkdir -p "$OUT"
rm -f "$OUT"/*.tsv
if [ "$PROFILE" = release ]; then
    cargo build --release -p sillok --bin sillok -p sillok-benches --bin loadgen >&2
    BIN=target/release
else
    cargo build -p sillok --bin sillok -p sillok-benches --bin loadgen >&2
    BIN=target/debug
fi
TICK=$(getconf CLK_TCK)
S="$OUT/summary.txt"
R="$OUT/runs.tsv"   # mode round size op mib_s ops cpu_s
{
    echo "internal mTLS vs plain internal HTTP, $(date -u +%FT%TZ), $PROFILE build, $(nproc) cores shared with other work"
    echo "sillok dev (3 sites x 3 nodes, 4+2, fsync on) on loopback, a fresh cluster per mode and round, ${WARMUP_S} s warm-up;"
    echo "loadgen --concurrency $CONC: $COUNT_1MiB x 1 MiB, $COUNT_64KiB x 64 KiB (PUT phase, then GET phase); $ROUNDS rounds, order alternating"
    echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$S"

cpu_ticks() { # PID...: utime+stime of all of them
    local t=0 p
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
    done
    echo "$t"
}

# The MiB/s and op count of the ALL line of a loadgen report.
all_line() { awk '$1 == "ALL" && $2 ~ /^[0-9]/ { print $4, $2; exit }' "$1"; }

run() { # MODE ROUND, then extra `sillok dev` flags
    local mode=$1 round=$2 data dev size count op c0 c1 pids
    shift 2
    data=$(mktemp -d /tmp/sillok-mtls-figures.XXXXXX)
    "$BIN/sillok" dev --data "$data" --port 0 "$@" >"$OUT/dev-$mode-$round.log" 2>&1 &
    dev=$!
    for _ in $(seq 600); do [ -s "$data/cluster.env" ] && [ -s "$data/gateway.pid" ] && break; sleep 0.1; done
    [ -s "$data/cluster.env" ] || { echo "sillok dev ($mode) did not come up; see $OUT/dev-$mode-$round.log" >&2; kill "$dev"; exit 1; }
    mapfile -t pids < <(cat "$data/gateway.pid" "$data"/sites/*.pids)
    sleep "$WARMUP_S"
    for size in 1MiB 64KiB; do
        count=COUNT_$size
        for op in puts gets; do
            c0=$(cpu_ticks "${pids[@]}")
            (
                . "$data/cluster.env"
                "$BIN/loadgen" --objects-only "$size" --count "${!count}" --"$op"-only --concurrency "$CONC" \
                    --progress 0 --seed 1 --prefix "m/" >"$OUT/$mode-$round-$size-$op.txt" 2>&1 || true
            )
            c1=$(cpu_ticks "${pids[@]}")
            read -r mibs n < <(all_line "$OUT/$mode-$round-$size-$op.txt")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$round" "$size" "${op%s}" "${mibs:-0}" "${n:-0}" \
                "$(echo "scale=3; ($c1 - $c0) / $TICK" | bc)" >>"$R"
        done
    done
    kill "$dev"; wait "$dev" 2>/dev/null || true
    rm -rf "$data"
}

for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then
        run tls "$round"; run plain "$round" --insecure-internal-http
    else
        run plain "$round" --insecure-internal-http; run tls "$round"
    fi
done

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
{
    printf '\n%-6s %-3s | %12s %12s %6s | %14s %14s %6s\n' size op "mTLS MiB/s" "plain MiB/s" ratio "mTLS CPU ms/op" "plain CPU ms/op" ratio
    for size in 1MiB 64KiB; do
        for op in put get; do
            tm=$(awk -v s="$size" -v o="$op" '$1 == "tls" && $3 == s && $4 == o { print $5 }' "$R" | median)
            pm=$(awk -v s="$size" -v o="$op" '$1 == "plain" && $3 == s && $4 == o { print $5 }' "$R" | median)
            tc=$(awk -v s="$size" -v o="$op" '$1 == "tls" && $3 == s && $4 == o && $6 > 0 { print 1000 * $7 / $6 }' "$R" | median)
            pc=$(awk -v s="$size" -v o="$op" '$1 == "plain" && $3 == s && $4 == o && $6 > 0 { print 1000 * $7 / $6 }' "$R" | median)
            awk -v s="$size" -v o="$op" -v tm="$tm" -v pm="$pm" -v tc="$tc" -v pc="$pc" 'BEGIN {
                printf "%-6s %-3s | %12.1f %12.1f %6.2f | %14.2f %14.2f %6.2f\n", s, toupper(o), tm, pm, (pm > 0 ? tm / pm : 0), tc, pc, (pc > 0 ? tc / pc : 0) }'
        done
    done
    echo "(medians over $ROUNDS rounds; every run in $R; failed requests are in each loadgen report, $OUT/MODE-ROUND-SIZE-OP.txt)"
    echo "errors in any run: $(cat "$OUT"/*-*-*-*.txt | awk '$1 == "ALL" && $2 ~ /^[0-9]/ { e += $9 } END { print e + 0 }')"
} | tee -a "$S"
