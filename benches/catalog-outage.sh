#!/usr/bin/env bash
# How long a gateway keeps serving with every catalog replica down (one run,
# release build, `sillok dev` on loopback):
#   1. PUT 500 x 64 KiB and 100 x 1 MiB objects; GET them all (healthy figure);
#   2. kill -9 all three catalog replicas (the first pid of each site's file);
#   3. GET every object again and again for OUTAGE_S seconds (default 300),
#      checking every body, and PUT into the existing bucket meanwhile;
#   4. halfway, kill -9 the gateway and start a new one on its saved catalog
#      (no replica answers), and keep reading through it.
# Usage: benches/catalog-outage.sh [OUT_DIR]   (OUTAGE_S=300 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/figures/catalog-outage}
OUTAGE_S=${OUTAGE_S:-300}
mkdir -p "$OUT"
cargo build --release -p sillok --bin sillok >&2 && cargo build --release -p sillok-benches --bin loadgen >&2
DATA=$(mktemp -d /tmp/sillok-outage.XXXXXX)
./target/release/sillok dev --data "$DATA" --port 0 >"$OUT/dev.log" 2>&1 &
DEV=$!
GW2=""
trap 'kill $DEV 2>/dev/null; [ -n "$GW2" ] && kill $GW2 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 300); do [ -f "$DATA/cluster.env" ] && break; sleep 0.1; done
. "$DATA/cluster.env"
LG="./target/release/loadgen --concurrency 8 --progress 0 --bucket outage"
: >"$OUT/summary.txt"
say() { echo "$*" | tee -a "$OUT/summary.txt"; }
# One round of GETs over every object: appends "label ops errors mismatches ops/s p99_ms" to rounds.tsv.
gets() { # label endpoint
  $LG --endpoint "$2" --objects-only 64KiB --count 500 --seed 1 --gets-only --json "$OUT/r1.json" >/dev/null 2>&1 || true
  $LG --endpoint "$2" --objects-only 1MiB --count 100 --seed 2 --gets-only --json "$OUT/r2.json" >/dev/null 2>&1 || true
  python3 - "$1" "$OUT/r1.json" "$OUT/r2.json" >>"$OUT/rounds.tsv" <<'PY'
import json, sys
label, files = sys.argv[1], sys.argv[2:]
ops = err = bad = 0; rate = 0.0; p99 = 0.0
for f in files:
    try:
        d = json.load(open(f))
    except Exception:
        err += 1; continue
    for sec in d["sections"]:
        for r in sec["rows"]:
            if r["row"] == "ALL":
                ops += r["ops"]; err += r["errors"]; bad += r["verify_failures"]; rate += r["ops_per_s"]; p99 = max(p99, r["p99_ms"])
print(f"{label}\t{ops}\t{err}\t{bad}\t{rate:.0f}\t{p99:.1f}")
PY
  rm -f "$OUT/r1.json" "$OUT/r2.json"
}
$LG --objects-only 64KiB --count 500 --seed 1 --puts-only >"$OUT/put-64KiB.txt" 2>&1
$LG --objects-only 1MiB --count 100 --seed 2 --puts-only >"$OUT/put-1MiB.txt" 2>&1
printf 'round\tgets\terrors\tmismatches\tops/s(sum of the two sizes)\tp99_ms\n' >"$OUT/rounds.tsv"
gets "healthy" "$S3_ENDPOINT"
say "healthy round: $(tail -1 "$OUT/rounds.tsv")"
# sites/<site>.procs names each process's role: `replica <id> <pid>`, `node <id> <pid>`.
for procs in "$DATA"/sites/*.procs; do kill -9 $(awk '$1 == "replica" {print $3}' "$procs"); done
DOWN=$(date +%s)
say "killed every catalog replica at $(date -u +%T)"
if ./target/release/sillok admin status --timeout-secs 3 >/dev/null 2>&1; then say "ERROR: the catalog still answers"; exit 1; fi
ENDPOINT=$S3_ENDPOINT
RESTARTED=0
ROUNDS=0
while [ $(( $(date +%s) - DOWN )) -lt "$OUTAGE_S" ]; do
  if [ $RESTARTED = 0 ] && [ $(( $(date +%s) - DOWN )) -ge $(( OUTAGE_S / 2 )) ]; then
    kill -9 "$(cat "$DATA/gateway.pid")"
    ./target/release/sillok gateway --cluster "$DATA/cluster.json" --data "$DATA/gateway" --listen 127.0.0.1:0 \
      --addr-file "$DATA/gateway2.addr" >"$OUT/gateway-restarted.log" 2>&1 &
    GW2=$!
    for _ in $(seq 200); do [ -s "$DATA/gateway2.addr" ] && break; sleep 0.05; done
    ENDPOINT="http://$(cat "$DATA/gateway2.addr")"
    RESTARTED=1
    say "t+$(( $(date +%s) - DOWN )) s: gateway killed and restarted from its saved catalog (epoch $(curl -s "$ENDPOINT/_sillok/metrics" | awk '/^sillok_map_epoch/ {print $2}'))"
  fi
  gets "t+$(( $(date +%s) - DOWN ))s" "$ENDPOINT"
  ./target/release/loadgen --endpoint "$ENDPOINT" --bucket outage --objects-only 64KiB --count 20 --seed $(( 100 + ROUNDS )) --puts-only --progress 0 >>"$OUT/puts-during.txt" 2>&1 || true
  ROUNDS=$((ROUNDS + 1))
done
say "outage rounds: $ROUNDS over $OUTAGE_S s (each: GET all 600 objects, PUT 20 new ones)"
say "$(awk -F'\t' 'NR>2 {g+=$2; e+=$3; m+=$4; if ($6>p) p=$6; r+=$5; n++} END {printf "during the outage: %d GETs in %d rounds, %d errors, %d mismatches, mean %.0f ops/s, worst round p99 %.1f ms", g, n, e, m, r/n, p}' "$OUT/rounds.tsv")"
say "PUTs into the existing bucket during the outage: $(grep -c 'no errors' "$OUT/puts-during.txt" || true) of $ROUNDS rounds of 20 without an error"
say "rounds in $OUT/rounds.tsv"
