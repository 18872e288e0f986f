#!/usr/bin/env bash
# The scrub's pace and its cost in client p99, in one run on this machine:
# the same GET load against two `sillok dev` clusters (3 sites x 3 nodes,
# 4+2), one with the scrub off and one scrubbing without pause at
# --scrub-mib-per-s per node. Prints loadgen's GET figures for both and the
# scrub passes' pace from the node logs.
#   PROFILE: cargo profile to build (default: dev, whose libraries are built
#   at opt-level 2; use release for absolute figures).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-dev}
RATE=${RATE:-10}
cargo build --profile "$PROFILE" -p sillok --bin sillok >&2
cargo build --profile "$PROFILE" -p sillok-benches --bin loadgen >&2
dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
BIN=./target/$dir/sillok
LG="./target/$dir/loadgen --concurrency 8 --progress 0"
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait; rm -rf "$WORK"' EXIT

run() { # name, node args...
    local name=$1; shift
    local args=()
    for a in "$@"; do args+=("--node-arg=$a"); done
    $BIN dev --data "$WORK/$name" --port 0 "${args[@]}" > "$WORK/$name.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 120); do [ -f "$WORK/$name/cluster.env" ] && break; sleep 1; done
    (. "$WORK/$name/cluster.env" && $LG --objects-only 256KiB --count 1200 --puts-only > /dev/null)
    echo "== $name: GET 256 KiB, 30 s, concurrency 8"
    (. "$WORK/$name/cluster.env" && $LG --objects-only 256KiB --count 1200 --gets-only --duration 30)
    grep -h "scrub pass" "$WORK/$name/logs/"*node*.log | sed -E 's/.*(checked=[0-9]+).*(mib_per_s=[0-9.]+).*/\1 \2/' | tail -5 || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
run scrub-off --scrub-every-ms=0
run scrub-on --scrub-every-ms=1000 "--scrub-mib-per-s=$RATE"
