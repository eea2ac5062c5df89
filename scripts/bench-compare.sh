#!/usr/bin/env bash
# Side-by-side benchmark: edgemq, Mosquitto (Debian package) and rumqttd (crates.io), each
# started fresh on a loopback port with equivalent settings (anonymous, no persistence,
# queue limits raised), the same edgemq-bench scenarios against each, RUNS times, medians
# and edgemq/peer ratios printed as a Markdown table. Bounded: every scenario has a fixed
# duration and each run is killed after a timeout.
#
#   scripts/bench-compare.sh                 # installs what is missing, RUNS=3, DURATION=5
#   RUNS=1 DURATION=2 scripts/bench-compare.sh
#   BROKERS="edgemq rumqttd" ONLY='^pairs' scripts/bench-compare.sh
#   TABLE_FROM="a/results.jsonl b/results.jsonl" scripts/bench-compare.sh   # only the table
#
# Needs: a release build of edgemq and edgemq-bench (built here), mosquitto (apt-get install
# mosquitto), rumqttd (cargo install rumqttd; or RUMQTTD=/path/to/rumqttd).
set -euo pipefail
# Throughput runs measure the data path, not the per-client safety limits (docs/limits.md):
# the in-flight window, queue bytes and connection rate are opened up as the peers' are.
EDGEMQ_BENCH_LIMITS="--max-inflight-messages 65535 --max-queued-bytes 100000000000 --max-connect-rate-per-address 1000000 --max-connections 1000000 --max-connections-per-address 1000000 --max-sessions-per-address 1000000"
cd "$(dirname "$0")/.."

# The table of earlier runs (their results.jsonl files), without running anything.
if [ -n "${TABLE_FROM:-}" ]; then
  # shellcheck disable=SC2086
  cat $TABLE_FROM >"${TMPDIR:-/tmp}/bench-compare-table.jsonl"
  exec python3 "$(dirname "$0")/bench-table.py" "${TMPDIR:-/tmp}/bench-compare-table.jsonl"
fi

RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
BROKERS=${BROKERS:-"edgemq mosquitto rumqttd"}
ONLY=${ONLY:-}   # a regular expression: run only the scenarios whose name matches
OUT=${OUT:-target/bench-compare}
mkdir -p "$OUT"

if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  apt-get install -y -qq --no-install-recommends mosquitto >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
RUMQTTD=${RUMQTTD:-$(command -v rumqttd || true)}
if [ -z "$RUMQTTD" ]; then
  # Not --locked: rumqttd 0.20.0's lockfile pins metrics 0.22.1, which Rust 1.95 refuses.
  cargo install rumqttd --root "$OUT/rumqttd"
  RUMQTTD="$OUT/rumqttd/bin/rumqttd"
fi
cargo build --release --quiet -p edgemq -p edgemq-bench
# EDGEMQ: another build to measure (e.g. before/after a change); default this tree's.
EDGEMQ=${EDGEMQ:-target/release/edgemq}
BENCH=target/release/edgemq-bench

# --- broker configurations ------------------------------------------------------------
cat > "$OUT/mosquitto.conf" <<'EOF'
listener 18831 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
max_inflight_messages 0
max_connections -1
set_tcp_nodelay true
log_type error
EOF
cat > "$OUT/rumqttd.toml" <<'EOF'
id = 0
[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:18834"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 500
    dynamic_filters = true
[v5.1]
name = "v5-1"
listen = "127.0.0.1:18832"
next_connection_delay_ms = 0
    [v5.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 500
EOF

# --- TLS: one server certificate for every broker, made with `edgemq certs` -------------
PKI="$OUT/pki"
mkdir -p "$PKI"
"$EDGEMQ" certs root --name "bench root CA" --out "$PKI/root" --force --log-level error
"$EDGEMQ" certs server --name localhost --san localhost --san 127.0.0.1 --ca "$PKI/root" \
  --out "$PKI/server" --force --log-level error
TLS_ARGS="--tls-ca $PKI/root.crt --tls-server-name localhost"
mkdir -p "$OUT/edgemq-tls/secrets/bench-server"
cp "$PKI/server.crt" "$OUT/edgemq-tls/secrets/bench-server/tls.crt"
cp "$PKI/server.key" "$OUT/edgemq-tls/secrets/bench-server/tls.key"
cat > "$OUT/edgemq-tls/broker.yaml" <<'EOF'
apiVersion: mqttbroker.iotoperations.azure.com/v1
kind: Broker
metadata:
  name: default
spec:
  advanced:
    clients:
      maxReceiveMaximum: 65535
      subscriberQueueLimit: {length: 1000000, strategy: DropOldest}
---
apiVersion: mqttbroker.iotoperations.azure.com/v1
kind: BrokerListener
metadata:
  name: bench-tls
spec:
  brokerRef: default
  serviceType: ClusterIp
  ports:
    - port: 18836
      protocol: Mqtt
      tls:
        mode: Manual
        manual: {secretRef: bench-server}
EOF
# Mosquitto started as root drops to its own user: give it its own copy of the key.
cp "$PKI/server.key" "$PKI/mosquitto-server.key"
if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then chown mosquitto "$PKI/mosquitto-server.key"; fi
{
  echo "listener 18837 127.0.0.1"
  echo "certfile $PKI/server.crt"
  echo "keyfile $PKI/mosquitto-server.key"
  grep -v '^listener' "$OUT/mosquitto.conf"
} >"$OUT/mosquitto-tls.conf"

start_broker() { # name [tls] → sets PID, ADDR
  if [ "${2:-}" = tls ]; then
    case "$1" in
      edgemq)
        "$EDGEMQ" serve --config "$OUT/edgemq-tls" --data-dir "$OUT/edgemq-data" --in-memory \
          $EDGEMQ_BENCH_LIMITS --log-level error >"$OUT/edgemq.log" 2>&1 &
        PID=$!; ADDR=127.0.0.1:18836 ;;
      mosquitto)
        "$MOSQUITTO" -c "$OUT/mosquitto-tls.conf" >"$OUT/mosquitto.log" 2>&1 &
        PID=$!; ADDR=127.0.0.1:18837 ;;
      *) return 1 ;;
    esac
  else
    start_plain "$1"
  fi
  for _ in $(seq 100); do (echo >"/dev/tcp/${ADDR%:*}/${ADDR#*:}") 2>/dev/null && return 0; sleep 0.05; done
  echo "$1 did not start" >&2; return 1
}

start_plain() {
  case "$1" in
    edgemq)
      # --in-memory: the others run without persistence too (scripts/bench-durable.sh
      # measures it).
      "$EDGEMQ" serve --listen 127.0.0.1:18833 --in-memory --max-queued-messages 1000000 \
        --receive-maximum 65535 $EDGEMQ_BENCH_LIMITS --log-level error >"$OUT/edgemq.log" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18833 ;;
    mosquitto)
      "$MOSQUITTO" -c "$OUT/mosquitto.conf" >"$OUT/mosquitto.log" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18831 ;;
    rumqttd)
      "$RUMQTTD" -c "$OUT/rumqttd.toml" -q >"$OUT/rumqttd.log" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18832 ;;
  esac
}

wait_for_time_wait() {
  for _ in $(seq 90); do
    [ "$(ss -tan state time-wait | wc -l)" -lt 500 ] && return 0
    sleep 1
  done
}

stop_broker() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }

# name|edgemq-bench arguments (MQTT 5, 64-byte payloads unless said).
SCENARIOS=(
  "pairs-q0|--qos 0 pairs --n 100"
  "pairs-q1|--qos 1 pairs --n 100"
  "pairs-q2|--qos 2 pairs --n 100"
  "fanin-q0|--qos 0 fanin --p 50"
  "fanin-q1|--qos 1 fanin --p 50"
  "fanout-q0|--qos 0 fanout --s 100"
  "fanout-q1|--qos 1 fanout --s 100"
  "latency-q1|--qos 1 latency --rate 500"
  "storm|storm --c 10000 --concurrency 100"
  # Over TLS (edgemq and Mosquitto, the same ECDSA P-256 server certificate; not rumqttd).
  "tls-pairs-q1|--qos 1 pairs --n 100"
  "tls-fanout-q1|--qos 1 fanout --s 100"
  "tls-storm|storm --c 2000 --concurrency 50"
)

RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
for run in $(seq "$RUNS"); do
  for broker in $BROKERS; do
    for entry in "${SCENARIOS[@]}"; do
      name=${entry%%|*}; args=${entry#*|}
      [[ -n "$ONLY" && ! "$name" =~ $ONLY ]] && continue
      # A storm leaves ~C client sockets in TIME_WAIT for 60 s; the next storm would then
      # hunt for free ephemeral ports and measure that instead of the broker.
      if [[ "$name" == *storm ]]; then wait_for_time_wait; fi
      # Each scenario on a fresh broker: no state carried between scenarios.
      tls=""; extra=""
      if [[ "$name" == tls-* ]]; then
        [ "$broker" = rumqttd ] && continue
        tls=tls; extra=$TLS_ARGS
      fi
      start_broker "$broker" $tls
      # shellcheck disable=SC2086
      if line=$(timeout $((DURATION * 4 + 60)) "$BENCH" --addr "$ADDR" --broker-pid "$PID" \
          --duration "$DURATION" --label "$broker" $extra $args 2>>"$OUT/bench.err"); then
        echo "{\"run\":$run,\"name\":\"$name\",\"result\":$line}" >>"$RESULTS"
      else
        echo "{\"run\":$run,\"name\":\"$name\",\"result\":{\"label\":\"$broker\",\"failed\":true}}" >>"$RESULTS"
      fi
      stop_broker
    done
  done
done

python3 scripts/bench-table.py "$RESULTS"
