#!/usr/bin/env bash
# The S3-compatibility figures in one run on this machine (release build):
#   aws cli multipart upload and download of a 1 GiB object (MiB/s, bytes
#   compared) with the gateway's peak RSS during each;
#   HEAD and GET of 16 KiB objects at concurrency 32 (requests/s).
# Needs the aws cli on PATH (`pip install awscli`).
# Usage: benches/s3-figures.sh [OUT_DIR]   (default: target/s3-figures)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/s3-figures}
mkdir -p "$OUT"
command -v aws >/dev/null || { echo "the aws cli is needed: pip install awscli" >&2; exit 1; }
cargo build --release -p sillok --bin sillok >&2 && cargo build --release -p sillok-benches --bin loadgen >&2
DATA=$(mktemp -d /tmp/sillok-s3-figures.XXXXXX)
./target/release/sillok dev --data "$DATA" --port 0 >"$OUT/dev.log" 2>&1 &
DEV=$!
trap 'kill $DEV 2>/dev/null; wait $DEV 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 200); do [ -f "$DATA/cluster.env" ] && break; sleep 0.1; done
. "$DATA/cluster.env"
GW=$(cat "$DATA/gateway.pid")
S="$OUT/summary.txt"
: >"$S"
peak_reset() { echo 5 >"/proc/$GW/clear_refs"; }
peak() { awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$GW/status"; }
now() { date +%s.%N; }
rate() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", 1024 / (b - a) }'; }

aws --version 2>&1 | tee -a "$S"
aws s3 mb s3://figures >/dev/null
head -c $((1 << 30)) /dev/urandom >"$DATA/1g.bin"
peak_reset
t0=$(now); aws s3 cp --only-show-errors "$DATA/1g.bin" s3://figures/1g.bin; t1=$(now)
echo "aws s3 cp upload 1 GiB (multipart, 8 MiB parts): $(rate "$t0" "$t1") MiB/s, gateway peak RSS $(peak)" | tee -a "$S"
peak_reset
t0=$(now); aws s3 cp --only-show-errors s3://figures/1g.bin "$DATA/1g.back"; t1=$(now)
echo "aws s3 cp download 1 GiB: $(rate "$t0" "$t1") MiB/s, gateway peak RSS $(peak)" | tee -a "$S"
cmp "$DATA/1g.bin" "$DATA/1g.back" && echo "1 GiB round trip: bytes identical" | tee -a "$S"
aws s3api head-object --bucket figures --key 1g.bin --query '[ContentLength,ETag]' --output text | tee -a "$S"
rm -f "$DATA/1g.bin" "$DATA/1g.back"

./target/release/loadgen --concurrency 32 --progress 0 --pid "$GW" --objects-only 16KiB --count 5000 --heads --seed 7 \
  --json "$OUT/16KiB.json" 2>&1 | tee "$OUT/16KiB.txt" | grep -E "PUT|HEAD|GET|peak|mismatch" | tee -a "$S"
echo "figures in $OUT (summary.txt)"
