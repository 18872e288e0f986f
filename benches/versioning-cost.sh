#!/usr/bin/env bash
# The cost of S3 versioning on the PUT and GET paths: one `sillok dev`
# cluster, one bucket unversioned and one with versioning enabled, the same
# loadgen run against each, alternating (A B A B) so that the machine's drift
# shows up as the spread between the two runs of one side.
#
# Usage: benches/versioning-cost.sh OUT_DIR   (needs target/release/sillok and
# target/release/loadgen: `cargo build --release -p sillok -p sillok-benches`,
# and the aws cli). Environment: SIZES (default "64KiB 1MiB"), COUNT_64KiB
# (default 600), COUNT_1MiB (default 150), CONCURRENCY (default 8).
set -euo pipefail
out=${1:?usage: versioning-cost.sh OUT_DIR}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
sillok=${SILLOK:-$root/target/release/sillok}
loadgen=${LOADGEN:-$root/target/release/loadgen}
dir=$(mktemp -d)
"$sillok" dev --data "$dir/dev" --port 0 >"$out/dev.log" 2>&1 &
dev=$!
trap 'kill $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 120); do [ -f "$dir/dev/cluster.env" ] && break; sleep 1; done
# shellcheck disable=SC1091
. "$dir/dev/cluster.env"
export AWS_ENDPOINT_URL=$S3_ENDPOINT
aws s3api create-bucket --bucket plain >/dev/null
aws s3api create-bucket --bucket versioned >/dev/null
aws s3api put-bucket-versioning --bucket versioned --versioning-configuration Status=Enabled
aws s3api get-bucket-versioning --bucket versioned
for size in ${SIZES:-64KiB 1MiB}; do
  var=COUNT_$size
  count=${!var:-}
  [ -n "$count" ] || { [ "$size" = 64KiB ] && count=600 || count=150; }
  for round in 1 2; do
    for bucket in plain versioned; do
      "$loadgen" --bucket "$bucket" --prefix "r$round-$size/" --objects-only "$size" --count "$count" \
        --concurrency "${CONCURRENCY:-8}" --progress 0 --strict --json "$out/$bucket-$size-$round.json" \
        >"$out/$bucket-$size-$round.txt" 2>&1
      echo "== $bucket $size round $round"; grep -E "PUT|GET" "$out/$bucket-$size-$round.txt" | head -4
    done
  done
done
