#!/usr/bin/env bash
# The crate seams, checked: prints the dependency graph between the
# workspace's crates, refuses a layering break (the pure crates pulling in
# the network, async or storage stacks), and looks for unused dependencies
# by name (scripts/unused-deps.py).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== workspace crate graph (normal dependencies)"
for p in sillok-placement sillok-model sillok-tls sillok-rpc sillok-catalog sillok-storage-node sillok-gateway sillok; do
    deps=$(cargo tree -p "$p" -e normal --depth 1 --prefix none --offline 2>/dev/null \
        | awk 'NR > 1 && $1 ~ /^sillok/ {print $1}' | sort -u | tr '\n' ' ')
    echo "  $p -> ${deps:-(none)}"
done

fail=0
forbid() { # crate, then the crates it must never reach
    local crate=$1; shift
    local tree
    tree=$(cargo tree -p "$crate" -e normal --prefix none --offline 2>/dev/null | awk '{print $1}' | sort -u)
    for bad in "$@"; do
        if grep -qx "$bad" <<<"$tree"; then
            echo "LAYERING: $crate depends (directly or not) on $bad"
            fail=1
        fi
    done
}
forbid sillok-placement tokio openraft redb hyper axum sillok-rpc sillok-catalog sillok-model
forbid sillok-model tokio openraft redb hyper axum sillok-rpc sillok-catalog sillok-storage-node
# TLS is a leaf: certificates and rustls configurations, no HTTP stack, no
# storage, no other Sillok crate (every role may use it).
forbid sillok-tls hyper axum openraft redb ring sillok-placement sillok-rpc sillok-catalog sillok-model sillok-storage-node sillok-gateway
forbid sillok-rpc openraft redb sillok-placement sillok-catalog sillok-model
forbid sillok-catalog sillok-model sillok-storage-node sillok-gateway
forbid sillok-storage-node sillok-gateway
[ "$fail" -eq 0 ] && echo "== layering: ok"

echo "== unused dependencies (scripts/unused-deps.py)"
python3 scripts/unused-deps.py || fail=1
exit "$fail"
