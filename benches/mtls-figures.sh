#!/usr/bin/env bash
# The cost of mutual TLS inside the cluster, in one run: PUT and GET of 1 MiB
# and 64 KiB objects through `sillok dev` with internal mTLS (the default),
# then through a fresh one with `--insecure-internal-http` (plain HTTP between
# the processes), the same client (`loadgen`) and settings; prints MiB/s of
# each and the ratio TLS / plain. The S3 endpoint is plain HTTP in both.
# Usage: benches/mtls-figures.sh [OUT_DIR] [PROFILE]
#   OUT_DIR default target/mtls-figures; PROFILE `release` (default) or `dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/mtls-figures}
PROFILE=${2:-release}
mkdir -p "$OUT"
if [ "$PROFILE" = release ]; then
    cargo build --release -p sillok --bin sillok -p sillok-benches --bin loadgen >&2
    BIN=target/release
else
    cargo build -p sillok --bin sillok -p sillok-benches --bin loadgen >&2
    BIN=target/debug
fi
S="$OUT/summary.txt"
: >"$S"

run() { # mode (tls|plain), then extra `sillok dev` flags
    local mode=$1; shift
    local data
    data=$(mktemp -d /tmp/sillok-mtls-figures.XXXXXX)
    "$BIN/sillok" dev --data "$data" --port 0 "$@" >"$OUT/dev-$mode.log" 2>&1 &
    local dev=$!
    for _ in $(seq 600); do [ -f "$data/cluster.env" ] && break; sleep 0.1; done
    [ -f "$data/cluster.env" ] || { echo "sillok dev ($mode) did not come up; see $OUT/dev-$mode.log" >&2; kill "$dev"; exit 1; }
    (
        . "$data/cluster.env"
        "$BIN/loadgen" --objects-only 1MiB --count 300 --concurrency 16 --progress 0 --seed 1 \
            --json "$OUT/$mode-1MiB.json" >"$OUT/$mode-1MiB.txt" 2>&1
        "$BIN/loadgen" --objects-only 64KiB --count 3000 --concurrency 16 --progress 0 --seed 2 \
            --json "$OUT/$mode-64KiB.json" >"$OUT/$mode-64KiB.txt" 2>&1
    )
    kill "$dev"; wait "$dev" 2>/dev/null || true
    rm -rf "$data"
}

mibs() { # file, op: the MiB/s column of the `.. PUT` or `.. GET` line
    awk -v op="$2" '$0 ~ (" " op " ") && $0 !~ /ALL/ {for (i = 1; i <= NF; i++) if ($i == op) {print $(i + 3); exit}}' "$1"
}

run tls
run plain --insecure-internal-http
echo "internal mTLS vs plain internal HTTP ($PROFILE build, sillok dev on loopback, loadgen concurrency 16)" | tee -a "$S"
for size in 1MiB 64KiB; do
    for op in PUT GET; do
        t=$(mibs "$OUT/tls-$size.txt" "$op"); p=$(mibs "$OUT/plain-$size.txt" "$op")
        awk -v s="$size" -v o="$op" -v t="$t" -v p="$p" \
            'BEGIN { printf "%-6s %-3s  mTLS %8.1f MiB/s   plain %8.1f MiB/s   ratio %.2f\n", s, o, t, p, (p > 0 ? t / p : 0) }' | tee -a "$S"
    done
done
echo "figures in $OUT (summary.txt; each loadgen report in *.txt)"
