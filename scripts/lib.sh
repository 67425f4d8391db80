# Shared by scripts/demo, scripts/test and scripts/bench: finds, or installs
# and starts, what Herald needs on a machine that has the Rust toolchain and
# Python (and installs Java and Maven from Debian's packages when missing, for
# Apache Kafka). Source it; it defines functions and paths, and starts nothing.
#
# Paths (override with the environment):
#   HERALD_CACHE  binaries and the Python venv, kept across runs (~/.cache/herald)
#   HERALD_STATE  broker data, logs and pid files of this checkout (.local/)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERALD_CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
HERALD_STATE=${HERALD_STATE:-$ROOT/.local}
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

# ensure_cargo_fuzz: cargo fuzz (from crates.io) and a toolchain that takes
# its flags: nightly when rustup has it, else the stable one with
# RUSTC_BOOTSTRAP=1. Sets FUZZ_TOOLCHAIN to the `+toolchain` argument (or
# nothing).
ensure_cargo_fuzz() {
  if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --version 0.13.2 --locked --quiet
  fi
  if cargo +nightly --version >/dev/null 2>&1; then
    FUZZ_TOOLCHAIN=(+nightly)
  else
    FUZZ_TOOLCHAIN=()
    export RUSTC_BOOTSTRAP=1
  fi
}

# ensure_java: a Java 17+ runtime for the Kafka broker, and Maven to fetch it.
ensure_java() {
  local v
  v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  if [ -z "$v" ] || [ "$v" -lt 17 ]; then apt_install openjdk-17-jre-headless; fi
  command -v mvn >/dev/null || apt_install maven
}

# ensure_kafka: Apache Kafka's jars (scripts/kafka/pom.xml names the
# version), fetched from Maven Central once per machine into
# $HERALD_CACHE/kafka-VERSION/libs (about 55 MB).
# HERALD_KAFKA_VERSION runs another release (the integration tests have
# passed on 3.9.1, the compose file's, but for the two of KIP-848, which
# needs 4.0: README says what is tested on which release).
KAFKA_VERSION=${HERALD_KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/scripts/kafka/pom.xml")}
KAFKA_LIBS=$HERALD_CACHE/kafka-$KAFKA_VERSION/libs
ensure_kafka() {
  [ -f "$KAFKA_LIBS/.complete" ] && return
  ensure_java
  log "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $HERALD_CACHE (once per machine)"
  rm -rf "$KAFKA_LIBS"
  mvn -q -B -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies -Dkafka.version="$KAFKA_VERSION" \
    -DoutputDirectory="$KAFKA_LIBS" >&2 \
    || die "fetching Apache Kafka $KAFKA_VERSION with Maven failed"
  touch "$KAFKA_LIBS/.complete"
}

# kafka_java ARGS...: runs a class from Kafka's jars.
kafka_java() {
  java -Djava.awt.headless=true -cp "$KAFKA_LIBS/*" "$@"
}

# kafka_cluster_id: a cluster id as Kafka makes them (a random UUID,
# base64url), never starting with "-" (the format tool would read it as an
# option).
kafka_cluster_id() {
  python3 -c 'import base64, uuid
while True:
    i = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not i.startswith("-"): break
print(i)'
}

# kafka_node NAME NODE_ID PORT VOTERS REPLICAS CLUSTER_ID [EXTRA [FORMAT_ARGS]]: prepares one
# KRaft node (broker and controller in one process) in $HERALD_STATE/NAME/:
# its server.properties, its data formatted when new, and an executable
# NAME/run that starts it in the foreground and writes its pid to
# $HERALD_STATE/NAME.pid (tests run it again to restart a node they killed).
# The controller listens on PORT+1000; VOTERS is the quorum
# (id@host:port,...); REPLICAS is the replication factor of every topic
# (min.insync.replicas one less, at least 1). EXTRA are more properties
# (later ones win), FORMAT_ARGS more arguments to the storage format (SCRAM
# credentials).
kafka_node() {
  local name=$1 id=$2 port=$3 voters=$4 replicas=$5 cluster=$6 extra=${7:-} format_args=()
  [ -n "${8:-}" ] && read -r -a format_args <<<"$8"
  local dir=$HERALD_STATE/$1 cport=$(($3 + 1000)) isr=$(($5 > 1 ? $5 - 1 : 1))
  if port_open 127.0.0.1 "$port" || port_open 127.0.0.1 "$cport"; then
    die "port $port or $cport is taken (a broker left running? its pid file is $HERALD_STATE/$name.pid); \
stop it, or choose other ports: HERALD_TEST_BROKER_PORT, HERALD_TEST_CLUSTER_PORT, HERALD_DEMO_BROKER_PORT, HERALD_BENCH_BROKER_PORT"
  fi
  mkdir -p "$dir"
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=$replicas
min.insync.replicas=$isr
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$isr
# A new group's first members are assigned at once (default 3 s, for
# groups of many members starting together).
group.initial.rebalance.delay.ms=0
# Retention is enforced within seconds (default: checked every 5 minutes),
# so that tests can watch records expire.
log.retention.check.interval.ms=1000
$extra
PROPS
  if [ ! -f "$dir/data/meta.properties" ]; then
    kafka_java -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.xml" -Dkafka.logs.dir="$dir" \
      kafka.tools.StorageTool format --cluster-id="$cluster" -c "$dir/server.properties" "${format_args[@]}" >"$dir/format.log" 2>&1 \
      || { cat "$dir/format.log" >&2; die "formatting the Kafka node $name failed"; }
  fi
  cat >"$dir/run" <<RUN
#!/usr/bin/env bash
# Starts the Kafka node $name in the foreground (written by scripts/lib.sh).
echo \$\$ >"$HERALD_STATE/$name.pid"
exec java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \\
  -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.xml" -Dkafka.logs.dir="$dir" \\
  -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" >>"$dir/stdout.log" 2>&1
RUN
  chmod +x "$dir/run"
}

# launch_kafka_node NAME: starts a node prepared by kafka_node, in the
# background (its log: $HERALD_STATE/NAME/server.log).
launch_kafka_node() {
  local dir=$HERALD_STATE/$1
  : >"$dir/server.log"
  "$dir/run" &
}

# wait_kafka_node NAME: waits until a launched node has started.
wait_kafka_node() {
  local dir=$HERALD_STATE/$1 pidfile=$HERALD_STATE/$1.pid deadline=$((SECONDS + 120))
  until grep -q 'Kafka Server started' "$dir/server.log" 2>/dev/null; do
    # A node that exited will not start: say why at once.
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      grep -E 'ERROR|Exception' "$dir/server.log" | head -5 >&2
      die "Apache Kafka ($1) exited while starting; see $dir/server.log"
    fi
    [ $SECONDS -lt $deadline ] || die "Apache Kafka ($1) did not start within 120s; see $dir/server.log"
    sleep 0.2
  done
}

# start_kafka NAME PORT [fresh]: a one-node Apache Kafka (KRaft: broker and
# controller in one process) on 127.0.0.1:PORT, its controller on PORT+1000,
# data and log in $HERALD_STATE/NAME/ (server.log). With "fresh", earlier
# data is deleted first; otherwise a node formatted before keeps its topics.
start_kafka() {
  local name=$1 port=$2 fresh=${3:-}
  ensure_kafka
  [ "$fresh" = fresh ] && rm -rf "${HERALD_STATE:?}/$name"
  kafka_node "$name" 1 "$port" "1@127.0.0.1:$((port + 1000))" 1 "$(kafka_cluster_id)"
  log "starting Apache Kafka $KAFKA_VERSION ($name) on 127.0.0.1:$port (log: $HERALD_STATE/$name/server.log)"
  launch_kafka_node "$name"
  wait_kafka_node "$name"
}

# make_test_ca DIR: a test certificate authority and a broker certificate it
# signed for 127.0.0.1 and localhost, made with the JDK's keytool, in DIR:
# ca.pem (what clients trust), broker.p12 (the broker's key and chain, store
# password "changeit"), and other-ca.pem, a CA that signed nothing of it.
make_test_ca() {
  local dir=$1 pass=changeit
  mkdir -p "$dir"
  rm -f "$dir"/*.p12 "$dir"/*.pem
  kt() { keytool "$@" -storepass "$pass" -storetype PKCS12 >/dev/null 2>&1; }
  kt -genkeypair -alias ca -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=Herald test CA" \
    -ext bc:c -keystore "$dir/ca.p12"
  kt -genkeypair -alias ca -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=Another test CA" \
    -ext bc:c -keystore "$dir/other-ca.p12"
  keytool -exportcert -rfc -alias ca -keystore "$dir/ca.p12" -storepass "$pass" >"$dir/ca.pem" 2>/dev/null
  keytool -exportcert -rfc -alias ca -keystore "$dir/other-ca.p12" -storepass "$pass" >"$dir/other-ca.pem" 2>/dev/null
  kt -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=localhost" \
    -ext "SAN=ip:127.0.0.1,dns:localhost" -keystore "$dir/broker.p12"
  keytool -certreq -alias broker -keystore "$dir/broker.p12" -storepass "$pass" 2>/dev/null \
    | keytool -gencert -alias ca -keystore "$dir/ca.p12" -storepass "$pass" -rfc -validity 3650 \
      -ext "SAN=ip:127.0.0.1,dns:localhost" >"$dir/broker.pem" 2>/dev/null
  kt -importcert -noprompt -alias ca -file "$dir/ca.pem" -keystore "$dir/broker.p12"
  kt -importcert -alias broker -file "$dir/broker.pem" -keystore "$dir/broker.p12"
  [ -s "$dir/ca.pem" ] && [ -s "$dir/other-ca.pem" ] && [ -s "$dir/broker.pem" ] \
    || die "making the test certificates in $dir failed"
}

# start_secure_kafka NAME PORT: a fresh one-node Apache Kafka whose clients
# must authenticate and are authorized by ACLs (StandardAuthorizer, nothing
# allowed without an ACL), with a test CA of its own (make_test_ca, in
# $HERALD_STATE/NAME/tls). Listeners on 127.0.0.1:
#   PORT    PLAINTEXT, a super user: for tests to set up topics and ACLs
#   PORT+1  SASL_PLAINTEXT (SCRAM-SHA-512)
#   PORT+2  SSL (TLS, no client certificate)
#   PORT+3  SASL_SSL (SCRAM-SHA-512 over TLS)
# SCRAM users: herald / herald-password (no ACLs until a test grants them).
start_secure_kafka() {
  local name=$1 port=$2 dir=$HERALD_STATE/$1
  ensure_kafka
  rm -rf "${HERALD_STATE:?}/$name"
  make_test_ca "$dir/tls"
  local extra
  extra="listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$((port + 1)),SSL://127.0.0.1:$((port + 2)),SASL_SSL://127.0.0.1:$((port + 3)),CONTROLLER://127.0.0.1:$((port + 1000))
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$((port + 1)),SSL://127.0.0.1:$((port + 2)),SASL_SSL://127.0.0.1:$((port + 3))
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$dir/tls/broker.p12
ssl.keystore.password=changeit
ssl.key.password=changeit
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
# The plaintext listener and the controller (loopback only) are trusted.
super.users=User:ANONYMOUS"
  kafka_node "$name" 1 "$port" "1@127.0.0.1:$((port + 1000))" 1 "$(kafka_cluster_id)" "$extra" \
    "--add-scram SCRAM-SHA-512=[name=herald,password=herald-password]"
  log "starting a secured Apache Kafka $KAFKA_VERSION ($name) on 127.0.0.1:$port-$((port + 3)) (log: $dir/server.log)"
  launch_kafka_node "$name"
  wait_kafka_node "$name"
}

# start_kafka_cluster NAME PORT: a fresh three-node Apache Kafka cluster
# (KRaft, each node a broker and a controller) on 127.0.0.1:PORT, PORT+1 and
# PORT+2 (controllers 1000 above), every topic replicated three times with
# min.insync.replicas 2. Node I (1-3, its node.id) is NAME-I: data and log in
# $HERALD_STATE/NAME-I/, pid in $HERALD_STATE/NAME-I.pid. Writes
# $HERALD_STATE/NAME.nodes, a line "ID HOST:PORT DIR" per node, which the
# cluster tests read to find, kill and restart nodes. The ports (the
# controllers' too) must lie below the kernel's ephemeral range, from which
# outgoing connections take their local ports: a node restarted by a test
# could otherwise find its port held by one (seen: "Address already in use"
# at a restart, the node gone for the rest of the run).
start_kafka_cluster() {
  local name=$1 port=$2 cluster voters="" i low
  ensure_kafka
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
  [ $((port + 1002)) -lt "$low" ] \
    || die "cluster ports $port-$((port + 2)) and $((port + 1000))-$((port + 1002)) must be below $low, where \
the ephemeral range (/proc/sys/net/ipv4/ip_local_port_range) begins"
  cluster=$(kafka_cluster_id)
  for i in 1 2 3; do voters+="${voters:+,}$i@127.0.0.1:$((port + i - 1 + 1000))"; done
  : >"$HERALD_STATE/$name.nodes"
  for i in 1 2 3; do
    rm -rf "${HERALD_STATE:?}/$name-$i"
    kafka_node "$name-$i" "$i" "$((port + i - 1))" "$voters" 3 "$cluster"
    echo "$i 127.0.0.1:$((port + i - 1)) $HERALD_STATE/$name-$i" >>"$HERALD_STATE/$name.nodes"
  done
  log "starting a three-node Apache Kafka $KAFKA_VERSION cluster ($name) on 127.0.0.1:$port-$((port + 2)) (logs: $HERALD_STATE/$name-*/server.log)"
  for i in 1 2 3; do launch_kafka_node "$name-$i"; done
  for i in 1 2 3; do wait_kafka_node "$name-$i"; done
}

# stop_kafka_cluster NAME: stops the nodes of start_kafka_cluster NAME.
stop_kafka_cluster() {
  local i
  for i in 1 2 3; do stop_pidfile "$1-$i"; done
}

# start_broker NAME PORT [fresh]: the broker the scripts use, Apache Kafka.
start_broker() {
  start_kafka "$@"
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

# ensure_node_standardwebhooks: Node.js and the Standard Webhooks library
# for it (npm standardwebhooks), with which the tests verify Herald's
# signatures as a receiver in JavaScript would; the package in
# $HERALD_CACHE/node (Node.js and npm from Debian's packages when missing).
STANDARDWEBHOOKS_JS=$HERALD_CACHE/node/node_modules/standardwebhooks
ensure_node_standardwebhooks() {
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
  grep -q '"version": "1.3.0"' "$STANDARDWEBHOOKS_JS/package.json" 2>/dev/null && return
  log "installing the npm package standardwebhooks 1.3.0 into $HERALD_CACHE/node"
  npm install --prefix "$HERALD_CACHE/node" --no-audit --no-fund --silent "standardwebhooks@1.3.0" >&2 \
    || die "npm could not install standardwebhooks"
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
