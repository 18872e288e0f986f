#!/usr/bin/env bash
# Takes the data-path figures in one run on this machine (release build):
#   1 MiB and 64 MiB PUT/GET at concurrency 8, and the codec kernel, for ratios;
#   64 KiB (thumbnail) PUT/GET ops/s;
#   the gateway's peak RSS while 8 clients each PUT a 256 MiB object;
#   GET MiB/s after kill -9 of one whole site, against the healthy figure.
# Usage: benches/figures.sh [OUT_DIR]   (default: target/figures)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/figures}
mkdir -p "$OUT"
cargo build --release -p sillok --bin sillok >&2 && cargo build --release -p sillok-benches --bin loadgen >&2
DATA=$(mktemp -d /tmp/sillok-figures.XXXXXX)
./target/release/sillok dev --data "$DATA" --port 0 >"$OUT/dev.log" 2>&1 &
DEV=$!
trap 'kill $DEV 2>/dev/null; wait $DEV 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 200); do [ -f "$DATA/cluster.env" ] && break; sleep 0.1; done
. "$DATA/cluster.env"
GW=$(cat "$DATA/gateway.pid")
LG="./target/release/loadgen --concurrency 8 --progress 0 --pid $GW"
run() { local name=$1; shift; echo "== $name" | tee -a "$OUT/summary.txt"; $LG "$@" --json "$OUT/$name.json" 2>&1 | tee "$OUT/$name.txt" | grep -E "PUT|GET|kernel|peak|mismatch|matched" | tee -a "$OUT/summary.txt"; }
: >"$OUT/summary.txt"
run healthy-1MiB --objects-only 1MiB --count 400 --seed 1 --kernel
run healthy-64MiB --objects-only 64MiB --count 16 --seed 2
run healthy-64KiB --objects-only 64KiB --count 2000 --seed 3
run rss-8x256MiB --objects-only 256MiB --count 8 --puts-only --seed 4
echo "== kill -9 of site-a: $(cat "$DATA/sites/site-a.pids" | tr '\n' ' ')" | tee -a "$OUT/summary.txt"
kill -9 $(cat "$DATA/sites/site-a.pids")
sleep 1
run degraded-1MiB --objects-only 1MiB --count 400 --seed 1 --gets-only
run degraded-64MiB --objects-only 64MiB --count 16 --seed 2 --gets-only
run degraded-64KiB --objects-only 64KiB --count 2000 --seed 3 --gets-only
echo "figures in $OUT (summary.txt, one .txt and .json per run)"
