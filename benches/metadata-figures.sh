#!/usr/bin/env bash
# The metadata issue's figures, in one run on this machine (release builds):
#  1. Write-path cost: PUT of 64 KiB and 1 MiB objects against a cluster of
#     the commit before the issue (BEFORE_BIN) and one of this tree, both up
#     at once, runs interleaved (before, after, before, after) so that the
#     machine's noise falls on both.
#  2. Collector: 1,500 objects of 200 KiB overwritten (9,000 shard files of
#     garbage), then GETs while the collector deletes them, against GETs once
#     it is done: its throughput (from the nodes' "collector round" lines) and
#     the client p99 with and without it.
#  3. Anti-entropy: one node SIGSTOPped while 20,000 small objects are
#     written, then resumed: how many manifests it pulls, the bytes, the time.
# Usage: benches/metadata-figures.sh BEFORE_BIN [OUT_DIR]   (default OUT_DIR: target/metadata-figures)
#   BEFORE_BIN: a `sillok` release binary of the earlier commit, e.g.
#     git worktree add /tmp/before 71cf653 && (cd /tmp/before && cargo build --release -p sillok)
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${1:?usage: benches/metadata-figures.sh BEFORE_BIN [OUT_DIR]}
OUT=${2:-target/metadata-figures}
mkdir -p "$OUT"
cargo build --release -p sillok --bin sillok >&2 && cargo build --release -p sillok-benches --bin loadgen >&2
AFTER=./target/release/sillok
LG="./target/release/loadgen --concurrency 8 --progress 0"
DIRS=()
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "${DIRS[@]}"; }
trap cleanup EXIT

# start NAME BIN [dev args...]: a dev cluster in a temporary directory; sets $DIR.
start() {
    local name=$1 bin=$2
    shift 2
    DIR=$(mktemp -d "/tmp/sillok-meta-$name.XXXXXX")
    DIRS+=("$DIR")
    "$bin" dev --data "$DIR" --port 0 "$@" >"$OUT/$name-dev.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 300); do [ -f "$DIR/cluster.env" ] && return 0; sleep 0.1; done
    echo "cluster $name did not start; see $OUT/$name-dev.log" >&2
    exit 1
}
# on DIR: runs loadgen against the cluster in DIR with its env.
on() { local dir=$1; shift; (. "$dir/cluster.env" && $LG "$@"); }
: >"$OUT/summary.txt"
say() { echo "$*" | tee -a "$OUT/summary.txt"; }

# 1. Write path, before and after, interleaved.
start before "$BEFORE"; B=$DIR
start after "$AFTER"; A=$DIR
say "== 1. PUT cost, concurrency 8 (before: $("$BEFORE" --version), after: $("$AFTER" --version))"
for round in 1 2; do
    for size in 64KiB 1MiB; do
        count=$([ "$size" = 64KiB ] && echo 3000 || echo 400)
        for side in before after; do
            dir=$([ "$side" = before ] && echo "$B" || echo "$A")
            on "$dir" --objects-only "$size" --count "$count" --puts-only --seed "$round" --prefix "w$round-$size/" \
                >"$OUT/put-$side-$size-$round.txt" 2>&1
            say "$side $size round $round: $(grep -E ' PUT ' "$OUT/put-$side-$size-$round.txt" | head -1)"
        done
    done
done
kill "${PIDS[0]}" "${PIDS[1]}" 2>/dev/null || true

# 2. Collector throughput and its effect on p99.
start gc "$AFTER" --node-arg=--collect-grace-ms=5000 --node-arg=--collect-every-ms=1000; G=$DIR
say "== 2. collector: 1,500 x 200 KiB written twice (the first copies' 9,000 shard files become garbage)"
on "$G" --objects-only 200KiB --count 1500 --puts-only --seed 7 >"$OUT/gc-put1.txt" 2>&1
on "$G" --objects-only 200KiB --count 1500 --puts-only --seed 7 >"$OUT/gc-put2.txt" 2>&1
files() { find "$G/sites" -path '*shards*' -type f | wc -l; }
say "shard files after the overwrite: $(files)"
t0=$(date +%s.%N)
on "$G" --objects-only 200KiB --count 1500 --gets-only --seed 7 --duration 20 >"$OUT/gc-get-during.txt" 2>&1
say "GET while collecting:  $(grep -E ' GET ' "$OUT/gc-get-during.txt" | head -1)"
for _ in $(seq 120); do [ "$(files)" -le 9000 ] && break; sleep 0.5; done
t1=$(date +%s.%N)
say "shard files after collection: $(files) ($(echo "$t1 - $t0" | bc) s after the GETs began)"
on "$G" --objects-only 200KiB --count 1500 --gets-only --seed 7 --duration 20 >"$OUT/gc-get-after.txt" 2>&1
say "GET with nothing to collect: $(grep -E ' GET ' "$OUT/gc-get-after.txt" | head -1)"
grep -h "collector round" "$G"/logs/*node*.log | sed 's/\x1b\[[0-9;]*m//g' >"$OUT/gc-rounds.txt" || true
say "collector rounds that deleted (checked, deleted, ms per round, all nodes):"
awk '{ for (i = 1; i <= NF; i++) { if ($i ~ /^checked=/) { split($i, a, "="); c += a[2] } if ($i ~ /^deleted=/) { split($i, a, "="); d += a[2] } if ($i ~ /^ms=/) { split($i, a, "="); m += a[2] } } n++ }
     END { if (n) printf "  %d rounds: %d shards checked, %d deleted, %d ms in rounds: %.0f checked/s, %.0f deleted/s per node-round time\n", n, c, d, m, c / (m / 1000), d / (m / 1000) }' \
    "$OUT/gc-rounds.txt" | tee -a "$OUT/summary.txt"
kill "${PIDS[2]}" 2>/dev/null || true

# 3. Anti-entropy after a node missed ~10,000 manifest changes.
start ae "$AFTER" --node-arg=--sync-every-ms=2000; E=$DIR
victim_id=$(awk '$1 == "node" { print $2; exit }' "$E/sites/site-a.procs")
victim=$(awk '$1 == "node" { print $3; exit }' "$E/sites/site-a.procs")
say "== 3. anti-entropy: node pid $victim stopped while 20,000 x 1 KiB objects are written"
kill -STOP "$victim"
on "$E" --objects-only 1KiB --count 20000 --puts-only --seed 9 >"$OUT/ae-put.txt" 2>&1
say "PUTs with one node stopped: $(grep -E ' PUT ' "$OUT/ae-put.txt" | head -1)"
log="$E/logs/site-a-node-$victim_id.log"
kill -CONT "$victim"
for _ in $(seq 240); do grep -q "anti-entropy copied manifests" "$log" && break; sleep 0.5; done
sleep 1
grep "anti-entropy copied manifests" "$log" | sed 's/\x1b\[[0-9;]*m//g' | tee "$OUT/ae-rounds.txt" | tail -3 | sed 's/^/  /' | tee -a "$OUT/summary.txt"
echo "figures in $OUT (summary.txt)"
