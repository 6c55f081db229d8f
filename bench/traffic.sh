#!/usr/bin/env bash
# bench/traffic.sh — the click path against nginx, on the same machine, in the same run.
#
# Builds the release binary, seeds CAMPAIGNS campaigns (5 streams each, with conditions), starts the traffic
# service and an nginx whose location answers `return 302`, and loads both over loopback:
#   1. at full speed with wrk (requests/s and latency at CONNECTIONS connections);
#   2. at half of each server's own maximum rate, for the latency a server shows when it is not saturated:
#      examples/loadgen.rs sends on a fixed schedule over PACED_CONNECTIONS keep-alive connections and times
#      each request from sending it to the last byte of its answer. (wrk's own pacing, its `delay`, walks a
#      list of every connection's timer on each loop; with hundreds of connections that delay showed as
#      server latency, 4–6 ms at p99 for nginx itself.)
# Prints one table, the ratio, clicks per fsync, and the traffic process's RSS with CAMPAIGNS and with 10,000
# campaigns loaded. Needs nginx and wrk (installed from Debian if missing).
#
# MODE=traffic (default): `traffoflex traffic` as deployed, shipping its click log to a Kafka broker of its own
#   (scripts/deps.sh kafka-broker; the JVM shares the same two cores). Its log is kept in /dev/shm, as a broker
#   on other machines would not write to this disk; BROKER_DIR=disk puts it beside the click log.
# MODE=up: `traffoflex up` on the embedded backends (the same process also ingests every click into its
#   embedded analytics store).
#
# Each server first gets WARMUP seconds (3) of load at 5,000 requests/s that are not measured.
#
#   bench/traffic.sh            # defaults: 1,000 campaigns, 10 s per run, 64 connections, 1 wrk thread
#   MODE=up CAMPAIGNS=1000 DURATION=10 CONNECTIONS=64 PACED_CONNECTIONS=100 DURABILITY=fast bench/traffic.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
MODE="${MODE:-traffic}"
CAMPAIGNS="${CAMPAIGNS:-1000}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
DURABILITY="${DURABILITY:-durable}"
PACED_CONNECTIONS="${PACED_CONNECTIONS:-100}"
WARMUP="${WARMUP:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/traffoflex/target}"
WORK="$(mktemp -d)"
# The broker stands in for a Kafka cluster on other machines: by default its log is kept in memory, so that its
# writes (flushed by the kernel in bursts) don't land on the disk the click log syncs to. BROKER_DIR=disk puts
# it beside the click log instead.
BROKER_SHM=
case "${BROKER_DIR:-memory}" in
  memory) BROKER_SHM="$(mktemp -d -p /dev/shm 2>/dev/null || true)"; BROKER_DIR="${BROKER_SHM:-$WORK/kafka}" ;;
  disk) BROKER_DIR="$WORK/kafka" ;;
  *) echo "BROKER_DIR is memory or disk, not $BROKER_DIR" >&2; rm -rf "$WORK"; exit 2 ;;
esac
TF_PORT=18181
NGINX_PORT=18182
KAFKA_PORT=18192
KAFKA_CONTROLLER_PORT=18193
stop_tf() {
  if [ -n "${TF_PID:-}" ]; then kill -INT "$TF_PID" 2>/dev/null || true; wait "$TF_PID" 2>/dev/null || true; fi
  TF_PID=
}
cleanup() {
  stop_tf
  if [ -f "$WORK/nginx.pid" ]; then kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; fi
  if [ -n "${KAFKA_PID:-}" ]; then kill "$KAFKA_PID" 2>/dev/null || true; wait "$KAFKA_PID" 2>/dev/null || true; fi
  if [ -n "$BROKER_SHM" ]; then rm -rf "$BROKER_SHM"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v nginx >/dev/null && command -v wrk >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null
}
cargo build --release -q --bin traffoflex --example bench_seed --example loadgen
BIN="$CARGO_TARGET_DIR/release/traffoflex"
SEED="$CARGO_TARGET_DIR/release/examples/bench_seed"
LOADGEN="$CARGO_TARGET_DIR/release/examples/loadgen"

# The URLs: campaigns in turn, countries and devices that hit different streams (loadgen sends the same).
write_script() { # file
  cat > "$1" <<LUA
local n = $CAMPAIGNS
local countries = {"DE","US","FR","ES","PL","BR"}
local i = 0
request = function()
  i = i + 1
  local path = string.format("/c/bench-%05d?country=%s&sub1=s%d&sub2=x", i % n, countries[i % #countries + 1], i)
  return wrk.format("GET", path, {["User-Agent"] = (i % 2 == 0) and "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 Safari/604.1" or "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36"})
end
LUA
}
write_script "$WORK/full.lua"

run_wrk() { # url connections script [seconds] -> "rps p50_ms p99_ms"
  wrk -t1 -c"$2" -d"${4:-$DURATION}s" --latency -s "$3" "$1" > "$WORK/wrk.txt" 2>&1
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
# Half of `max_rps` on a fixed schedule -> "connections rps p50_ms p99_ms p999_ms failed_requests"
run_paced() { # host:port max_rps
  local rate out
  rate=$(awk -v r="$2" 'BEGIN{printf "%d", r/2}')
  out=$("$LOADGEN" "$1" "$rate" "$PACED_CONNECTIONS" "$DURATION" "$CAMPAIGNS")
  read -r rps p50 p99 p999 _max errors <<< "$out"
  echo "$PACED_CONNECTIONS $rps $p50 $p99 $p999 $errors"
}

wait_ready() { # url what
  for _ in $(seq 1 300); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "$2 did not become ready" >&2; cat "$WORK/tf.err" >&2; exit 1
}

if [ "$MODE" = traffic ]; then
  mkdir -p "$BROKER_DIR"
  scripts/deps.sh kafka-broker "$BROKER_DIR" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" > "$WORK/kafka.log" 2>&1 &
  KAFKA_PID=$!
  for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null && break; sleep 0.2; done
fi
start_tf() { # data_dir
  if [ "$MODE" = traffic ]; then
    "$BIN" migrate --data-dir "$1" --kafka-brokers "127.0.0.1:$KAFKA_PORT" > "$WORK/migrate.out" 2>&1 \
      || { cat "$WORK/migrate.out" >&2; exit 1; }
    "$BIN" traffic --data-dir "$1" --listen "127.0.0.1:$TF_PORT" --kafka-brokers "127.0.0.1:$KAFKA_PORT" \
      --click-durability "$DURABILITY" --health-checks false > "$WORK/tf.out" 2> "$WORK/tf.err" &
  else
    "$BIN" up --data-dir "$1" --traffic-listen "127.0.0.1:$TF_PORT" --click-durability "$DURABILITY" \
      --health-checks false > "$WORK/tf.out" 2> "$WORK/tf.err" &
  fi
  TF_PID=$!
  wait_ready "http://127.0.0.1:$TF_PORT/readyz" "traffoflex $MODE"
}

"$SEED" "$WORK/tf" "$CAMPAIGNS" >/dev/null
start_tf "$WORK/tf"

cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { add_header Cache-Control no-store; return 302 https://offer.example/land?cid=1; }
  }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK"

TF_URL="http://127.0.0.1:$TF_PORT"
NG_URL="http://127.0.0.1:$NGINX_PORT"
# Unmeasured warm-up: a fresh process (and, in MODE=traffic, the fresh broker's JIT) settles before the runs.
"$LOADGEN" "127.0.0.1:$TF_PORT" 5000 16 "$WARMUP" "$CAMPAIGNS" >/dev/null
"$LOADGEN" "127.0.0.1:$NGINX_PORT" 5000 16 "$WARMUP" "$CAMPAIGNS" >/dev/null
read -r tf_rps tf_p50 tf_p99 < <(run_wrk "$TF_URL" "$CONNECTIONS" "$WORK/full.lua")
read -r ng_rps ng_p50 ng_p99 < <(run_wrk "$NG_URL" "$CONNECTIONS" "$WORK/full.lua")
read -r tf_c tf_rps_h tf_p50_h tf_p99_h tf_p999_h tf_failed < <(run_paced "127.0.0.1:$TF_PORT" "$tf_rps")
read -r ng_c ng_rps_h ng_p50_h ng_p99_h ng_p999_h ng_failed < <(run_paced "127.0.0.1:$NGINX_PORT" "$ng_rps")
if [ "$tf_failed" != 0 ] || [ "$ng_failed" != 0 ]; then
  echo "requests failed at half rate: traffoflex $tf_failed, nginx $ng_failed" >&2; exit 1
fi
tf_rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$TF_PID/status")
metric() { curl -s "$TF_URL/metrics" | awk -v m="$1" '$1==m {print $2}'; }
appended=$(metric traffoflex_clicklog_appended_total)
fsyncs=$(metric traffoflex_clicklog_fsyncs_total)
commit_sum=$(metric traffoflex_clicklog_commit_seconds_sum)
commit_count=$(metric traffoflex_clicklog_commit_seconds_count)
stop_tf

# RSS with 10,000 campaigns, while serving clicks (the allocator returns what loading freed as it goes on).
"$SEED" "$WORK/tf10k" 10000 >/dev/null
start_tf "$WORK/tf10k"
peak10k_kib=$(awk '/VmHWM/ {print $2}' "/proc/$TF_PID/status")
sleep 2
"$LOADGEN" "127.0.0.1:$TF_PORT" 5000 16 3 10000 >/dev/null
rss10k_kib=$(awk '/VmRSS/ {print $2}' "/proc/$TF_PID/status")
stop_tf

printf '\n`traffoflex %s`, %s campaigns x 5 streams, %s clicks, %ss per run, loopback, 2 cores\n\n' \
  "$MODE" "$CAMPAIGNS" "$DURABILITY" "$DURATION"
printf '| server | load | connections | requests/s | p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|---|---|---|\n'
printf '| traffoflex | full speed (wrk -t1) | %s | %s | %s | %s | – |\n' "$CONNECTIONS" "$tf_rps" "$tf_p50" "$tf_p99"
printf '| nginx return 302 | full speed (wrk -t1) | %s | %s | %s | %s | – |\n' "$CONNECTIONS" "$ng_rps" "$ng_p50" "$ng_p99"
printf '| traffoflex | half its max rate (loadgen) | %s | %s | %s | %s | %s |\n' "$tf_c" "$tf_rps_h" "$tf_p50_h" "$tf_p99_h" "$tf_p999_h"
printf '| nginx return 302 | half its max rate (loadgen) | %s | %s | %s | %s | %s |\n' "$ng_c" "$ng_rps_h" "$ng_p50_h" "$ng_p99_h" "$ng_p999_h"
awk -v a="$tf_rps" -v b="$ng_rps" 'BEGIN{printf "\nrequests/s ratio traffoflex/nginx: %.2fx\n", a/b}'
awk -v a="$appended" -v b="$fsyncs" 'BEGIN{ if (b>0) printf "clicks per fsync (group commit): %.1f (%d clicks, %d fsyncs)\n", a/b, a, b}'
awk -v s="$commit_sum" -v n="$commit_count" 'BEGIN{ if (n>0) printf "group commit (write and fdatasync): %.3f ms on average over %d\n", s*1000/n, n}'
printf 'traffoflex %s RSS: %s MiB with %s campaigns, %s MiB with 10,000 campaigns (%s MiB at the peak of loading them)\n' \
  "$MODE" "$((tf_rss_kib/1024))" "$CAMPAIGNS" "$((rss10k_kib/1024))" "$((peak10k_kib/1024))"
