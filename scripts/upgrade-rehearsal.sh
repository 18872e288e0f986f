#!/usr/bin/env bash
# Rehearses a rolling upgrade on loopback: a `sillok dev` cluster started with
# an older build, data written through it, then every process replaced one at
# a time by the newer build (catalog replicas, then storage nodes, then the
# gateway: docs/operations.md, "Upgrading"), with an S3 write and a read of
# everything written so far after each replacement. Prints a transcript.
#
#   scripts/upgrade-rehearsal.sh OLD_SILLOK NEW_SILLOK [transcript-file]
#
# Build the old binary from an earlier commit, e.g.
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release --bin sillok)
set -uo pipefail
OLD=$(realpath "$1"); NEW=$(realpath "$2"); OUT=${3:-/dev/stdout}
D=$(mktemp -d "${TMPDIR:-/tmp}/sillok-upgrade-XXXX")
exec 3>"$OUT"
say() { printf '\n%s\n' "$*" >&3; }
run() { printf '$ %s\n' "$*" >&3; (eval "$@") 2>&1 | sed -E 's/[0-9a-f]{40}/<masked>/g; s/^/  /' >&3; return "${PIPESTATUS[0]}"; }
cmdline() { tr '\0' '\n' < "/proc/$1/cmdline" | tail -n +2; }
cleanup() {
    [ -n "${DEV_PID:-}" ] && kill "$DEV_PID" 2>/dev/null
    pkill -f -- "--cluster $D/cluster.json" 2>/dev/null
    sleep 1; [ "${KEEP:-0}" = 1 ] || rm -rf "$D" "$D.dev.log"
}
trap cleanup EXIT

say "== the old build"
run "$OLD --version"
"$OLD" dev --data "$D" --port 0 >"$D.dev.log" 2>&1 &
DEV_PID=$!
for _ in $(seq 1 240); do [ -f "$D/cluster.env" ] && break; sleep 0.5; done
. "$D/cluster.env"
head -c 1500000 /dev/urandom >"$D/a.bin"
run "aws s3 mb s3://media"
run "aws s3api put-bucket-versioning --bucket media --versioning-configuration Status=Enabled"
run "aws s3 cp --no-progress $D/a.bin s3://media/a.bin"
run "aws s3api put-object-tagging --bucket media --key a.bin --tagging 'TagSet=[{Key=k,Value=v}]'"
for i in 1 2 3 4 5; do head -c $((i * 40000)) /dev/urandom >"$D/small-$i.bin"; aws s3 cp --quiet "$D/small-$i.bin" "s3://media/small-$i.bin"; done
run "aws s3 ls s3://media/"
run "$OLD admin status | head -3"

say "== replace every process by the new build, one at a time"
run "$NEW --version"
order=()
for role in catalog node gateway; do
    for p in $(pgrep -f -- "--cluster $D/cluster.json"); do
        [ "$(cmdline "$p" | head -1)" = "$role" ] && order+=("$p")
    done
done
GW_ADDR=${S3_ENDPOINT#http://}
n=0
for pid in "${order[@]}"; do
    mapfile -t args < <(cmdline "$pid" | sed "s#^127.0.0.1:0\$#$GW_ADDR#")
    kill -9 "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    "$NEW" "${args[@]}" >>"$D/logs/upgraded-${args[0]}.log" 2>&1 &
    n=$((n + 1))
    ok=0
    for _ in $(seq 1 120); do
        if aws s3 cp --quiet "$D/a.bin" "s3://media/during-$n.bin" 2>/dev/null; then ok=1; break; fi
        sleep 0.5
    done
    printf '$ # %s %s (pid %s) now runs the new build; a PUT after it: %s\n' "${args[0]}" \
        "$(printf '%s\n' "${args[@]}" | grep -A1 -x -- '--id' | tail -1)" "$!" "$([ $ok = 1 ] && echo ok || echo FAILED)" >&3
done

say "== after the upgrade"
run "$NEW admin status | head -3"
run "grep -h 'upgraded\|rewrote\|built the placement index' $D/logs/upgraded-*.log | cut -c1-200 | sort | uniq -c | head"
run "aws s3 cp --no-progress s3://media/a.bin $D/a.back && cmp $D/a.bin $D/a.back && echo 'a.bin identical'"
run "for i in 1 2 3 4 5; do aws s3 cp --quiet s3://media/small-\$i.bin - | cmp - $D/small-\$i.bin || echo DIFFERENT; done; echo 'small-1..5 compared'"
run "aws s3api get-object-tagging --bucket media --key a.bin --query TagSet"
run "aws s3api list-object-versions --bucket media --prefix a.bin --query 'Versions[].{Id:VersionId,Latest:IsLatest}' --output text"
run "aws s3 cp --no-progress $D/a.bin s3://media/after.bin && aws s3 ls s3://media/ | wc -l"
