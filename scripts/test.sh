#!/usr/bin/env bash
# scripts/test.sh — the whole test suite, as CI runs it:
#   1. start the real dependencies (ClickHouse, FerretDB, Kafka, a Kubernetes API server) with scripts/deps.sh,
#   2. cargo fmt --check, cargo clippy -D warnings,
#   3. every Rust test, the integration tests against those servers included,
#   4. schemathesis against the API's OpenAPI document (scripts/api-fuzz.sh),
#   5. stop the dependencies again (unless they were already running before, or TRAFFOFLEX_KEEP_DEPS=1).
# Cargo's target directory defaults to ~/.cache/traffoflex/target so a second run rebuilds only our crates.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/traffoflex/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
start=$(date +%s)
step() { printf '[test %4ds] %s\n' "$(( $(date +%s) - start ))" "$*"; }

was_running=0
if scripts/deps.sh status >/dev/null 2>&1; then was_running=1; fi
stop_deps() {
  if [ "$was_running" = 0 ] && [ "${TRAFFOFLEX_KEEP_DEPS:-0}" != 1 ]; then
    step "stopping dependencies"
    scripts/deps.sh stop >/dev/null 2>&1 || true
  fi
}
trap stop_deps EXIT

step "starting dependencies"
eval "$(scripts/deps.sh start)"
env | grep '^TRAFFOFLEX_TEST_' | sort

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "API fuzzing against its OpenAPI document"
# `cargo test` built the binary for the integration tests; fuzz that one rather than build another.
scripts/api-fuzz.sh "$CARGO_TARGET_DIR/debug/traffoflex"

step "all tests passed"
