#!/usr/bin/env bash
# bench/traffic.sh — the click path against nginx, on the same machine, in the same run.
#
# Builds the release binary, seeds CAMPAIGNS campaigns (5 streams each, with conditions), starts
# `traffoflex up` on the embedded backends and an nginx whose location answers `return 302`, then loads both
# with wrk over loopback: first at full speed (requests/s), then at half of traffoflex's maximum rate for
# latency (wrk2-style constant rate is not available in Debian's wrk, so latency is read at a fixed
# connection count; see the README). Prints one table and the ratios. Also prints the traffic process's RSS
# with 10,000 campaigns loaded. Needs nginx and wrk (installed from Debian if missing).
#
#   bench/traffic.sh            # defaults: 1,000 campaigns, 10 s per run, 64 connections, 1 wrk thread
#   CAMPAIGNS=1000 DURATION=10 CONNECTIONS=64 bench/traffic.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
CAMPAIGNS="${CAMPAIGNS:-1000}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
DURABILITY="${DURABILITY:-durable}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/traffoflex/target}"
WORK="$(mktemp -d)"
TF_PORT=18181
NGINX_PORT=18182
cleanup() {
  [ -n "${TF_PID:-}" ] && kill -INT "$TF_PID" 2>/dev/null && wait "$TF_PID" 2>/dev/null
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v nginx >/dev/null && command -v wrk >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null
}
cargo build --release -q --bin traffoflex --example bench_seed
BIN="$CARGO_TARGET_DIR/release/traffoflex"
SEED="$CARGO_TARGET_DIR/release/examples/bench_seed"

# The URLs: campaigns in turn, countries and devices that hit different streams.
cat > "$WORK/urls.lua" <<LUA
local n = $CAMPAIGNS
local countries = {"DE","US","FR","ES","PL","BR"}
local i = 0
request = function()
  i = i + 1
  local path = string.format("/c/bench-%05d?country=%s&sub1=s%d&sub2=x", i % n, countries[i % #countries + 1], i)
  return wrk.format("GET", path, {["User-Agent"] = (i % 2 == 0) and "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 Safari/604.1" or "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36"})
end
LUA

run_wrk() { # url -> "rps p50_ms p99_ms"
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/urls.lua" "$1" > "$WORK/wrk.txt" 2>&1
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/wrk.txt")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/wrk.txt")
  echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}
to_ms() { # wrk prints 1.23ms / 456.00us / 1.02s
  case "$1" in *us) awk -v v="${1%us}" 'BEGIN{printf "%.3f", v/1000}';; *ms) awk -v v="${1%ms}" 'BEGIN{printf "%.3f", v}';;
    *s) awk -v v="${1%s}" 'BEGIN{printf "%.3f", v*1000}';; *) echo "$1";; esac
}

"$SEED" "$WORK/tf" "$CAMPAIGNS" >/dev/null
"$BIN" up --data-dir "$WORK/tf" --traffic-listen "127.0.0.1:$TF_PORT" --click-durability "$DURABILITY" \
  --health-checks false > "$WORK/tf.out" 2> "$WORK/tf.err" &
TF_PID=$!
for _ in $(seq 1 100); do grep -q "is up in" "$WORK/tf.out" 2>/dev/null && break; sleep 0.1; done
grep -q "is up in" "$WORK/tf.out" || { cat "$WORK/tf.err"; exit 1; }

cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { add_header Cache-Control no-store; return 302 https://offer.example/land?cid=1; }
  }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK"

read -r tf_rps tf_p50 tf_p99 < <(run_wrk "http://127.0.0.1:$TF_PORT")
read -r ng_rps ng_p50 ng_p99 < <(run_wrk "http://127.0.0.1:$NGINX_PORT")
# Latency at about half of the maximum rate: half the connections, one at a time each.
CONNECTIONS=$(( CONNECTIONS / 2 > 0 ? CONNECTIONS / 2 : 1 ))
read -r tf_rps_h tf_p50_h tf_p99_h < <(run_wrk "http://127.0.0.1:$TF_PORT")
read -r ng_rps_h ng_p50_h ng_p99_h < <(run_wrk "http://127.0.0.1:$NGINX_PORT")
tf_rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$TF_PID/status")
appended=$(curl -s "http://127.0.0.1:$TF_PORT/metrics" | awk '/^traffoflex_clicklog_appended_total/ {print $2}')
fsyncs=$(curl -s "http://127.0.0.1:$TF_PORT/metrics" | awk '/^traffoflex_clicklog_fsyncs_total/ {print $2}')
kill -INT "$TF_PID"; wait "$TF_PID" 2>/dev/null || true; TF_PID=

# RSS with 10,000 campaigns.
"$SEED" "$WORK/tf10k" 10000 >/dev/null
"$BIN" up --data-dir "$WORK/tf10k" --traffic-listen "127.0.0.1:$TF_PORT" --health-checks false > "$WORK/tf10k.out" 2>/dev/null &
TF_PID=$!
for _ in $(seq 1 300); do grep -q "is up in" "$WORK/tf10k.out" 2>/dev/null && break; sleep 0.1; done
curl -s -o /dev/null "http://127.0.0.1:$TF_PORT/c/bench-00001?country=DE"
rss10k_kib=$(awk '/VmRSS/ {print $2}' "/proc/$TF_PID/status")

printf '\n%s campaigns x 5 streams, %s clicks mode, wrk -t1, %ss per run, loopback, 2 cores\n\n' "$CAMPAIGNS" "$DURABILITY" "$DURATION"
printf '| server | connections | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|\n'
printf '| traffoflex | %s | %s | %s | %s |\n' "$((CONNECTIONS*2))" "$tf_rps" "$tf_p50" "$tf_p99"
printf '| nginx return 302 | %s | %s | %s | %s |\n' "$((CONNECTIONS*2))" "$ng_rps" "$ng_p50" "$ng_p99"
printf '| traffoflex | %s | %s | %s | %s |\n' "$CONNECTIONS" "$tf_rps_h" "$tf_p50_h" "$tf_p99_h"
printf '| nginx return 302 | %s | %s | %s | %s |\n' "$CONNECTIONS" "$ng_rps_h" "$ng_p50_h" "$ng_p99_h"
awk -v a="$tf_rps" -v b="$ng_rps" 'BEGIN{printf "\nrequests/s ratio traffoflex/nginx: %.2fx\n", a/b}'
awk -v a="$appended" -v b="$fsyncs" 'BEGIN{ if (b>0) printf "clicks per fsync (group commit): %.1f (%d clicks, %d fsyncs)\n", a/b, a, b}'
printf 'traffic RSS: %s MiB with %s campaigns, %s MiB with 10,000 campaigns\n' "$((tf_rss_kib/1024))" "$CAMPAIGNS" "$((rss10k_kib/1024))"
