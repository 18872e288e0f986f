#!/usr/bin/env bash
# The project's test command (the README's): every unit, property and
# end-to-end test of the workspace. End-to-end tests start real `sillok dev`
# clusters on loopback; several run in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace --locked "$@"
