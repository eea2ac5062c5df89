#!/usr/bin/env bash
# Side-by-side benchmark: edgemq, Mosquitto (Debian package), rumqttd (crates.io) and, when
# FLASHMQ names a binary, FlashMQ, each started fresh on a loopback port with equivalent
# settings (anonymous, no persistence, queue limits raised, TCP_NODELAY), the same
# edgemq-bench scenarios against each, RUNS times, medians and edgemq/peer ratios printed as
# a Markdown table (msgs/s, lost, broker CPU % and broker CPU µs per delivered message).
# Bounded: every scenario has a fixed duration and each run is killed after a timeout.
#
#   scripts/bench-compare.sh                 # installs what is missing, RUNS=3, DURATION=5
#   FLASHMQ=/path/to/flashmq scripts/bench-compare.sh   # FlashMQ as a fourth broker
#   RUNS=1 DURATION=2 scripts/bench-compare.sh
#   BROKERS="edgemq rumqttd" ONLY='^pairs' scripts/bench-compare.sh
#   TABLE_FROM="a/results.jsonl b/results.jsonl" scripts/bench-compare.sh   # only the table
#
# Rows: in-memory throughput, latency and connection storms; tls-* (not rumqttd); persist-*
# with persistent subscribers (Clean Start 0, Session Expiry 3600 s) against each broker's
# store (not rumqttd, which has none): edgemq on a fresh --data-dir with --sync always
# (persist-*) and --sync interval-ms=10 (persist-*-interval, edgemq only: in the table the
# peers' figures there are those of the row without the suffix), Mosquitto with
# `persistence true`, FlashMQ with a storage_dir (both save their state periodically and at
# exit, not per message).
#
# Needs: a release build of edgemq and edgemq-bench (built here), mosquitto (apt-get install
# mosquitto), rumqttd (cargo install rumqttd; or RUMQTTD=/path/to/rumqttd); FlashMQ only when
# FLASHMQ is set (a binary built elsewhere: this repository neither holds nor builds it;
# FLASHMQ_THREADS sets its thread_count, default one per core).
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
FLASHMQ=${FLASHMQ:-}
BROKERS=${BROKERS:-"edgemq mosquitto rumqttd${FLASHMQ:+ flashmq}"}
if [[ " $BROKERS " == *" flashmq "* && ! -x "$FLASHMQ" ]]; then
  echo "flashmq in BROKERS needs FLASHMQ=/path/to/flashmq (an executable)" >&2; exit 1
fi
ONLY=${ONLY:-}   # a regular expression: run only the scenarios whose name matches
OUT=${OUT:-target/bench-compare}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)   # absolute: broker configurations name files in it

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
EDGEMQ=${EDGEMQ:-${CARGO_TARGET_DIR:-target}/release/edgemq}
BENCH=${CARGO_TARGET_DIR:-target}/release/edgemq-bench

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
# Persistent rows: the same with a store in $OUT/mosquitto-store (emptied before each run).
{
  sed 's/^persistence false$/persistence true/' "$OUT/mosquitto.conf"
  echo "persistence_location $OUT/mosquitto-store/"
} >"$OUT/mosquitto-persist.conf"
# FlashMQ (when FLASHMQ is set): plain on 18838, TLS on 18839 (below); the persistent rows
# add a storage_dir. Queue limits at their maximum (65535 messages, a 16-bit setting, and
# ~4 GB per client): past them FlashMQ drops, which the fan-in rows can show as "lost".
# rlimit_nofile: as many descriptors as allowed here (FlashMQ asks for 1,000,000 by default
# and logs an error when the hard limit is lower).
NOFILE=$(ulimit -Hn); [ "$NOFILE" = unlimited ] && NOFILE=1000000
flashmq_conf() { # listen-block lines → a configuration on stdout
  cat <<EOF
allow_anonymous true
rlimit_nofile $NOFILE
max_qos_msg_pending_per_client 65535
max_qos_bytes_pending_per_client 4000000000
client_max_write_buffer_size 104857600
client_initial_buffer_size 65536
log_file $OUT/flashmq.log
log_level error
${FLASHMQ_THREADS:+thread_count $FLASHMQ_THREADS}
listen {
  protocol mqtt
  inet4_bind_address 127.0.0.1
  tcp_nodelay true
$1
}
EOF
}
flashmq_conf "  port 18838" >"$OUT/flashmq.conf"
{ cat "$OUT/flashmq.conf"; echo "storage_dir $OUT/flashmq-store"; } >"$OUT/flashmq-persist.conf"
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
flashmq_conf "  port 18839
  fullchain $PKI/server.crt
  privkey $PKI/server.key" >"$OUT/flashmq-tls.conf"

# shellcheck disable=SC2086 # $EDGEMQ_BENCH_LIMITS is a list of arguments
start_broker() { # name mode (plain, tls, persist or persist-interval) → sets PID, ADDR
  case "$1:$2" in
    edgemq:plain)
      # --in-memory: the others run without persistence too (the persist-* rows and
      # scripts/bench-durable.sh measure the store).
      "$EDGEMQ" serve --listen 127.0.0.1:18833 --in-memory --max-queued-messages 1000000 \
        --receive-maximum 65535 $EDGEMQ_BENCH_LIMITS --log-level error >"$OUT/edgemq.log" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18833 ;;
    edgemq:persist*)
      local sync=always
      [ "$2" = persist-interval ] && sync=interval-ms=10
      rm -rf "$OUT/edgemq-store"
      "$EDGEMQ" serve --listen 127.0.0.1:18833 --data-dir "$OUT/edgemq-store" --sync "$sync" \
        --max-queued-messages 1000000 --receive-maximum 65535 $EDGEMQ_BENCH_LIMITS \
        --log-level error >"$OUT/edgemq.log" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18833 ;;
    edgemq:tls)
      "$EDGEMQ" serve --config "$OUT/edgemq-tls" --data-dir "$OUT/edgemq-data" --in-memory \
        $EDGEMQ_BENCH_LIMITS --log-level error >"$OUT/edgemq.log" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18836 ;;
    mosquitto:plain)
      "$MOSQUITTO" -c "$OUT/mosquitto.conf" >"$OUT/mosquitto.log" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18831 ;;
    mosquitto:persist)
      rm -rf "$OUT/mosquitto-store"; mkdir -p "$OUT/mosquitto-store"
      # Started as root, Mosquitto drops to its own user, which must write the store.
      if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then chown mosquitto "$OUT/mosquitto-store"; fi
      "$MOSQUITTO" -c "$OUT/mosquitto-persist.conf" >"$OUT/mosquitto.log" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18831 ;;
    mosquitto:tls)
      "$MOSQUITTO" -c "$OUT/mosquitto-tls.conf" >"$OUT/mosquitto.log" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18837 ;;
    rumqttd:plain)
      "$RUMQTTD" -c "$OUT/rumqttd.toml" -q >"$OUT/rumqttd.log" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18832 ;;
    flashmq:plain)
      "$FLASHMQ" --config-file "$OUT/flashmq.conf" >"$OUT/flashmq.out" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18838 ;;
    flashmq:persist)
      rm -rf "$OUT/flashmq-store"; mkdir -p "$OUT/flashmq-store"
      "$FLASHMQ" --config-file "$OUT/flashmq-persist.conf" >"$OUT/flashmq.out" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18838 ;;
    flashmq:tls)
      "$FLASHMQ" --config-file "$OUT/flashmq-tls.conf" >"$OUT/flashmq.out" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18839 ;;
    *) echo "no $2 configuration for $1" >&2; return 1 ;;
  esac
  for _ in $(seq 100); do (echo >"/dev/tcp/${ADDR%:*}/${ADDR#*:}") 2>/dev/null && return 0; sleep 0.05; done
  echo "$1 did not start" >&2; return 1
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
  # Over TLS (the same ECDSA P-256 server certificate for every broker; not rumqttd).
  "tls-pairs-q1|--qos 1 pairs --n 100"
  "tls-fanout-q1|--qos 1 fanout --s 100"
  "tls-storm|storm --c 2000 --concurrency 50"
  # Persistent subscribers, each broker's store on the path (not rumqttd). *-interval: edgemq
  # only, with its interval sync policy.
  "persist-pairs-q1|--session-expiry 3600 --qos 1 pairs --n 100"
  "persist-pairs-q1-interval|--session-expiry 3600 --qos 1 pairs --n 100"
  "persist-fanin-q1|--session-expiry 3600 --qos 1 fanin --p 50"
  "persist-fanin-q1-interval|--session-expiry 3600 --qos 1 fanin --p 50"
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
      mode=plain; extra=""
      if [[ "$name" == tls-* ]]; then
        [ "$broker" = rumqttd ] && continue
        mode=tls; extra=$TLS_ARGS
      elif [[ "$name" == persist-*-interval ]]; then
        [ "$broker" = edgemq ] || continue
        mode=persist-interval
      elif [[ "$name" == persist-* ]]; then
        [ "$broker" = rumqttd ] && continue
        mode=persist
      fi
      start_broker "$broker" "$mode"
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
