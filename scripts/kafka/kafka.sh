#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, no ZooKeeper) for emopipe's integration tests.
#
#   kafka.sh install                 resolve the broker jars from Maven Central (idempotent)
#   kafka.sh start  [options]        format (first time only) + start in the background
#   kafka.sh stop   [--dir D] [--keep] [--kill] [--timeout S]
#   kafka.sh status [--dir D]
#
# start options:
#   --port N             PLAINTEXT port on 127.0.0.1 (default 9092; 0 = pick a free one;
#                        on a restart of an existing --dir the stored port is reused)
#   --controller-port N  CONTROLLER port (default PORT+1, or a free one if that is taken)
#   --dir D              data/state dir; a formatted D is restarted without formatting.
#                        Without --dir a temp dir is made and removed again by `stop`.
#   --partitions N       num.partitions for auto-created topics (default 1)
#   --sasl-port N        also a SASL_PLAINTEXT listener on 127.0.0.1:N (0 = a free port;
#                        a restart reuses the stored one) with SCRAM-SHA-256,
#                        SCRAM-SHA-512 and PLAIN enabled
#   --sasl-user U:P      the user of that listener: a SCRAM credential (both SHA-256 and
#                        SHA-512) made at format time (kafka-storage format --add-scram),
#                        and the PLAIN login; needs --sasl-port, and a fresh --dir
#   --ssl-port N         also an SSL (TLS) listener on 127.0.0.1:N (0 = a free port; a
#                        restart reuses the stored one). Its certificate is made at the
#                        first start with keytool (EC P-256, signed by a CA made with it,
#                        subject alternative names 127.0.0.1 and localhost); the CA that
#                        clients verify it with is written to D/tls/ca.pem
#   --set key=value      extra server.properties line (repeatable)
#   --timeout S          seconds to wait for the broker (default 120)
#   --watch-pid PID      stop the broker when PID exits (tests pass their own pid so a
#                        killed `go test` does not leave a broker behind)
#
# env: KAFKA_VERSION (default 4.4.0; 3.9.x also works), KAFKA_HOME (jar cache, default
#      ~/.cache/emopipe/kafka-$KAFKA_VERSION), KAFKA_HEAP_OPTS (default -Xms256m -Xmx1g),
#      KAFKA_JVM_OPTS (more JVM options, e.g. -XX:TieredStopAtLevel=1 for benchmarks),
#      KAFKA_LOG_LEVEL (root log level, default WARN), MVN (default mvn).
#
# Prints KAFKA_BROKERS=127.0.0.1:PORT on stdout once the broker serves requests (and
# KAFKA_SASL_BROKERS=127.0.0.1:SASL_PORT with --sasl-port, KAFKA_SSL_BROKERS=127.0.0.1:SSL_PORT
# and KAFKA_SSL_CA=D/tls/ca.pem with --ssl-port).
# Files in the data dir: server.properties, broker.env, kafka.pid, broker.log, data/.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
SCALA_VERSION="${KAFKA_SCALA_VERSION:-2.13}"
LOG4J_VERSION="${KAFKA_LOG4J_VERSION:-2.25.5}"
KAFKA_HOME="${KAFKA_HOME:-$HOME/.cache/emopipe/kafka-$KAFKA_VERSION}"
LIBS="$KAFKA_HOME/libs"
LAST_DIR_FILE="${KAFKA_LAST_DIR_FILE:-$HOME/.cache/emopipe/kafka-last-dir}"
MVN="${MVN:-mvn}"
JAVA="${JAVA:-java}"
CREATED_MARK=".created-by-kafka-sh"

log() { echo "kafka.sh: $*" >&2; }
die() { echo "kafka.sh: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- install
install_libs() {
  [[ -f "$LIBS/.complete" ]] && return 0
  command -v "$MVN" >/dev/null || die "maven ($MVN) not found; apt-get install maven"
  command -v "$JAVA" >/dev/null || die "java not found; Kafka needs Java 17+"
  mkdir -p "$KAFKA_HOME"
  exec 9>"$KAFKA_HOME/.install.lock"
  flock 9                      # parallel `go test` packages may install at once
  if [[ -f "$LIBS/.complete" ]]; then exec 9>&-; return 0; fi
  local t0=$SECONDS work
  work="$(mktemp -d "$KAFKA_HOME/.install.XXXXXX")"
  # Logging: Kafka 4.x ships log4j-core 2.x as a dependency but no slf4j binding;
  # Kafka 3.9 uses slf4j 1.7 + reload4j in its tarball (not in the pom). Either way add
  # the log4j2 slf4j-1.x binding; 3.9 also gets the log4j-1.2 bridge for its
  # Log4jController (dynamic broker log levels).
  local extra="
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>"
  if [[ "$KAFKA_VERSION" == 3.* ]]; then
    extra+="
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-1.2-api</artifactId><version>$LOG4J_VERSION</version></dependency>"
  fi
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>emopipe.local</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_$SCALA_VERSION</artifactId>
      <version>$KAFKA_VERSION</version>
      <exclusions>
        <exclusion><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId></exclusion>
        <exclusion><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId></exclusion>
        <exclusion><groupId>org.slf4j</groupId><artifactId>slf4j-log4j12</artifactId></exclusion>
      </exclusions>
    </dependency>$extra
  </dependencies>
</project>
EOF
  log "resolving org.apache.kafka:kafka_$SCALA_VERSION:$KAFKA_VERSION + runtime deps from Maven Central"
  if ! (cd "$work" && "$MVN" -B -q \
        org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1); then
    tail -n 40 "$work/mvn.log" >&2
    rm -rf "$work"
    die "maven could not resolve kafka_$SCALA_VERSION:$KAFKA_VERSION"
  fi
  compgen -G "$work/libs/kafka_${SCALA_VERSION}-*.jar" >/dev/null || die "no kafka jar resolved"
  rm -rf "$LIBS"
  mv "$work/libs" "$LIBS"
  cp "$work/pom.xml" "$KAFKA_HOME/pom.xml"
  rm -rf "$work"
  date -u +%FT%TZ >"$LIBS/.complete"
  log "installed $(find "$LIBS" -name '*.jar' | wc -l) jars into $LIBS in $((SECONDS - t0))s"
  exec 9>&-
}

# ---------------------------------------------------------------- helpers
port_in_use() { # 0 if something accepts on 127.0.0.1:$1
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    if ! port_in_use "$p" && ! port_in_use "$((p + 1))"; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

# ApiVersions v0 (key 18) over /dev/tcp: succeeds when the broker answers with error 0.
api_versions_ok() {
  local port=$1 out
  out=$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port
    printf '\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x07\xff\xff' >&3
    head -c 10 <&3 | od -An -tx1" 2>/dev/null) || return 1
  out=$(tr -s ' \n' ' ' <<<"$out" | sed 's/^ //; s/ $//')  # "ss ss ss ss 00 00 00 07 ee ee"
  [[ "$out" =~ ^[0-9a-f]{2}\ [0-9a-f]{2}\ [0-9a-f]{2}\ [0-9a-f]{2}\ 00\ 00\ 00\ 07\ 00\ 00$ ]]
}

random_cluster_id() { # 16 random bytes, base64url without padding (Kafka Uuid format)
  # Not starting with '-' (1 id in 64 would): the format tool would read it
  # as an option ("argument --cluster-id/-t: expected one argument"), and
  # Kafka's own Uuid.randomUuid() avoids such ids too.
  local id=-
  while [ "${id#-}" != "$id" ]; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
  done
  printf '%s' "$id"
}

pid_alive() { # pid is alive and is our broker for dir $2
  local pid=$1 dir=$2
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $dir/server.properties"
}

resolve_dir() { # --dir or the last started dir
  local d=$1
  if [[ -z "$d" ]]; then
    [[ -f "$LAST_DIR_FILE" ]] || die "no --dir given and no broker started before"
    d=$(cat "$LAST_DIR_FILE")
  fi
  (cd "$d" 2>/dev/null && pwd) || echo "$d"
}

# ---------------------------------------------------------------- start
cmd_start() {
  local port="" cport="" sport="" tport="" sasl_user="" dir="" partitions=1 timeout_s=120 watch_pid="" sets=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --port) port=$2; shift 2 ;;
      --sasl-port) sport=$2; shift 2 ;;
      --sasl-user) sasl_user=$2; shift 2 ;;
      --ssl-port) tport=$2; shift 2 ;;
      --controller-port) cport=$2; shift 2 ;;
      --dir) dir=$2; shift 2 ;;
      --partitions) partitions=$2; shift 2 ;;
      --set) sets+=("$2"); shift 2 ;;
      --timeout) timeout_s=$2; shift 2 ;;
      --watch-pid) watch_pid=$2; shift 2 ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  install_libs
  local t0=$SECONDS
  if [[ -z "$dir" ]]; then
    dir=$(mktemp -d "${TMPDIR:-/tmp}/emopipe-kafka.XXXXXX")
    touch "$dir/$CREATED_MARK"
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)

  if [[ -f "$dir/kafka.pid" ]] && pid_alive "$(cat "$dir/kafka.pid")" "$dir"; then
    # shellcheck disable=SC1091
    source "$dir/broker.env"
    log "already running (pid $(cat "$dir/kafka.pid")) in $dir"
    PORT=$PORT SASL_PORT=${SASL_PORT:-} SSL_PORT=${SSL_PORT:-} print_addrs "$dir"
    return 0
  fi

  # Restart of an existing dir: keep its ports (clients and stored metadata know them).
  if [[ -f "$dir/broker.env" ]]; then
    local PORT="" CONTROLLER_PORT="" SASL_PORT="" SASL_USER="" SSL_PORT=""
    # shellcheck disable=SC1091
    source "$dir/broker.env"
    [[ -z "$port" ]] && port=$PORT
    [[ -z "$cport" ]] && cport=$CONTROLLER_PORT
    [[ -z "$sport" ]] && sport=$SASL_PORT
    [[ -z "$sasl_user" ]] && sasl_user=$SASL_USER
    [[ -z "$tport" ]] && tport=$SSL_PORT
  fi
  if [[ -n "$sasl_user" ]]; then
    [[ -n "$sport" ]] || die "--sasl-user needs --sasl-port"
    [[ "$sasl_user" =~ ^[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+$ ]] || die "--sasl-user wants USER:PASSWORD of letters, digits, _ . -"
  fi
  [[ -z "$port" ]] && port=9092
  [[ "$port" == 0 ]] && port=$(free_port)
  if [[ -z "$cport" ]]; then
    cport=$((port + 1))
    if port_in_use "$cport"; then cport=$(free_port); fi
  fi
  [[ "$sport" == 0 ]] && sport=$(free_port)
  [[ "$tport" == 0 ]] && tport=$(free_port)
  port_in_use "$port" && die "127.0.0.1:$port is already in use"
  [[ -n "$sport" ]] && port_in_use "$sport" && die "SASL port 127.0.0.1:$sport is already in use"
  [[ -n "$tport" ]] && port_in_use "$tport" && die "SSL port 127.0.0.1:$tport is already in use"
  port_in_use "$cport" && die "controller port 127.0.0.1:$cport is already in use"

  # -- server.properties (rewritten on every start so option changes apply)
  cat >"$dir/server.properties" <<EOF
# generated by scripts/kafka/kafka.sh (Kafka $KAFKA_VERSION) — rewritten on every start
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
# static quorum (works on 3.9 and 4.x; formatting needs no --standalone)
controller.quorum.voters=1@127.0.0.1:$cport
log.dirs=$dir/data
num.partitions=$partitions
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  local extra_listeners="" extra_map=""
  [[ -n "$sport" ]] && extra_listeners+=",SASL_PLAINTEXT://127.0.0.1:$sport" extra_map+=",SASL_PLAINTEXT:SASL_PLAINTEXT"
  [[ -n "$tport" ]] && extra_listeners+=",SSL://127.0.0.1:$tport" extra_map+=",SSL:SSL"
  if [[ -n "$extra_listeners" ]]; then
    sed -i "s|^listeners=.*|listeners=PLAINTEXT://127.0.0.1:$port$extra_listeners,CONTROLLER://127.0.0.1:$cport|
      s|^advertised.listeners=.*|advertised.listeners=PLAINTEXT://127.0.0.1:$port$extra_listeners|
      s|^listener.security.protocol.map=.*|listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT$extra_map|" \
      "$dir/server.properties"
  fi
  if [[ -n "$tport" ]]; then
    make_tls "$dir/tls"
    cat >>"$dir/server.properties" <<EOF
# SSL listener (--ssl-port); certificate made by kafka.sh (make_tls), CA in tls/ca.pem
listener.name.ssl.ssl.keystore.type=PKCS12
listener.name.ssl.ssl.keystore.location=$dir/tls/broker.p12
listener.name.ssl.ssl.keystore.password=$TLS_PASS
listener.name.ssl.ssl.key.password=$TLS_PASS
EOF
  fi
  if [[ -n "$sport" ]]; then
    local plain_users=""
    [[ -n "$sasl_user" ]] && plain_users=" user_${sasl_user%%:*}=\"${sasl_user#*:}\""
    cat >>"$dir/server.properties" <<EOF
# SASL_PLAINTEXT listener (--sasl-port); SCRAM users live in the cluster metadata
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$plain_users;
EOF
  fi
  local kv
  for kv in "${sets[@]+"${sets[@]}"}"; do echo "$kv" >>"$dir/server.properties"; done

  # -- format once
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    local cid
    cid=$(random_cluster_id)
    local scram=()
    if [[ -n "$sasl_user" ]]; then
      scram=(--add-scram "SCRAM-SHA-256=[name=${sasl_user%%:*},password=${sasl_user#*:}]"
             --add-scram "SCRAM-SHA-512=[name=${sasl_user%%:*},password=${sasl_user#*:}]")
    fi
    if ! "$JAVA" -Xmx256m -Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2.xml" -cp "$LIBS/*" \
          kafka.tools.StorageTool format -t "$cid" -c "$dir/server.properties" "${scram[@]+"${scram[@]}"}" \
          >"$dir/format.log" 2>&1; then
      cat "$dir/format.log" >&2
      die "kafka-storage format failed"
    fi
    log "formatted $dir/data (cluster id $cid) in $((SECONDS - t0))s"
  fi

  cat >"$dir/broker.env" <<EOF
PORT=$port
CONTROLLER_PORT=$cport
SASL_PORT=$sport
SASL_USER=$sasl_user
SSL_PORT=$tport
KAFKA_VERSION=$KAFKA_VERSION
EOF
  mkdir -p "$(dirname "$LAST_DIR_FILE")"
  echo "$dir" >"$LAST_DIR_FILE"

  # -- launch (own session; no inherited stdout so callers' pipes close)
  local logfile="$dir/broker.log" offset=0
  [[ -f "$logfile" ]] && offset=$(stat -c %s "$logfile")
  echo "===== start $(date -u +%FT%TZ) port=$port controller=$cport =====" >>"$logfile"
  # shellcheck disable=SC2086
  setsid "$JAVA" ${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    ${KAFKA_JVM_OPTS:-} \
    -Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2.xml" \
    -Dkafka.logs.dir="$dir" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" \
    >>"$logfile" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$dir/kafka.pid"

  if [[ -n "$watch_pid" ]]; then
    # Watchdog: when PID dies while this broker still runs, stop it (and remove the dir
    # if kafka.sh made it). Exits quietly when the broker goes away first (stop/restart).
    setsid bash -c "while kill -0 $watch_pid 2>/dev/null && kill -0 $pid 2>/dev/null; do sleep 1; done
      if kill -0 $pid 2>/dev/null && ! kill -0 $watch_pid 2>/dev/null; then
        '$SCRIPT_DIR/kafka.sh' stop --dir '$dir' --timeout 15
      fi" >>"$dir/watchdog.log" 2>&1 </dev/null &
  fi

  # -- wait: process alive, "Kafka Server started" in the new log part, port answers ApiVersions
  local deadline=$((SECONDS + timeout_s)) started=0
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -c +"$((offset + 1))" "$logfile" | tail -n 40 >&2
      rm -f "$dir/kafka.pid"
      die "broker exited during startup (log: $logfile)"
    fi
    if [[ $started == 0 ]] && tail -c +"$((offset + 1))" "$logfile" | grep -q "Kafka Server started"; then
      started=1
    fi
    if [[ $started == 1 ]] && api_versions_ok "$port"; then break; fi
    if (( SECONDS >= deadline )); then
      tail -c +"$((offset + 1))" "$logfile" | tail -n 40 >&2
      die "broker not ready after ${timeout_s}s (pid $pid, log: $logfile); stop it with: $0 stop --dir $dir"
    fi
    sleep 0.2
  done
  log "Kafka $KAFKA_VERSION ready on 127.0.0.1:$port (pid $pid, dir $dir) in $((SECONDS - t0))s"
  PORT=$port SASL_PORT=$sport SSL_PORT=$tport print_addrs "$dir"
  return 0
}

# print_addrs DIR: the KAFKA_* lines of a started broker (PORT, SASL_PORT, SSL_PORT set).
print_addrs() {
  echo "KAFKA_BROKERS=127.0.0.1:$PORT"
  [[ -n "$SASL_PORT" ]] && echo "KAFKA_SASL_BROKERS=127.0.0.1:$SASL_PORT"
  if [[ -n "$SSL_PORT" ]]; then
    echo "KAFKA_SSL_BROKERS=127.0.0.1:$SSL_PORT"
    echo "KAFKA_SSL_CA=$1/tls/ca.pem"
  fi
  return 0
}

# The keystore password of the test certificates: they guard nothing but a
# loopback test broker, and PKCS12 needs one.
TLS_PASS=emopipe-test

# make_tls D: a CA and a broker key pair signed by it, for 127.0.0.1 and
# localhost, made once with the JDK's keytool (no openssl needed):
# D/broker.p12 (the broker's keystore) and D/ca.pem (what clients trust).
make_tls() {
  local d=$1 kt="${JAVA%/java}/keytool"
  [[ -x "$kt" ]] || kt=keytool
  [[ -f "$d/broker.p12" && -f "$d/ca.pem" ]] && return 0
  rm -rf "$d" && mkdir -p "$d"
  local common=(-storetype PKCS12 -storepass "$TLS_PASS" -keypass "$TLS_PASS" -keyalg EC -groupname secp256r1 -validity 3650)
  "$kt" -genkeypair -alias ca -dname "CN=emopipe test CA" -ext bc:c -keystore "$d/ca.p12" "${common[@]}" >/dev/null 2>&1 \
    || die "keytool: cannot make the test CA"
  "$kt" -exportcert -rfc -alias ca -keystore "$d/ca.p12" -storepass "$TLS_PASS" >"$d/ca.pem" 2>/dev/null
  "$kt" -genkeypair -alias broker -dname "CN=127.0.0.1" -keystore "$d/broker.p12" "${common[@]}" >/dev/null 2>&1 \
    || die "keytool: cannot make the broker key"
  "$kt" -certreq -alias broker -keystore "$d/broker.p12" -storepass "$TLS_PASS" 2>/dev/null |
    "$kt" -gencert -rfc -alias ca -keystore "$d/ca.p12" -storepass "$TLS_PASS" -validity 3650 \
      -ext "SAN=ip:127.0.0.1,dns:localhost" -ext "EKU=serverAuth" >"$d/broker.pem" 2>/dev/null \
    || die "keytool: cannot sign the broker certificate"
  "$kt" -importcert -noprompt -alias ca -file "$d/ca.pem" -keystore "$d/broker.p12" -storepass "$TLS_PASS" >/dev/null 2>&1
  "$kt" -importcert -alias broker -file "$d/broker.pem" -keystore "$d/broker.p12" -storepass "$TLS_PASS" -keypass "$TLS_PASS" >/dev/null 2>&1 \
    || die "keytool: cannot import the broker certificate"
}

# ---------------------------------------------------------------- stop
cmd_stop() {
  local dir="" keep=0 sig=TERM timeout_s=30
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dir) dir=$2; shift 2 ;;
      --keep) keep=1; shift ;;
      --kill) sig=KILL; shift ;;
      --timeout) timeout_s=$2; shift 2 ;;
      *) die "stop: unknown option $1" ;;
    esac
  done
  dir=$(resolve_dir "$dir")
  local pid=""
  [[ -f "$dir/kafka.pid" ]] && pid=$(cat "$dir/kafka.pid")
  if pid_alive "$pid" "$dir"; then
    kill -"$sig" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + timeout_s))
    while kill -0 "$pid" 2>/dev/null; do
      if (( SECONDS >= deadline )); then
        log "broker pid $pid did not stop in ${timeout_s}s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
      fi
      sleep 0.1
    done
    log "stopped broker pid $pid ($sig)"
  else
    log "no broker running in $dir"
  fi
  rm -f "$dir/kafka.pid"
  if [[ $keep == 0 && -f "$dir/$CREATED_MARK" ]]; then
    rm -rf "$dir"
    log "removed $dir"
  fi
}

# ---------------------------------------------------------------- status
cmd_status() {
  local dir=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dir) dir=$2; shift 2 ;;
      *) die "status: unknown option $1" ;;
    esac
  done
  dir=$(resolve_dir "$dir")
  local pid="" PORT="?" KAFKA_VERSION="?"
  [[ -f "$dir/kafka.pid" ]] && pid=$(cat "$dir/kafka.pid")
  # shellcheck disable=SC1091
  [[ -f "$dir/broker.env" ]] && source "$dir/broker.env"
  if pid_alive "$pid" "$dir"; then
    echo "running pid=$pid version=$KAFKA_VERSION dir=$dir"
    echo "KAFKA_BROKERS=127.0.0.1:$PORT"
    return 0
  fi
  echo "stopped dir=$dir"
  return 3
}

case "${1:-}" in
  install) shift; install_libs; echo "KAFKA_LIBS=$LIBS" ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
esac
