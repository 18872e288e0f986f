#!/usr/bin/env bash
# The project's test command (the README's): every unit, property and
# end-to-end test of the workspace. End-to-end tests start real `sillok dev`
# clusters on loopback; several run in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."
# Three tests at a time by default, also on 2 cores: an end-to-end test spends
# most of its time waiting (for elections, deadlines, rebuilds), so a third
# cluster uses the idle CPU. Measured: the 93 e2e tests took 654 s with 2 at a
# time in a clean-clone CI run, and 558 s with 3 at a time on the same
# machine while two other builds loaded it (load average 11); none failed.
# RUST_TEST_THREADS from the caller wins.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-3}
exec cargo test --workspace --locked "$@"
