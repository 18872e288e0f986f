#!/usr/bin/env bash
# What TLS on the S3 endpoint costs, as a ratio of plain HTTP, in one run on
# this machine (release build): one `sillok dev --tls` cluster, and a second
# gateway on the same cluster (same nodes, same catalog) serving plain HTTP.
# The same client (loadgen, same flags, its https client given the dev CA for
# both) PUTs then GETs 1 MiB and 64 KiB objects through each gateway in turn
# (plain, then TLS, per size); each gateway's CPU seconds (user + system,
# /proc/PID/stat) are taken around each phase (PUT, GET: separate loadgen
# runs over the same objects) and given per GiB moved.
# Usage: benches/tls-figures.sh [OUT_DIR]   (default: target/tls-figures)
# TLS_FIGURES_CONCURRENCY (default 8) sets loadgen's requests in flight.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/tls-figures}
C=${TLS_FIGURES_CONCURRENCY:-8}
mkdir -p "$OUT"
cargo build --release -p sillok --bin sillok -p sillok-benches --bin loadgen >&2
DATA=$(mktemp -d /tmp/sillok-tls-figures.XXXXXX)
PLAIN=
./target/release/sillok dev --tls --data "$DATA" --port 0 >"$OUT/dev.log" 2>&1 &
DEV=$!
trap 'kill $PLAIN $DEV 2>/dev/null; wait $PLAIN $DEV 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 600); do [ -f "$DATA/cluster.env" ] && break; sleep 0.1; done
[ -f "$DATA/cluster.env" ] || { echo "sillok dev --tls did not come up; see $OUT/dev.log" >&2; exit 1; }
# The plain gateway: started before cluster.env is sourced (its SILLOK_*
# variables would be read as flags), with sillok dev's gateway flags but TLS.
./target/release/sillok gateway --cluster "$DATA/cluster.json" --data "$DATA/gateway-plain" \
    --listen 127.0.0.1:0 --addr-file "$DATA/plain.addr" --domain localhost --lifecycle-interval-s 10 \
    >"$OUT/plain-gateway.log" 2>&1 &
PLAIN=$!
for _ in $(seq 600); do [ -s "$DATA/plain.addr" ] && break; sleep 0.1; done
[ -s "$DATA/plain.addr" ] || { echo "the plain gateway did not come up; see $OUT/plain-gateway.log" >&2; exit 1; }
. "$DATA/cluster.env"
TLS_GW=$(cat "$DATA/gateway.pid")
TLS_EP=$S3_ENDPOINT
PLAIN_EP=http://$(tr -d '\n' <"$DATA/plain.addr")
TICK=$(getconf CLK_TCK)
cpu() { awk -v t="$TICK" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
S="$OUT/summary.txt"
{
    echo "TLS vs plain HTTP on the S3 endpoint, one run, $(date -u +%FT%TZ), $(nproc) cores shared with other work"
    echo "loadgen --objects-only SIZE --concurrency $C (PUT phase then GET phase), endpoints $PLAIN_EP and $TLS_EP"
} | tee "$S"

# run NAME ENDPOINT PID SIZE: the PUT phase, then the GET phase of the same
# objects, each a loadgen run with the gateway's CPU seconds around it.
run() {
    local name=$1 ep=$2 pid=$3 size=$4 phase c0
    for phase in puts gets; do
        c0=$(cpu "$pid")
        ./target/release/loadgen --endpoint "$ep" --ca-bundle "$AWS_CA_BUNDLE" --objects-only "$size" \
            --"$phase"-only --concurrency "$C" --progress 0 --seed 5 --prefix "$name/" \
            --json "$OUT/$name-$phase.json" >"$OUT/$name-$phase.txt" 2>&1
        echo "$c0 $(cpu "$pid")" >"$OUT/$name-$phase.cpu"
    done
}

for size in 1MiB 64KiB; do
    run "plain-$size" "$PLAIN_EP" "$PLAIN" "$size"
    run "tls-$size" "$TLS_EP" "$TLS_GW" "$size"
done

python3 - "$OUT" <<'PY' | tee -a "$S"
import json, sys
out = sys.argv[1]

def phase(name, ph):
    doc = json.load(open(f"{out}/{name}-{ph}.json"))
    assert doc["ok"] and doc["errors"] == 0, f"{name}-{ph}: errors or mismatches, see {out}/{name}-{ph}.txt"
    c0, c1 = map(float, open(f"{out}/{name}-{ph}.cpu").read().split())
    rows = [r for s in doc["sections"] for r in s["rows"]]
    row = max(rows, key=lambda r: r["bytes"])
    return row["mib_per_s"], (c1 - c0) / (row["bytes"] / 2**30)

print(f"{'size':<6} {'op':<4} {'plain MiB/s':>11} {'TLS MiB/s':>10} {'TLS/plain':>9}   {'gateway CPU s/GiB: plain':>24} {'TLS':>6} {'TLS/plain':>9}")
for size in ["1MiB", "64KiB"]:
    for op, ph in [("PUT", "puts"), ("GET", "gets")]:
        (p, pc), (t, tc) = phase(f"plain-{size}", ph), phase(f"tls-{size}", ph)
        print(f"{size:<6} {op:<4} {p:>11.1f} {t:>10.1f} {t / p:>9.2f}   {pc:>24.2f} {tc:>6.2f} {tc / pc:>9.2f}")
PY
echo "figures in $OUT (summary.txt; each run's loadgen output in NAME.txt and NAME.json)"
