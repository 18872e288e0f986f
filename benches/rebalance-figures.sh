#!/usr/bin/env bash
# Rebalancing figures in one run on this machine (release build): a
# `sillok dev` cluster (3 sites x 2 nodes, 4+2) filled with FILL objects
# of 256 KiB; a fourth site of 2 nodes is staged, planned and applied while
# loadgen GETs run; then one node is drained and removed. Prints, for each
# change: the plan (slots and bytes it predicts, the least any map must
# move), the bytes the nodes actually wrote (sum of
# sillok_rebuild_bytes_written_total), the time to settle and MiB/s, and
# loadgen's GET p50/p99 before and during the move; at the end, each
# node's shard bytes against an equal share, once the copies left behind
# are collected.
#   FILL (default 2000 objects); NO_BUILD=1 uses the release binaries as built.
set -euo pipefail
cd "$(dirname "$0")/.."
FILL=${FILL:-2000}
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -p sillok --bin sillok >&2 && cargo build --release -p sillok-benches --bin loadgen >&2
fi
BIN=./target/release/sillok
DATA=$(mktemp -d /tmp/sillok-rebalance.XXXXXX)
$BIN dev --data "$DATA" --port 0 --nodes-per-site 2 > "$DATA.dev.log" 2>&1 &
DEV=$!
EXTRA=()
trap 'kill $DEV "${EXTRA[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA" "$DATA.dev.log"' EXIT
for _ in $(seq 200); do [ -f "$DATA/cluster.env" ] && break; sleep 0.5; done
. "$DATA/cluster.env"
LG="./target/release/loadgen --concurrency 4 --progress 0"
$LG --objects-only 256KiB --count "$FILL" --puts-only --seed 7 > /dev/null
written() { # bytes rebuilt so far, summed over every node's metrics page
    $BIN admin status --json | jq -r '.nodes[] | select(.state != "out") | .addr' | while read -r a; do
        curl -s "http://$a/metrics" | awk '/^sillok_rebuild_bytes_written_total /{print $2}'
    done | awk '{s+=$1} END {printf "%d\n", s}'
}
settle() { # waits until rebalance status says done; prints seconds
    local t0=$SECONDS
    until $BIN admin rebalance status --json | jq -e '.done' > /dev/null; do sleep 1; done
    echo $((SECONDS - t0))
}
measure() { # name, then the staging commands run before apply
    local name=$1; shift
    "$@"
    $BIN admin rebalance plan
    local plan; plan=$($BIN admin rebalance plan --json)
    echo "== $name: GETs before the change (20 s)"
    $LG --objects-only 256KiB --count "$FILL" --gets-only --seed 7 --duration 20 | grep -E "GET"
    local w0; w0=$(written)
    $BIN admin rebalance apply
    start_new_nodes
    ( $LG --objects-only 256KiB --count "$FILL" --gets-only --seed 7 --duration 30 | grep -E "GET" | sed 's/^/during: /' ) &
    local lg=$!
    local secs; secs=$(settle)
    wait $lg || true
    local w1; w1=$(written)
    local moved=$((w1 - w0))
    echo "$name: settled in ${secs} s; nodes wrote $((moved / 1048576)) MiB ($(awk -v b=$moved -v s=$secs 'BEGIN{printf "%.1f", b/1048576/(s>0?s:1)}') MiB/s)"
    echo "$plan" | jq -r --argjson moved "$moved" '"plan: \(.slots_moved) slots (least possible \(.min_slots_moved), ratio \((.slots_moved / ([.min_slots_moved,1]|max)) * 100 | round / 100)), predicted \(.bytes_to_move / 1048576 | floor) MiB, actual/predicted \(($moved / ([.bytes_to_move,1]|max)) * 100 | round / 100); imbalance after \(.max_imbalance_pct | round)%"'
}
NEW=()
start_new_nodes() {
    for id in "${NEW[@]}"; do
        local addr; addr=$($BIN admin status --json | jq -r ".nodes[] | select(.id == $id) | .addr")
        mkdir -p "$DATA/sites/site-d/node-$id"
        $BIN node --cluster "$DATA/cluster.json" --id "$id" --data "$DATA/sites/site-d/node-$id" --listen "$addr" \
            > "$DATA/logs/site-d-node-$id.log" 2>&1 &
        EXTRA+=($!)
    done
    NEW=()
}
add_site() {
    $BIN admin site add site-d
    local p
    for p in 7301 7302; do
        local id; id=$($BIN admin node add --site site-d --addr "127.0.0.1:$p" --json | jq -r '.outcome.node')
        NEW+=("$id")
    done
}
drain_n1() { $BIN admin node drain n1; }
measure "add a site (2 nodes)" add_site
measure "drain node 1" drain_n1
$BIN admin node remove n1 && $BIN admin rebalance apply
# Bytes per node once the collector has removed the copies left behind (two
# grace periods of `sillok dev`'s 30 s, and a collector round).
sleep 100
echo "== shard bytes per node against an equal share (after collection)"
$BIN admin status --json | jq -r '[.nodes[] | select(.state == "up") | {id, b: .usage.shard_bytes}] as $n
  | ($n | map(.b) | add) as $t | $n[] | "\(.id): \(.b / 1048576 | floor) MiB, \((.b / ($t / ($n | length)) - 1) * 1000 | round / 10)% from an equal share"'
