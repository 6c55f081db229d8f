#!/usr/bin/env bash
# scripts/deps.sh — install (cached), start and stop TraffoFlex's real test dependencies on loopback:
#
#   ClickHouse 18.16 (Debian's clickhouse-server)      HTTP 127.0.0.1:18123, native TCP 127.0.0.1:19000
#   FerretDB 1.24.2 (MongoDB wire protocol), built from  127.0.0.1:27018
#     scripts/ferretdb/main.go, on PostgreSQL 15          127.0.0.1:15432 (database "ferretdb")
#   Apache Kafka 4.1.0, KRaft broker+controller, jars    127.0.0.1:19092 (controller 19093)
#     from Maven Central via scripts/kafka/pom.xml
#   etcd 3.6.16, built from scripts/kube/etcd             127.0.0.1:12379 (peer 12380)
#   kube-apiserver 1.35.4, built from scripts/kube/       https://127.0.0.1:16443 (kubeconfig $STATE/kubeconfig)
#     apiserver (the API server alone, as controller-runtime's envtest: no kubelet, no controller-manager)
#   current ClickHouse (26.9): chDB, its engine in-process, HTTP 127.0.0.1:18124
#     from PyPI (chdb-core) behind scripts/chdb-shim.py     (TRAFFOFLEX_CHDB=0 leaves it out)
#
# Usage: scripts/deps.sh start|stop|restart|status|env|install
#   start    install what is missing, start every service that is not already running and answering
#            (data dirs are wiped first, so each run starts clean), wait until each answers, then print
#            the `export` lines (also written to $STATE/env). Idempotent: a running service is left alone.
#   stop     stop everything this script started (caches are kept).
#   status   show what runs.   env   print the export lines.   install   only install/build (no start).
#   kafka-broker DIR PORT CONTROLLER_PORT   run a broker of its own in the foreground on DIR (formatted the
#            first time), for tests that stop and start Kafka.
#
# Installs are cached under ${TRAFFOFLEX_CACHE_DIR:-~/.cache/traffoflex}; state (data, logs, pid files)
# lives in ${TRAFFOFLEX_DEPS_DIR:-<repo>/.deps}. Ports are overridable, see "Configuration" below.
# Any failure prints the service's log tail and exits non-zero.
set -euo pipefail

# ---------------------------------------------------------------- configuration
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${TRAFFOFLEX_DEPS_DIR:-$REPO/.deps}"
CACHE="${TRAFFOFLEX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/traffoflex}"

CH_HTTP_PORT="${TRAFFOFLEX_CLICKHOUSE_HTTP_PORT:-18123}"
CH_TCP_PORT="${TRAFFOFLEX_CLICKHOUSE_TCP_PORT:-19000}"
PG_PORT="${TRAFFOFLEX_POSTGRES_PORT:-15432}"
FERRET_PORT="${TRAFFOFLEX_FERRETDB_PORT:-27018}"
KAFKA_PORT="${TRAFFOFLEX_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${TRAFFOFLEX_KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_HEAP="${TRAFFOFLEX_KAFKA_HEAP:-512m}"
ETCD_PORT="${TRAFFOFLEX_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${TRAFFOFLEX_ETCD_PEER_PORT:-12380}"
KUBE_PORT="${TRAFFOFLEX_KUBE_APISERVER_PORT:-16443}"
CHDB_PORT="${TRAFFOFLEX_CHDB_PORT:-18124}"
CHDB_ENABLED="${TRAFFOFLEX_CHDB:-1}" # 0: no current ClickHouse (its tests then skip, outside CI)
TIMEOUT="${TRAFFOFLEX_DEPS_TIMEOUT:-90}" # seconds to wait for each service to answer

PG_VERSION=15
FERRET_SRC="$REPO/scripts/ferretdb"
KAFKA_POM="$REPO/scripts/kafka/pom.xml"
KAFKA_LIB="$CACHE/kafka/lib"
KUBE_SRC="$REPO/scripts/kube"
# chDB: ClickHouse's engine as a Python module (the wheel carries the whole engine, ~180 MB). Its dependencies
# pandas and pyarrow serve only its DataFrame API, so they are left out; lz4 decompresses the crate's inserts.
CHDB_VERSION=26.9.0
CHDB_LZ4_VERSION=4.4.5

export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------- helpers
T0=$(date +%s%N)
log() { printf '[deps %6.1fs] %s\n' "$(( ($(date +%s%N) - T0) / 1000000 ))e-3" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# die_with_log NAME MESSAGE LOGFILE...: the failure path of every service: show the logs' tails, exit 1.
die_with_log() {
  local name=$1 msg=$2 f
  shift 2
  log "ERROR: $name: $msg"
  for f in "$@"; do
    [[ -s "$f" ]] || continue
    echo "----- last 40 lines of $f -----" >&2
    tail -n 40 "$f" >&2 || true
    echo "----- end of $f -----" >&2
  done
  exit 1
}

as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_alive PIDFILE PATTERN: the process in PIDFILE lives (not a zombie) and its command line has PATTERN.
pid_alive() {
  local pid state
  [[ -f "$1" ]] || return 1
  pid=$(<"$1")
  [[ -n "$pid" && -d /proc/$pid ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ "$state" != Z ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# spawn PIDFILE LOGFILE CMD...: run CMD detached in its own session (pid == process group id).
spawn() {
  local pidfile=$1 logfile=$2
  shift 2
  : >"$logfile"
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner bash
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 9>&- &
  local i
  for i in $(seq 1 50); do [[ -s "$pidfile" ]] && return 0; sleep 0.1; done
  die "could not start $*"
}

# stop_pid NAME PIDFILE PATTERN [GRACE]: SIGTERM the process group, SIGKILL it after GRACE seconds.
stop_pid() {
  local name=$1 pidfile=$2 pattern=$3 grace=${4:-15} pid i
  if ! pid_alive "$pidfile" "$pattern"; then
    rm -f "$pidfile"
    return 0
  fi
  pid=$(<"$pidfile")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    pid_alive "$pidfile" "$pattern" || break
    sleep 0.1
  done
  if pid_alive "$pidfile" "$pattern"; then
    log "$name: still running after ${grace}s, killing"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "$pidfile"
  log "$name: stopped"
}

# wait_until NAME PIDFILE PATTERN "LOGFILES" CHECK...: poll CHECK until it succeeds; fail (showing the
# logs) if the process dies or TIMEOUT passes.
wait_until() {
  local name=$1 pidfile=$2 pattern=$3 logs
  read -ra logs <<<"$4"
  shift 4
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    pid_alive "$pidfile" "$pattern" || die_with_log "$name" "process exited during start-up" "${logs[@]}"
    ((SECONDS < deadline)) || die_with_log "$name" "not answering after ${TIMEOUT}s" "${logs[@]}"
    sleep 0.2
  done
}

# Refuse to start on a port that something else already holds: the error would be buried in a log.
require_free_port() {
  port_open "$2" && die "$1: port 127.0.0.1:$2 is already in use by another process (override with the env var, see scripts/DEPS.md)"
  return 0
}

file_hash() { cat "$@" | sha256sum | cut -c1-16; }

# Several shells (engineers, test runs) may call start/stop at once: serialise them on $STATE/.lock (fd 9;
# every process we leave running gets fd 9 closed).
take_lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock -n 9 && return 0
  log "waiting for another scripts/deps.sh on $STATE"
  flock -w 900 9 || die "could not lock $STATE/.lock within 900 s"
}

# ---------------------------------------------------------------- installs (cached)
apt_install() {
  log "apt: installing $* (apt-get update first)"
  as_root apt-get update -qq >"$CACHE/apt.log" 2>&1 || die_with_log apt "apt-get update failed" "$CACHE/apt.log"
  as_root apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "$@" >>"$CACHE/apt.log" 2>&1 ||
    die_with_log apt "apt-get install $* failed" "$CACHE/apt.log"
  log "apt: installed $*"
}

ch_bin() { command -v clickhouse-server || echo /usr/sbin/clickhouse-server; }
pg_bin() { echo "/usr/lib/postgresql/$PG_VERSION/bin"; }

install_system_packages() {
  local missing=()
  [[ -x "$(ch_bin)" ]] || missing+=(clickhouse-server)
  command -v clickhouse-client >/dev/null || missing+=(clickhouse-client)
  [[ -x "$(pg_bin)/initdb" && -x "$(pg_bin)/pg_ctl" ]] || missing+=("postgresql-$PG_VERSION")
  if ((${#missing[@]})); then apt_install "${missing[@]}"; else log "apt: clickhouse-server, postgresql-$PG_VERSION present"; fi
}

ferretdb_bin() { echo "$CACHE/ferretdb/ferretdb-$(file_hash "$FERRET_SRC/main.go" "$FERRET_SRC/go.mod" "$FERRET_SRC/go.sum")"; }

install_ferretdb() {
  local bin
  bin=$(ferretdb_bin)
  if [[ -x "$bin" ]]; then log "ferretdb: cached $(basename "$bin")"; return 0; fi
  command -v go >/dev/null || die "ferretdb: 'go' not found (needed to build FerretDB from the Go module proxy)"
  mkdir -p "$CACHE/ferretdb"
  log "ferretdb: building from $FERRET_SRC (Go modules; ~1-3 min cold)"
  (cd "$FERRET_SRC" && go build -trimpath -buildvcs=false -o "$bin.tmp.$$" .) >"$CACHE/ferretdb/build.log" 2>&1 ||
    die_with_log ferretdb "go build failed" "$CACHE/ferretdb/build.log"
  mv "$bin.tmp.$$" "$bin"
  find "$CACHE/ferretdb" -maxdepth 1 -name 'ferretdb-????????????????' ! -name "$(basename "$bin")" -delete
  ln -sfn "$(basename "$bin")" "$CACHE/ferretdb/ferretdb"
  log "ferretdb: built $(basename "$bin")"
}

install_kafka() {
  local key
  key=$(file_hash "$KAFKA_POM")
  if [[ -f "$KAFKA_LIB/.pom-hash" && "$(<"$KAFKA_LIB/.pom-hash")" == "$key" ]]; then
    log "kafka: cached $(find "$KAFKA_LIB" -name '*.jar' | wc -l) jars"
    return 0
  fi
  command -v mvn >/dev/null || die "kafka: 'mvn' not found (needed to fetch Kafka's jars from Maven Central)"
  command -v java >/dev/null || die "kafka: 'java' not found"
  mkdir -p "$CACHE/kafka"
  local tmp="$KAFKA_LIB.tmp.$$"
  rm -rf "$tmp"
  log "kafka: fetching jars with mvn dependency:copy-dependencies"
  mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies -DoutputDirectory="$tmp" \
    >"$CACHE/kafka/mvn.log" 2>&1 || die_with_log kafka "mvn dependency:copy-dependencies failed" "$CACHE/kafka/mvn.log"
  echo "$key" >"$tmp/.pom-hash"
  rm -rf "$KAFKA_LIB"
  mv "$tmp" "$KAFKA_LIB"
  log "kafka: $(find "$KAFKA_LIB" -name '*.jar' | wc -l) jars in $KAFKA_LIB"
}

# go_build_cached NAME SRCDIR PACKAGE: build PACKAGE in the Go module SRCDIR into $CACHE/kube/NAME-<hash of
# its go.mod and go.sum> unless that binary is there already; older builds of NAME are deleted.
go_build_cached() {
  local name=$1 src=$2 pkg=$3 bin
  bin="$CACHE/kube/$name-$(file_hash "$src/go.mod" "$src/go.sum")"
  if [[ -x "$bin" ]]; then log "$name: cached $(basename "$bin")"; return 0; fi
  command -v go >/dev/null || die "$name: 'go' not found (needed to build $pkg from the Go module proxy)"
  mkdir -p "$CACHE/kube"
  local t0=$SECONDS
  log "$name: building $pkg from $src (Go modules)"
  (cd "$src" && go build -trimpath -buildvcs=false -o "$bin.tmp.$$" "$pkg") >"$CACHE/kube/$name-build.log" 2>&1 ||
    die_with_log "$name" "go build $pkg failed" "$CACHE/kube/$name-build.log"
  mv "$bin.tmp.$$" "$bin"
  find "$CACHE/kube" -maxdepth 1 -name "$name-????????????????" ! -name "$(basename "$bin")" -delete
  log "$name: built $(basename "$bin") in $((SECONDS - t0)) s"
}

etcd_bin() { echo "$CACHE/kube/etcd-$(file_hash "$KUBE_SRC/etcd/go.mod" "$KUBE_SRC/etcd/go.sum")"; }
kube_apiserver_bin() {
  echo "$CACHE/kube/kube-apiserver-$(file_hash "$KUBE_SRC/apiserver/go.mod" "$KUBE_SRC/apiserver/go.sum")"
}

# The two Go builds run one after the other: side by side they would only fight over the two cores.
install_kube() {
  go_build_cached etcd "$KUBE_SRC/etcd" go.etcd.io/etcd/server/v3
  go_build_cached kube-apiserver "$KUBE_SRC/apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  command -v openssl >/dev/null || apt_install openssl
}

# The venv's name covers the pinned versions and the Python it was made with: a change of either makes a new one.
chdb_venv() {
  local python
  python=$(command -v python3) || die "chdb: 'python3' not found (needed to install chDB from PyPI)"
  echo "$CACHE/chdb/venv-$(echo "chdb-core==$CHDB_VERSION lz4==$CHDB_LZ4_VERSION $python $("$python" -V 2>&1)" |
    sha256sum | cut -c1-16)"
}

install_chdb() {
  [[ "$CHDB_ENABLED" != 0 ]] || return 0
  local venv t0=$SECONDS
  venv=$(chdb_venv)
  if [[ -f "$venv/.installed" ]]; then log "chdb: cached chdb-core $CHDB_VERSION in $(basename "$venv")"; return 0; fi
  mkdir -p "$CACHE/chdb"
  rm -rf "$venv" # a half-made venv of an interrupted install
  log "chdb: installing chdb-core $CHDB_VERSION (PyPI, ~180 MB) into $venv"
  {
    python3 -m venv "$venv" &&
      "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --only-binary=:all: --no-deps \
        "chdb-core==$CHDB_VERSION" "lz4==$CHDB_LZ4_VERSION" &&
      "$venv/bin/python" -c 'import chdb, lz4.block; print("chdb", chdb.__version__, "engine", chdb.engine_version)'
  } >"$CACHE/chdb/install.log" 2>&1 ||
    die_with_log chdb "installing chdb-core $CHDB_VERSION failed" "$CACHE/chdb/install.log"
  touch "$venv/.installed"
  find "$CACHE/chdb" -mindepth 1 -maxdepth 1 -name 'venv-*' ! -name "$(basename "$venv")" -exec rm -rf {} +
  log "chdb: installed chdb-core $CHDB_VERSION in $((SECONDS - t0)) s"
}

# apt, go build, mvn and pip are independent: run them side by side (the cold path is dominated by go build).
install_all() {
  mkdir -p "$CACHE"
  local pids=() names=(apt ferretdb kafka kube chdb) i rc=0
  install_system_packages & pids+=($!)
  install_ferretdb & pids+=($!)
  install_kafka & pids+=($!)
  install_kube & pids+=($!)
  install_chdb & pids+=($!)
  for i in "${!pids[@]}"; do wait "${pids[$i]}" || { log "install of ${names[$i]} failed"; rc=1; }; done
  ((rc == 0)) || exit 1
}

# ---------------------------------------------------------------- ClickHouse
CH_DIR="$STATE/clickhouse"
CH_PID="$STATE/clickhouse.pid"
CH_LOG="$STATE/clickhouse.log"

ch_ready() { [[ "$(curl -sf --max-time 2 "http://127.0.0.1:$CH_HTTP_PORT/" --data-binary 'SELECT 1')" == 1 ]]; }
ch_running() { pid_alive "$CH_PID" "$CH_DIR/config.xml"; }

clickhouse_write_config() {
  mkdir -p "$CH_DIR"/{data,tmp,user_files,log}
  cat >"$CH_DIR/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by scripts/deps.sh: a loopback-only ClickHouse for tests. -->
<yandex>
  <logger>
    <level>information</level>
    <log>$CH_DIR/log/server.log</log>
    <errorlog>$CH_DIR/log/server.err.log</errorlog>
    <size>100M</size>
    <count>1</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$CH_HTTP_PORT</http_port>
  <tcp_port>$CH_TCP_PORT</tcp_port>
  <path>$CH_DIR/data/</path>
  <tmp_path>$CH_DIR/tmp/</tmp_path>
  <user_files_path>$CH_DIR/user_files/</user_files_path>
  <users_config>$CH_DIR/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <max_concurrent_queries>100</max_concurrent_queries>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <mlock_executable>false</mlock_executable>
</yandex>
EOF
  cat >"$CH_DIR/users.xml" <<'EOF'
<?xml version="1.0"?>
<!-- Written by scripts/deps.sh. 18.16 needs LowCardinality enabled here (never from the client). -->
<yandex>
  <profiles>
    <default>
      <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries><errors>0</errors><result_rows>0</result_rows>
        <read_rows>0</read_rows><execution_time>0</execution_time>
      </interval>
    </default>
  </quotas>
</yandex>
EOF
}

# ClickHouse 18.16 runs as root without complaint (measured), so no user switch is needed.
start_clickhouse() {
  if ch_running && ch_ready; then log "clickhouse: already running (pid $(<"$CH_PID"))"; return 0; fi
  stop_pid clickhouse "$CH_PID" "$CH_DIR/config.xml"
  require_free_port clickhouse "$CH_HTTP_PORT"
  require_free_port clickhouse "$CH_TCP_PORT"
  rm -rf "$CH_DIR"
  clickhouse_write_config
  spawn "$CH_PID" "$CH_LOG" "$(ch_bin)" --config-file="$CH_DIR/config.xml"
  log "clickhouse: started pid $(<"$CH_PID")"
  CH_STARTED=1
}

wait_clickhouse() {
  [[ -n "${CH_STARTED:-}" ]] || return 0
  wait_until clickhouse "$CH_PID" "$CH_DIR/config.xml" "$CH_LOG $CH_DIR/log/server.err.log" ch_ready
  log "clickhouse: ready, $(curl -sf "http://127.0.0.1:$CH_HTTP_PORT/" --data-binary 'SELECT version()') on http://127.0.0.1:$CH_HTTP_PORT"
}

stop_clickhouse() { stop_pid clickhouse "$CH_PID" "$CH_DIR/config.xml" 20; }

# ---------------------------------------------------------------- PostgreSQL (FerretDB's backend)
# PostgreSQL refuses to run as root: run it as `postgres` (created by Debian's package) or a system
# user `traffoflex`. That user must reach the data dir; if the state dir is not reachable (e.g. a checkout
# under /root, mode 700), the data dir goes to /tmp instead.
pg_user() {
  if [[ $EUID -ne 0 ]]; then id -un; return; fi
  if id postgres >/dev/null 2>&1; then echo postgres; return; fi
  id traffoflex >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin traffoflex
  echo traffoflex
}
# (fd 9, the lock, is closed: the postmaster that pg_ctl leaves behind must not hold it.)
as_pg() { if [[ $EUID -eq 0 ]]; then (cd / && runuser -u "$(pg_user)" -- "$@") 9>&-; else "$@" 9>&-; fi; }

pg_datadir() {
  if [[ -f "$STATE/postgres.datadir" ]]; then cat "$STATE/postgres.datadir"; return; fi
  if as_pg test -x "$STATE" 2>/dev/null; then
    echo "$STATE/postgres"
  else
    echo "${TMPDIR:-/tmp}/traffoflex-postgres-$(echo "$STATE" | sha256sum | cut -c1-12)"
  fi
}

pg_ready() { as_pg "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }
pg_running() { as_pg "$(pg_bin)/pg_ctl" status -D "$(pg_datadir)/data" >/dev/null 2>&1; }

start_postgres() {
  local dir
  dir=$(pg_datadir)
  if pg_running && pg_ready; then log "postgres: already running"; return 0; fi
  stop_postgres
  require_free_port postgres "$PG_PORT"
  echo "$dir" >"$STATE/postgres.datadir"
  rm -rf "$dir"
  mkdir -p "$dir"
  chown "$(pg_user)" "$dir"
  # The log lives beside the data (the postgres user may not be able to write into $STATE); link it.
  local PG_LOG="$dir/postgres.log"
  ln -sfn "$PG_LOG" "$STATE/postgres.log"
  install -m 644 -o "$(pg_user)" /dev/null "$PG_LOG"
  as_pg "$(pg_bin)/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 \
    >>"$PG_LOG" 2>&1 || die_with_log postgres "initdb failed" "$PG_LOG"
  # shellcheck disable=SC2094 # pg_ctl's own messages go to the server log too (both append)
  as_pg "$(pg_bin)/pg_ctl" start -D "$dir/data" -l "$PG_LOG" -w -t "$TIMEOUT" \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    >>"$PG_LOG" 2>&1 || die_with_log postgres "pg_ctl start failed" "$PG_LOG"
  as_pg "$(pg_bin)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres ferretdb >>"$PG_LOG" 2>&1 ||
    die_with_log postgres "createdb ferretdb failed" "$PG_LOG"
  log "postgres: ready on 127.0.0.1:$PG_PORT (data $dir)"
  PG_STARTED=1
}

stop_postgres() {
  local dir
  dir=$(pg_datadir)
  [[ -f "$dir/data/postmaster.pid" ]] || return 0
  if pg_running; then
    as_pg "$(pg_bin)/pg_ctl" stop -D "$dir/data" -m fast -w -t 30 >/dev/null 2>&1 || log "postgres: pg_ctl stop failed"
    log "postgres: stopped"
  fi
}

# ---------------------------------------------------------------- FerretDB
FERRET_PID="$STATE/ferretdb.pid"
FERRET_LOG="$STATE/ferretdb.log"
FERRET_PATTERN="-listen-addr=127.0.0.1:$FERRET_PORT"

# A MongoDB `ping` over OP_MSG; FerretDB's ping also checks its PostgreSQL backend.
ferret_ping() {
  if ! command -v python3 >/dev/null; then port_open "$FERRET_PORT"; return; fi
  python3 - "$FERRET_PORT" <<'PY'
import socket, struct, sys
def cstr(s): return s.encode() + b"\0"
body = b"\x10" + cstr("ping") + struct.pack("<i", 1) + b"\x02" + cstr("$db") + struct.pack("<i", 6) + cstr("admin")
doc = struct.pack("<i", len(body) + 5) + body + b"\0"
# OP_MSG (opCode 2013): header, flagBits 0, one kind-0 section holding the command document.
msg = struct.pack("<iiii", 16 + 4 + 1 + len(doc), 1, 0, 2013) + struct.pack("<I", 0) + b"\0" + doc
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
s.sendall(msg)
buf = b""
while len(buf) < 4 or len(buf) < struct.unpack("<i", buf[:4])[0]:
    chunk = s.recv(65536)
    if not chunk: sys.exit(1)
    buf += chunk
reply = buf[21:]  # header 16 + flagBits 4 + section kind 1
i = reply.find(b"\x01ok\0")
sys.exit(0 if i >= 0 and struct.unpack("<d", reply[i + 4:i + 12])[0] == 1.0 else 1)
PY
}
ferret_running() { pid_alive "$FERRET_PID" "$FERRET_PATTERN"; }

start_ferretdb() {
  if [[ -z "${PG_STARTED:-}" ]] && ferret_running && ferret_ping; then
    log "ferretdb: already running (pid $(<"$FERRET_PID"))"; return 0
  fi
  stop_ferretdb
  require_free_port ferretdb "$FERRET_PORT"
  spawn "$FERRET_PID" "$FERRET_LOG" "$(ferretdb_bin)" "$FERRET_PATTERN" \
    -postgresql-url="postgres://postgres@127.0.0.1:$PG_PORT/ferretdb" -shutdown-timeout=3s
  log "ferretdb: started pid $(<"$FERRET_PID")"
  FERRET_STARTED=1
}

wait_ferretdb() {
  [[ -n "${FERRET_STARTED:-}" ]] || return 0
  wait_until ferretdb "$FERRET_PID" "$FERRET_PATTERN" "$FERRET_LOG" ferret_ping
  log "ferretdb: ready (ping ok) on mongodb://127.0.0.1:$FERRET_PORT/"
}

# FerretDB lingers after SIGTERM while clients stay connected; our main exits after -shutdown-timeout,
# and stop_pid SIGKILLs after 10 s in any case.
stop_ferretdb() { stop_pid ferretdb "$FERRET_PID" "$FERRET_PATTERN" 10; }

# ---------------------------------------------------------------- Kafka
KAFKA_DIR="$STATE/kafka"
KAFKA_PID="$STATE/kafka.pid"
KAFKA_LOG="$STATE/kafka.log"

kafka_ready() { port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$KAFKA_LOG"; }
kafka_running() { pid_alive "$KAFKA_PID" "$KAFKA_DIR/server.properties"; }

kafka_write_config() {
  mkdir -p "$KAFKA_DIR/data"
  cat >"$KAFKA_DIR/server.properties" <<EOF
# Written by scripts/deps.sh: a single-node KRaft Kafka (broker+controller) on loopback for tests.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
}

start_kafka() {
  if kafka_running && kafka_ready; then log "kafka: already running (pid $(<"$KAFKA_PID"))"; return 0; fi
  stop_kafka
  require_free_port kafka "$KAFKA_PORT"
  require_free_port kafka "$KAFKA_CONTROLLER_PORT"
  rm -rf "$KAFKA_DIR"
  kafka_write_config
  local cluster_id java_opts
  cluster_id=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')  # may start with "-": pass it as --cluster-id=
  java_opts="-Xms128m -Xmx$KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true"
  java_opts+=" -Dorg.slf4j.simpleLogger.showDateTime=true -Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS"
  # Format and start in one detached process so the slower JVM start overlaps the other services'.
  # (The short-lived format JVM runs with C1 only and serial GC: ~1 s faster.)
  # shellcheck disable=SC2016
  spawn "$KAFKA_PID" "$KAFKA_LOG" bash -c '
    java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx256m -cp "$1/*" kafka.tools.StorageTool format --cluster-id="$2" -c "$3" --standalone || exit 1
    exec java $4 -cp "$1/*" kafka.Kafka "$3"' kafka "$KAFKA_LIB" "$cluster_id" "$KAFKA_DIR/server.properties" "$java_opts"
  log "kafka: formatting and starting (pid $(<"$KAFKA_PID"))"
  KAFKA_STARTED=1
}

wait_kafka() {
  [[ -n "${KAFKA_STARTED:-}" ]] || return 0
  wait_until kafka "$KAFKA_PID" "$KAFKA_DIR/server.properties" "$KAFKA_LOG" kafka_ready
  log "kafka: ready on 127.0.0.1:$KAFKA_PORT"
}

stop_kafka() { stop_pid kafka "$KAFKA_PID" "$KAFKA_DIR/server.properties" 30; }

# A Kafka broker of its own, in the foreground, for tests that stop and start a broker: the first run formats
# DIR, later runs start on what DIR holds. Needs `install` (or `start`) first for the jars.
cmd_kafka_broker() {
  [[ $# -eq 3 ]] || die "usage: $0 kafka-broker DIR PORT CONTROLLER_PORT"
  local KAFKA_DIR="$1" KAFKA_PORT="$2" KAFKA_CONTROLLER_PORT="$3"
  compgen -G "$KAFKA_LIB/*.jar" >/dev/null || die "kafka: not installed in $KAFKA_LIB; run scripts/deps.sh install"
  kafka_write_config
  if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
    local cluster_id
    cluster_id=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx256m -cp "$KAFKA_LIB/*" kafka.tools.StorageTool format \
      --cluster-id="$cluster_id" -c "$KAFKA_DIR/server.properties" --standalone >"$KAFKA_DIR/format.log" 2>&1 \
      || die_with_log kafka "formatting $KAFKA_DIR failed" "$KAFKA_DIR/format.log"
  fi
  exec java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_DIR/server.properties"
}

# ---------------------------------------------------------------- etcd (the API server's storage)
ETCD_DIR="$STATE/etcd"
ETCD_PID="$STATE/etcd.pid"
ETCD_LOG="$STATE/etcd.log"
ETCD_PATTERN="--data-dir=$ETCD_DIR/data"

etcd_ready() { curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
etcd_running() { pid_alive "$ETCD_PID" "$ETCD_PATTERN"; }

start_etcd() {
  if etcd_running && etcd_ready; then log "etcd: already running (pid $(<"$ETCD_PID"))"; return 0; fi
  stop_etcd
  require_free_port etcd "$ETCD_PORT"
  require_free_port etcd "$ETCD_PEER_PORT"
  rm -rf "$ETCD_DIR"
  mkdir -p "$ETCD_DIR"
  local peer="http://127.0.0.1:$ETCD_PEER_PORT" client="http://127.0.0.1:$ETCD_PORT"
  spawn "$ETCD_PID" "$ETCD_LOG" "$(etcd_bin)" --name=traffoflex "$ETCD_PATTERN" \
    --listen-client-urls="$client" --advertise-client-urls="$client" \
    --listen-peer-urls="$peer" --initial-advertise-peer-urls="$peer" --initial-cluster="traffoflex=$peer" \
    --unsafe-no-fsync --log-level=warn
  log "etcd: started pid $(<"$ETCD_PID")"
  ETCD_STARTED=1
}

wait_etcd() {
  [[ -n "${ETCD_STARTED:-}" ]] || return 0
  wait_until etcd "$ETCD_PID" "$ETCD_PATTERN" "$ETCD_LOG" etcd_ready
  log "etcd: ready on http://127.0.0.1:$ETCD_PORT"
}

stop_etcd() { stop_pid etcd "$ETCD_PID" "$ETCD_PATTERN" 10; }

# ---------------------------------------------------------------- kube-apiserver
# The API server alone, as controller-runtime's envtest runs it: no controller-manager, scheduler or kubelet,
# so no Pods, ReplicaSets or filled EndpointSlices appear by themselves. Clients authenticate with a bearer
# token in group system:masters; RBAC is on, so rules for other users can be tested too.
KUBE_DIR="$STATE/kube"
KUBE_PID="$STATE/kube-apiserver.pid"
KUBE_LOG="$STATE/kube-apiserver.log"
KUBE_PATTERN="--cert-dir=$KUBE_DIR/certs"
KUBECONFIG_FILE="$STATE/kubeconfig"

kube_ready() {
  [[ -s "$KUBE_DIR/token" ]] &&
    [[ "$(curl -sk --max-time 2 -H "Authorization: Bearer $(<"$KUBE_DIR/token")" \
      "https://127.0.0.1:$KUBE_PORT/readyz")" == ok ]]
}
kube_running() { pid_alive "$KUBE_PID" "$KUBE_PATTERN"; }

start_kube_apiserver() {
  if [[ -z "${ETCD_STARTED:-}" ]] && kube_running && kube_ready && [[ -s "$KUBECONFIG_FILE" ]]; then
    log "kube-apiserver: already running (pid $(<"$KUBE_PID"))"; return 0
  fi
  stop_kube_apiserver
  require_free_port kube-apiserver "$KUBE_PORT"
  rm -rf "$KUBE_DIR" "$KUBECONFIG_FILE"
  mkdir -p "$KUBE_DIR/certs"
  openssl genrsa -out "$KUBE_DIR/service-account.key" 2048 >/dev/null 2>&1 ||
    die "kube-apiserver: openssl could not make the service-account key"
  openssl rand -hex 24 >"$KUBE_DIR/token"
  chmod 600 "$KUBE_DIR/token" "$KUBE_DIR/service-account.key"
  # token,user,uid,"group,..."
  echo "$(<"$KUBE_DIR/token"),traffoflex-admin,traffoflex-admin,\"system:masters\"" >"$KUBE_DIR/tokens.csv"
  spawn "$KUBE_PID" "$KUBE_LOG" "$(kube_apiserver_bin)" "$KUBE_PATTERN" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --secure-port="$KUBE_PORT" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$KUBE_DIR/service-account.key" \
    --service-account-signing-key-file="$KUBE_DIR/service-account.key" \
    --token-auth-file="$KUBE_DIR/tokens.csv" --authorization-mode=RBAC \
    --service-cluster-ip-range=10.96.0.0/16 --disable-admission-plugins=ServiceAccount
  log "kube-apiserver: started pid $(<"$KUBE_PID")"
  KUBE_STARTED=1
}

# The kubeconfig trusts the server's self-signed certificate (made at start in the cert dir) as its CA.
write_kubeconfig() {
  local ca
  ca=$(base64 -w0 <"$KUBE_DIR/certs/apiserver.crt") || die "kube-apiserver: no certificate in $KUBE_DIR/certs"
  cat >"$KUBECONFIG_FILE.tmp" <<KUBECONFIG
# Written by scripts/deps.sh: the test API server on loopback (user traffoflex-admin, group system:masters).
apiVersion: v1
kind: Config
clusters:
- name: traffoflex-test
  cluster:
    server: https://127.0.0.1:$KUBE_PORT
    certificate-authority-data: $ca
users:
- name: traffoflex-admin
  user:
    token: $(<"$KUBE_DIR/token")
contexts:
- name: traffoflex-test
  context:
    cluster: traffoflex-test
    user: traffoflex-admin
current-context: traffoflex-test
KUBECONFIG
  chmod 600 "$KUBECONFIG_FILE.tmp"
  mv "$KUBECONFIG_FILE.tmp" "$KUBECONFIG_FILE"
}

wait_kube_apiserver() {
  [[ -n "${KUBE_STARTED:-}" ]] || return 0
  wait_until kube-apiserver "$KUBE_PID" "$KUBE_PATTERN" "$KUBE_LOG" kube_ready
  write_kubeconfig
  log "kube-apiserver: ready on https://127.0.0.1:$KUBE_PORT (kubeconfig $KUBECONFIG_FILE)"
}

stop_kube_apiserver() {
  stop_pid kube-apiserver "$KUBE_PID" "$KUBE_PATTERN" 15
  rm -f "$KUBECONFIG_FILE"
}

# ---------------------------------------------------------------- current ClickHouse (chDB behind a shim)
# chDB is ClickHouse's engine in-process, with no server of its own; scripts/chdb-shim.py answers ClickHouse's
# HTTP interface in front of it, enough for the `clickhouse` crate, so the analytics SQL is tested on a current
# release besides 18.16. Its data lives in $CHDB_DIR/data.
CHDB_DIR="$STATE/chdb"
CHDB_PID="$STATE/chdb.pid"
CHDB_LOG="$STATE/chdb.log"
CHDB_PATTERN="--data=$CHDB_DIR/data"

chdb_ready() { [[ "$(curl -sf --max-time 2 "http://127.0.0.1:$CHDB_PORT/" --data-binary 'SELECT 1')" == 1 ]]; }
chdb_running() { pid_alive "$CHDB_PID" "$CHDB_PATTERN"; }

start_chdb() {
  [[ "$CHDB_ENABLED" != 0 ]] || return 0
  if chdb_running && chdb_ready; then log "chdb: already running (pid $(<"$CHDB_PID"))"; return 0; fi
  stop_chdb
  require_free_port chdb "$CHDB_PORT"
  rm -rf "$CHDB_DIR"
  mkdir -p "$CHDB_DIR"
  spawn "$CHDB_PID" "$CHDB_LOG" "$(chdb_venv)/bin/python" "$REPO/scripts/chdb-shim.py" "$CHDB_PATTERN" \
    --port="$CHDB_PORT"
  log "chdb: started pid $(<"$CHDB_PID")"
  CHDB_STARTED=1
}

wait_chdb() {
  [[ -n "${CHDB_STARTED:-}" ]] || return 0
  wait_until chdb "$CHDB_PID" "$CHDB_PATTERN" "$CHDB_LOG" chdb_ready
  local version
  version=$(curl -sf "http://127.0.0.1:$CHDB_PORT/" --data-binary 'SELECT version()')
  log "chdb: ready, ClickHouse $version on http://127.0.0.1:$CHDB_PORT"
}

stop_chdb() { stop_pid chdb "$CHDB_PID" "$CHDB_PATTERN" 10; }

# ---------------------------------------------------------------- commands
env_lines() {
  echo "export TRAFFOFLEX_TEST_MONGO_URI=mongodb://127.0.0.1:$FERRET_PORT/"
  echo "export TRAFFOFLEX_TEST_CLICKHOUSE_URL=http://127.0.0.1:$CH_HTTP_PORT"
  echo "export TRAFFOFLEX_TEST_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
  echo "export TRAFFOFLEX_TEST_KUBECONFIG=$KUBECONFIG_FILE"
  if [[ "$CHDB_ENABLED" != 0 ]]; then
    echo "export TRAFFOFLEX_TEST_CLICKHOUSE_CURRENT_URL=http://127.0.0.1:$CHDB_PORT"
  fi
}

cmd_start() {
  take_lock
  install_all
  # Kafka's JVM is the slowest: launch it first, then the others, then wait for each to answer.
  start_kafka
  start_etcd
  start_clickhouse
  start_chdb
  start_postgres
  start_ferretdb
  wait_etcd
  start_kube_apiserver # needs etcd answering
  wait_clickhouse
  wait_chdb
  wait_ferretdb
  wait_kube_apiserver
  wait_kafka
  env_lines >"$STATE/env"
  log "all services up; env in $STATE/env"
  env_lines
}

cmd_stop() {
  [[ -d "$STATE" ]] || { log "nothing to stop ($STATE does not exist)"; return 0; }
  take_lock
  stop_kafka
  stop_kube_apiserver
  stop_etcd
  stop_ferretdb
  stop_postgres
  stop_clickhouse
  stop_chdb
  log "stopped (caches kept in $CACHE)"
}

status_clickhouse() { ch_running && ch_ready; }
status_postgres() { [[ -d "$STATE" ]] && pg_running && pg_ready; }
status_ferretdb() { ferret_running && ferret_ping; }
status_kafka() { kafka_running && kafka_ready; }
status_etcd() { etcd_running && etcd_ready; }
status_kube_apiserver() { kube_running && kube_ready; }
status_chdb() { chdb_running && chdb_ready; }

cmd_status() {
  local rc=0 svc
  declare -A addr=(
    [clickhouse]="http://127.0.0.1:$CH_HTTP_PORT (native 127.0.0.1:$CH_TCP_PORT)"
    [postgres]="127.0.0.1:$PG_PORT"
    [ferretdb]="mongodb://127.0.0.1:$FERRET_PORT/"
    [kafka]="127.0.0.1:$KAFKA_PORT (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT)"
    [etcd]="http://127.0.0.1:$ETCD_PORT (peer 127.0.0.1:$ETCD_PEER_PORT)"
    [kube_apiserver]="https://127.0.0.1:$KUBE_PORT (kubeconfig $KUBECONFIG_FILE)"
    [chdb]="http://127.0.0.1:$CHDB_PORT (current ClickHouse)"
  )
  local services=(clickhouse postgres ferretdb kafka etcd kube_apiserver)
  [[ "$CHDB_ENABLED" == 0 ]] || services+=(chdb)
  for svc in "${services[@]}"; do
    if "status_$svc" >/dev/null 2>&1; then
      printf '%-14s running  %s\n' "${svc//_/-}" "${addr[$svc]}"
    else
      printf '%-14s stopped  %s\n' "${svc//_/-}" "${addr[$svc]}"
      rc=1
    fi
  done
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status) cmd_status ;;
  env) env_lines ;;
  install) install_all; log "installed" ;;
  kafka-broker) shift; cmd_kafka_broker "$@" ;;
  *) echo "usage: $0 start|stop|restart|status|env|install|kafka-broker DIR PORT CONTROLLER_PORT" >&2; exit 2 ;;
esac
