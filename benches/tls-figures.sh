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
# TLS_FIGURES_CONCURRENCY (default 8) sets loadgen's requests in flight,
# TLS_FIGURES_ROUNDS (default 3) how many times each pair of runs is made
# (the medians are reported). A failed request is counted and reported, not
# fatal; a read that does not match what was written is (exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/tls-figures}
C=${TLS_FIGURES_CONCURRENCY:-8}
ROUNDS=${TLS_FIGURES_ROUNDS:-3}
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
    echo "loadgen --objects-only SIZE --concurrency $C (PUT phase then GET phase: 256 x 1 MiB, 1000 x 64 KiB), $ROUNDS rounds"
    echo "endpoints $PLAIN_EP (plain) and $TLS_EP (TLS); load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$S"

# run NAME ENDPOINT PID SIZE COUNT: the PUT phase, then the GET phase of the
# same objects, each a loadgen run with the gateway's CPU seconds around it.
run() {
    local name=$1 ep=$2 pid=$3 size=$4 count=$5 phase c0
    for phase in puts gets; do
        c0=$(cpu "$pid")
        ./target/release/loadgen --endpoint "$ep" --ca-bundle "$AWS_CA_BUNDLE" --objects-only "$size" \
            --count "$count" --"$phase"-only --concurrency "$C" --progress 0 --seed 5 --prefix "$name/" \
            --json "$OUT/$name-$phase.json" >"$OUT/$name-$phase.txt" 2>&1 || true
        echo "$c0 $(cpu "$pid")" >"$OUT/$name-$phase.cpu"
    done
}

# Rounds alternate which gateway goes first, so that a change in the
# machine's other load during the run weighs on both alike.
for size in 1MiB 64KiB; do
    count=$([ "$size" = 1MiB ] && echo 256 || echo 1000)
    for r in $(seq "$ROUNDS"); do
        if [ $((r % 2)) -eq 1 ]; then
            run "plain-$size-$r" "$PLAIN_EP" "$PLAIN" "$size" "$count"
            run "tls-$size-$r" "$TLS_EP" "$TLS_GW" "$size" "$count"
        else
            run "tls-$size-$r" "$TLS_EP" "$TLS_GW" "$size" "$count"
            run "plain-$size-$r" "$PLAIN_EP" "$PLAIN" "$size" "$count"
        fi
    done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$S"

python3 - "$OUT" "$ROUNDS" <<'PY' | tee -a "$S"
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])

def phase(name, ph):
    """MiB/s, gateway CPU s per GiB, failed requests, mismatches."""
    doc = json.load(open(f"{out}/{name}-{ph}.json"))
    c0, c1 = map(float, open(f"{out}/{name}-{ph}.cpu").read().split())
    rows = [r for s in doc["sections"] for r in s["rows"]]
    row = max(rows, key=lambda r: r["bytes"])
    return row["mib_per_s"], (c1 - c0) / max(row["bytes"] / 2**30, 1e-9), doc["errors"], doc["verify_failures"]

med = statistics.median
print(f"medians of {rounds} rounds (TLS/plain: the median of the rounds' ratios)")
print(f"{'size':<6} {'op':<4} {'plain MiB/s':>11} {'TLS MiB/s':>10} {'TLS/plain':>9}   {'gateway CPU s/GiB: plain':>24} {'TLS':>6} {'TLS/plain':>9}   failed/mismatched")
bad = 0
for size in ["1MiB", "64KiB"]:
    for op, ph in [("PUT", "puts"), ("GET", "gets")]:
        p = [phase(f"plain-{size}-{r}", ph) for r in range(1, rounds + 1)]
        t = [phase(f"tls-{size}-{r}", ph) for r in range(1, rounds + 1)]
        fails = sum(x[2] for x in p + t)
        mism = sum(x[3] for x in p + t)
        bad += mism
        print(
            f"{size:<6} {op:<4} {med(x[0] for x in p):>11.1f} {med(x[0] for x in t):>10.1f}"
            f" {med(b[0] / a[0] for a, b in zip(p, t)):>9.2f}   {med(x[1] for x in p):>24.2f}"
            f" {med(x[1] for x in t):>6.2f} {med(b[1] / a[1] for a, b in zip(p, t)):>9.2f}   {fails}/{mism}"
        )
sys.exit(1 if bad else 0)
PY
echo "figures in $OUT (summary.txt; each run's loadgen output in NAME.txt and NAME.json)"
