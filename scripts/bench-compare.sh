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
#
# Needs: a release build of edgemq and edgemq-bench (built here), mosquitto (apt-get install
# mosquitto), rumqttd (cargo install rumqttd; or RUMQTTD=/path/to/rumqttd).
set -euo pipefail
cd "$(dirname "$0")/.."

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
EDGEMQ=target/release/edgemq
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

start_broker() { # name → sets PID, ADDR
  case "$1" in
    edgemq)
      "$EDGEMQ" serve --listen 127.0.0.1:18833 --max-queued-messages 1000000 \
        --receive-maximum 65535 --log-level error >"$OUT/edgemq.log" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18833 ;;
    mosquitto)
      "$MOSQUITTO" -c "$OUT/mosquitto.conf" >"$OUT/mosquitto.log" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18831 ;;
    rumqttd)
      "$RUMQTTD" -c "$OUT/rumqttd.toml" -q >"$OUT/rumqttd.log" 2>&1 &
      PID=$!; ADDR=127.0.0.1:18832 ;;
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
      if [[ "$name" == storm* ]]; then wait_for_time_wait; fi
      # Each scenario on a fresh broker: no state carried between scenarios.
      start_broker "$broker"
      # shellcheck disable=SC2086
      if line=$(timeout $((DURATION * 4 + 60)) "$BENCH" --addr "$ADDR" --broker-pid "$PID" \
          --duration "$DURATION" --label "$broker" $args 2>>"$OUT/bench.err"); then
        echo "{\"run\":$run,\"name\":\"$name\",\"result\":$line}" >>"$RESULTS"
      else
        echo "{\"run\":$run,\"name\":\"$name\",\"result\":{\"label\":\"$broker\",\"failed\":true}}" >>"$RESULTS"
      fi
      stop_broker
    done
  done
done

python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(name, broker, key):
    vals = [r["result"].get(key) for r in rows
            if r["name"] == name and r["result"].get("label") == broker and not r["result"].get("failed")]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
def fmt(v):
    return "–" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.2f}")
names = []
for r in rows:
    if r["name"] not in names:
        names.append(r["name"])
print("| scenario | metric | edgemq | mosquitto | rumqttd | edgemq/mosquitto | edgemq/rumqttd |")
print("|---|---|---|---|---|---|---|")
for n in names:
    if n == "storm":
        metrics = [("connects_per_sec", "connects/s"), ("rss_per_conn_bytes", "bytes/conn"), ("rss_before_kb", "idle RSS KB")]
    elif n.startswith("latency"):
        metrics = [("p50_us", "p50 µs"), ("p99_us", "p99 µs"), ("lost", "lost")]
    else:
        metrics = [("msgs_per_sec", "msgs/s"), ("lost", "lost"), ("broker_cpu_pct", "CPU %")]
    for key, label in metrics:
        e, m, r = (med(n, b, key) for b in ("edgemq", "mosquitto", "rumqttd"))
        ratio = lambda a, b: "–" if a is None or not b else f"{a / b:.2f}"
        print(f"| {n} | {label} | {fmt(e)} | {fmt(m)} | {fmt(r)} | {ratio(e, m)} | {ratio(e, r)} |")
EOF
