#!/usr/bin/env bash
# scripts/api-fuzz.sh — property-based tests of the admin API against its own OpenAPI document, with
# schemathesis (from PyPI, installed into a virtualenv cached under ~/.cache/traffoflex):
#   starts `traffoflex api` on the embedded store in a temporary directory with a bootstrap admin, makes an API
#   token, and runs every documented operation with generated data. It fails on any 5xx answer, any answer
#   that does not match the documented schema, and any wrong content type.
#
# Usage: scripts/api-fuzz.sh [BINARY]   (default: $CARGO_TARGET_DIR/debug/traffoflex, built if missing)
#   TRAFFOFLEX_FUZZ_EXAMPLES   examples per operation and phase (default 20)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TRAFFOFLEX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/traffoflex}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
ST_VERSION=4.32.5
VENV="$CACHE/schemathesis-$ST_VERSION"
EXAMPLES="${TRAFFOFLEX_FUZZ_EXAMPLES:-20}"
BIN="${1:-$CARGO_TARGET_DIR/debug/traffoflex}"

log() { printf '[api-fuzz] %s\n' "$*" >&2; }

if [[ ! -x "$VENV/bin/st" ]]; then
  log "installing schemathesis $ST_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi
if [[ ! -x "$BIN" ]]; then
  log "building the binary"
  (cd "$REPO" && cargo build --locked --bin traffoflex)
fi

WORK="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
API_PID=""
cleanup() {
  if [[ -n "$API_PID" ]]; then kill "$API_PID" 2>/dev/null || true; wait "$API_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Login by e-mail code is on (log delivery), so its endpoints are fuzzed too.
env -u TRAFFOFLEX_MONGO_URI -u TRAFFOFLEX_CLICKHOUSE_URL \
  TRAFFOFLEX_ADMIN_EMAIL=fuzz@example.org TRAFFOFLEX_ADMIN_PASSWORD=fuzz-password-1 \
  "$BIN" api --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --otp-login log >"$WORK/api.log" 2>&1 &
API_PID=$!
for _ in $(seq 1 100); do
  curl -sf "$BASE/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "$BASE/readyz" >/dev/null || { log "the API did not start:"; cat "$WORK/api.log" >&2; exit 1; }

curl -sf -c "$WORK/cookies" -H 'content-type: application/json' "$BASE/api/v1/auth/login" \
  -d '{"email":"fuzz@example.org","password":"fuzz-password-1"}' >"$WORK/login.json"
CSRF="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["csrfToken"])' "$WORK/login.json")"
TOKEN="$(curl -sf -b "$WORK/cookies" -H "x-csrf-token: $CSRF" -H 'content-type: application/json' \
  "$BASE/api/v1/auth/tokens" -d '{"name":"fuzz"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"

cd "$WORK" # schemathesis keeps its example database in the working directory
log "schemathesis $ST_VERSION against $BASE/api/v1/openapi.json ($EXAMPLES examples per operation)"
"$VENV/bin/st" run "$BASE/api/v1/openapi.json" \
  --checks not_a_server_error,response_schema_conformance,content_type_conformance \
  -H "Authorization: Bearer $TOKEN" \
  --max-examples "$EXAMPLES" --workers 2 --seed 1 \
  --warnings off
