#!/usr/bin/env bash
# Runs every procedure of docs/operations.md's runbook against a fresh
# `sillok dev` cluster and prints a transcript: each command as `$ ...` and
# what it printed (secrets masked). docs/runbook-transcript.txt is its output.
#
#   scripts/runbook.sh [transcript-file]      (SILLOK_BIN: the binary, default target/release/sillok)
#
# Needs the aws cli and curl. Leaves nothing running: every process it
# started is stopped at the end, and the cluster's folder removed unless KEEP=1.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${SILLOK_BIN:-target/release/sillok}")
OUT=${1:-/dev/stdout}
D=$(mktemp -d "${TMPDIR:-/tmp}/sillok-runbook-XXXX")
EXTRA_PIDS=()
exec 3>"$OUT"

mask() { sed -E 's/(SECRET[A-Z_]*=|secret[a-z_]*": ")[0-9a-f]{8,}/\1<masked>/g; s/[0-9a-f]{40}/<masked>/g'; }
say() { printf '\n%s\n' "$*" >&3; }
# run CMD...: prints `$ CMD` and its output (stdout and stderr) to the transcript.
run() {
    printf '$ %s\n' "$*" >&3
    (eval "$@") 2>&1 | mask | sed 's/^/  /' >&3
    return "${PIPESTATUS[0]}"
}
sillok() { "$BIN" "$@"; }
export -f sillok; export BIN
cleanup() {
    kill "${EXTRA_PIDS[@]}" 2>/dev/null
    [ -n "${DEV_PID:-}" ] && kill "$DEV_PID" 2>/dev/null && wait "$DEV_PID" 2>/dev/null
    # processes this script restarted are not `sillok dev`'s children
    pkill -f -- "--cluster $D/cluster.json" 2>/dev/null
    [ "${KEEP:-0}" = 1 ] || { sleep 1; rm -rf "$D" "$D.dev.log"; }
    true
}
trap cleanup EXIT
wait_for() { # wait_for SECONDS CMD...: until CMD succeeds
    local until=$((SECONDS + $1)); shift
    while ! (eval "$@") >/dev/null 2>&1; do
        [ $SECONDS -ge $until ] && { echo "gave up waiting for: $*" >&3; return 1; }
        sleep 0.5
    done
}
cmdline() { tr '\0' '\n' < "/proc/$1/cmdline" | tail -n +2; }
port_of() { local a; a=$(cmdline "$1" | grep -A1 -- '^--listen$' | tail -1); echo "${a##*:}"; }
# restart PID [EXTRA_ARGS...]: kill -9 one process and start it again with
# the same arguments (and EXTRA_ARGS); prints the new pid.
restart() {
    local pid=$1; shift
    mapfile -t args < <(cmdline "$pid")
    kill -9 "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    "$BIN" "${args[@]}" "$@" >>"$D/logs/restarted.log" 2>&1 &
    echo $!
}
rebalanced() { sillok admin rebalance status --json | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["done"] else 1)'; }
# procs [ROLE]: pids of this cluster's running processes (of one role: node, catalog, gateway)
procs() {
    pgrep -f -- "--cluster $D/cluster.json" | while read -r p; do
        cmdline "$p" | head -1 | grep -qxE "${1:-node|catalog|gateway}" && echo "$p"
    done
}

say "== 1. First start (sillok dev: 3 sites x (1 catalog replica + 3 storage nodes) + 1 gateway, each its own process)"
# The site-loss drill (step 4) waits for the site to be marked out: 30 s here
# instead of sillok dev's 300 s, so the drill's load writes less.
"$BIN" dev --data "$D" --port 0 --catalog-arg=--site-out-after-ms=30000 >"$D.dev.log" 2>&1 &
DEV_PID=$!
wait_for 120 test -f "$D/cluster.env" || { cat "$D.dev.log" >&3; exit 1; }
run "sed -n 1,40p $D.dev.log"
. "$D/cluster.env"
run "sillok --version"
run "sillok admin status"

say "== 2. The aws cli against it"
head -c 3000000 /dev/urandom >"$D/cat.jpg"
run "aws s3 mb s3://photos"
run "aws s3 cp --no-progress $D/cat.jpg s3://photos/2026/cat.jpg"
run "aws s3 ls s3://photos --recursive"
run "aws s3 cp --no-progress s3://photos/2026/cat.jpg $D/cat-copy.jpg && cmp $D/cat.jpg $D/cat-copy.jpg && echo identical"

say "== 3. Reading the metrics and readiness"
if [ -f "$D/ops.txt" ]; then
    run "cat $D/ops.txt"
    while read -r role id addr; do
        run "echo $role $id: /health \$(curl -s -w ' %{http_code}' http://$addr/health), /ready \$(curl -s -w ' %{http_code}' http://$addr/ready)"
    done <"$D/ops.txt"
    gw=$(awk '$1=="gateway"{print $3; exit}' "$D/ops.txt")
    run "curl -s http://$gw/metrics | grep -E '^sillok_(s3_requests_total|s3_request_duration_seconds_count|map_epoch|clock_offset)' | head -20"
    node=$(awk '$1=="node"{print $3; exit}' "$D/ops.txt")
    run "curl -s http://$node/metrics | grep -E '^sillok_(node_disk|shard|node_caught_up|map_epoch)' | head -12"
    rep=$(awk '$1=="catalog" || $1=="replica"{print $3; exit}' "$D/ops.txt")
    run "curl -s http://$rep/metrics | grep -E '^sillok_(raft|catalog)' | head -12"
else
    run "curl -s $S3_ENDPOINT/_sillok/metrics | head -20"
fi

say "== 4. A site outage and its return (sillok dev drill)"
run "sillok dev drill --data $D --return --fill-mib 16 --before-s 3 --site site-c"

say "== 5. Adding a storage node (staged, planned, applied; the data moves in the background)"
NEW_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run "sillok admin node add --site site-b --addr 127.0.0.1:$NEW_PORT | tee $D/node-add.txt"
NEW_ID=$(grep -oE '\bn[0-9]+' "$D/node-add.txt" | head -1 | tr -d n)
run "sillok admin rebalance plan"
run "sillok admin rebalance apply"
"$BIN" node --cluster "$D/cluster.json" --id "$NEW_ID" --data "$D/sites/site-b/node-$NEW_ID" --listen "127.0.0.1:$NEW_PORT" >"$D/logs/added-node.log" 2>&1 &
EXTRA_PIDS+=($!)
say "(started: sillok node --cluster $D/cluster.json --id $NEW_ID --data $D/sites/site-b/node-$NEW_ID --listen 127.0.0.1:$NEW_PORT)"
wait_for 600 rebalanced
run "sillok admin rebalance status"
run "sillok admin status | sed -n '/^NODE  /,/^$/p'"

say "== 6. Replacing a node: drain n2, wait until nothing moves, remove it"
run "sillok admin node drain n2"
run "sillok admin rebalance apply"
wait_for 600 rebalanced
run "sillok admin rebalance status"
run "sillok admin node remove n2"
run "sillok admin rebalance apply"
N2=$(for p in $(procs node); do cmdline "$p" | grep -qx -- '--id' && [ "$(cmdline "$p" | grep -A1 -x -- '--id' | tail -1)" = 2 ] && echo "$p"; done)
run "kill $N2"
run "aws s3 cp s3://photos/2026/cat.jpg - | cmp - $D/cat.jpg && echo identical"

say "== 7. Catalog backup, and a restore after losing every replica's disk"
run "sillok admin catalog backup --out $D/catalog-backup.json"
run "ls -l $D/catalog-backup.json"
run "aws s3 mb s3://after-backup"
declare -A REPLICA_ARGS
for pid in $(procs catalog); do
    REPLICA_ARGS[$pid]=$(cmdline "$pid" | tr '\n' ' ')
    data=$(cmdline "$pid" | grep -A1 -- '^--data$' | tail -1)
    run "kill -9 $pid; rm -rf $data"
done
run "aws s3 cp s3://photos/2026/cat.jpg - | cmp - $D/cat.jpg && echo 'still served without any replica'"
for k in "${!REPLICA_ARGS[@]}"; do
    # shellcheck disable=SC2086
    "$BIN" ${REPLICA_ARGS[$k]} --restore-from "$D/catalog-backup.json" >>"$D/logs/restored.log" 2>&1 &
    EXTRA_PIDS+=($!)
    say "(started: sillok ${REPLICA_ARGS[$k]}--restore-from $D/catalog-backup.json)"
done
wait_for 60 "sillok admin bucket list"
run "sillok admin status | head -8"
run "sillok admin bucket list"
run "aws s3 mb s3://after-restore && aws s3 cp --no-progress $D/cat.jpg s3://after-restore/cat.jpg && aws s3 ls s3://after-restore"

say "== 8. A majority of the replicas lost for good: export the survivor, restore from it"
mapfile -t RP < <(procs catalog)
i=0
for pid in "${RP[@]}"; do
    data=$(cmdline "$pid" | grep -A1 -- '^--data$' | tail -1)
    if [ $i -lt 2 ]; then
        run "kill -9 $pid; rm -rf $data  # lost for good"
    else
        run "kill $pid  # the survivor, stopped"
        SURV=$data
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    i=$((i + 1))
done
run "sillok admin catalog export --data $SURV --out $D/survivor.json"
run "rm -rf $SURV"
for k in "${!REPLICA_ARGS[@]}"; do
    # shellcheck disable=SC2086
    "$BIN" ${REPLICA_ARGS[$k]} --restore-from "$D/survivor.json" >>"$D/logs/restored.log" 2>&1 &
    EXTRA_PIDS+=($!)
done
wait_for 60 "sillok admin bucket list"
run "sillok admin bucket list"
run "aws s3 cp s3://after-restore/cat.jpg - | cmp - $D/cat.jpg && echo identical"

say "== 9. Rotating an S3 key"
run "sillok admin key create | tee $D/new-key.txt"
OLD_KEY=$AWS_ACCESS_KEY_ID
export AWS_ACCESS_KEY_ID=$(awk '/^access key:/{print $3}' "$D/new-key.txt")
export AWS_SECRET_ACCESS_KEY=$(awk '/^secret key:/{print $3}' "$D/new-key.txt")
say "(clients move to the new key: AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID; then the old one is revoked)"
run "aws s3 ls s3://photos/2026/"
run "sillok admin key revoke $OLD_KEY"
run "AWS_ACCESS_KEY_ID=$OLD_KEY aws s3 ls s3://photos 2>&1 | tail -1"
run "sillok admin key list"

say "== 10. Clocks: every process's offset, and a gateway that refuses writes when its clock is off"
run "sillok admin status | sed -n '/^NODE  /,/^$/p' | head -4; sillok admin status | sed -n '/^GATEWAY/,/^$/p'"
GW2_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" gateway --cluster "$D/cluster.json" --data "$D/gw-skewed" --listen "127.0.0.1:$GW2_PORT" --test-clock-offset-ms=2000 >"$D/logs/gw-skewed.log" 2>&1 &
EXTRA_PIDS+=($!)
sleep 4
say "(a second gateway whose clock is 2 s ahead: --test-clock-offset-ms=2000, a drill-only flag)"
run "aws --endpoint-url http://127.0.0.1:$GW2_PORT s3 ls s3://photos"
run "grep -m1 'refusing writes' $D/logs/gw-skewed.log | cut -c1-200"
run "aws --endpoint-url http://127.0.0.1:$GW2_PORT s3 cp --no-progress $D/cat.jpg s3://photos/skewed.jpg 2>&1 | tail -1"
kill "${EXTRA_PIDS[-1]}"

say "== 11. Rotating the cluster secret: three steps, each a rolling restart of every process"
# Every process of the cluster now: the site's nodes (sillok dev's children), the
# restored replicas, the added node and the gateway.
GW=$(cat "$D/gateway.pid"); GW_ADDR=${S3_ENDPOINT#http://}
for step in stage promote finish; do
    run "sillok secret $step --cluster $D/cluster.json"
    n=0
    for pid in $(procs); do
        role=$(cmdline "$pid" | head -1)
        if [ "$role" = gateway ]; then
            # sillok dev's gateway listens on a port it picked (--listen 127.0.0.1:0): keep it
            mapfile -t args < <(cmdline "$pid" | sed "s#^127.0.0.1:0\$#$GW_ADDR#")
            kill -9 "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
            "$BIN" "${args[@]}" >>"$D/logs/restarted.log" 2>&1 &
        else
            restart "$pid" >/dev/null
        fi
        n=$((n + 1))
        wait_for 60 "aws s3 cp $D/cat.jpg s3://photos/rotation-$step-$n.jpg"
    done
    say "(restarted $n processes one at a time, kill -9 then start; an S3 PUT succeeded after each)"
    run "sillok secret status --cluster $D/cluster.json"
done
run "aws s3 ls s3://photos/ | wc -l"
run "aws s3 cp s3://photos/2026/cat.jpg - | cmp - $D/cat.jpg && echo identical"

say "== 12. Upgrading: one process at a time, newest binary, same data"
run "sillok --version"
say "(a rolling restart as in step 11, with the new binary in place of the old: each process reopens its data; redb files in an older format are upgraded on open. scripts/upgrade-rehearsal.sh does it from an older build: docs/upgrade-transcript.txt)"
