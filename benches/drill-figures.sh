#!/usr/bin/env bash
# The site-loss drill's figures in one run on this machine, with and without
# client-first background work (`--client-first`, default on): two fresh
# `sillok dev` clusters (3 sites x 3 nodes, 4+2, short failure detection),
# each filled with FILL_MIB of chat media, then `sillok dev drill` kills
# every process of the last site under load and waits for full redundancy.
# Prints both reports (client p50/p99 per phase, rebuild rate, peak RSS).
#   FILL_MIB (default 1024), PROFILE (default release), MODES (default "on off").
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
FILL_MIB=${FILL_MIB:-1024}
MODES=${MODES:-"on off"}
cargo build --profile "$PROFILE" -p sillok --bin sillok >&2
dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
BIN=./target/$dir/sillok
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait; rm -rf "$WORK"' EXIT

for mode in $MODES; do
    case $mode in on) cf=true ;; off) cf=false ;; *) echo "mode $mode: on or off" >&2; exit 2 ;; esac
    $BIN dev --data "$WORK/$mode" --port 0 \
        --catalog-arg=--site-out-after-ms=10000 --catalog-arg=--down-after-ms=3000 \
        "--node-arg=--client-first=$cf" > "$WORK/$mode.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 120); do [ -f "$WORK/$mode/cluster.env" ] && break; sleep 1; done
    echo "== client-first $mode: drill with $FILL_MIB MiB"
    (. "$WORK/$mode/cluster.env" && $BIN dev drill --data "$WORK/$mode" --fill-mib "$FILL_MIB" --before-s 20)
    kill "$pid"; wait "$pid" 2>/dev/null || true
done
