#!/usr/bin/env bash
# A/B benchmark of two edgemq builds on this machine: each round runs every scenario against
# a fresh broker of build A, then of build B, so slow drift of the machine hits both alike.
# Prints one line per run and the mean per build and scenario.
#
#   scripts/bench-ab.sh A_EDGEMQ B_EDGEMQ [ROUNDS] [DURATION_SECS]
#   SCENARIOS=durable scripts/bench-ab.sh old/target/release/edgemq target/release/edgemq 3
#
# SCENARIOS: "memory" (default: in-memory fan-in QoS 0 and pairs QoS 1) or "durable"
# (persistent subscribers, --sync always: pairs QoS 1/2, fan-in and fan-out QoS 1).
# Build A and B first (cargo build --release in each worktree); edgemq-bench is taken from
# this tree's target/release (built here).
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1
B=$2
ROUNDS=${3:-3}
DURATION=${4:-3}
ADDR=127.0.0.1:18853
# As in bench-compare.sh: the per-client safety limits are opened up for throughput runs.
LIMITS="--max-inflight-messages 65535 --max-queued-bytes 100000000000 --max-connect-rate-per-address 1000000 --max-connections 1000000 --max-connections-per-address 1000000"
cargo build --release --quiet -p edgemq-bench
BENCH=target/release/edgemq-bench

case "${SCENARIOS:-memory}" in
  memory)
    RUNS=("fanin-q0|--in-memory|--qos 0 fanin --p 50" "pairs-q1|--in-memory|--qos 1 pairs --n 100") ;;
  durable)
    RUNS=("pairs-q1|--sync always|--session-expiry 3600 --qos 1 pairs --n 100"
          "pairs-q2|--sync always|--session-expiry 3600 --qos 2 pairs --n 100"
          "fanin-q1|--sync always|--session-expiry 3600 --qos 1 fanin --p 50"
          "fanout-q1|--sync always|--session-expiry 3600 --qos 1 fanout --s 20") ;;
  *) echo "SCENARIOS is memory or durable" >&2; exit 2 ;;
esac

# Flags only newer builds know are passed only to builds that list them.
extra_flags() {
  if "$1" serve --help | grep -q -- --max-sessions-per-address; then
    echo "--max-sessions-per-address 1000000"
  fi
}

one() { # binary label mode bench-args
  local data pid out
  data=$(mktemp -d)
  # shellcheck disable=SC2086
  "$1" serve --listen "$ADDR" --data-dir "$data" $3 --max-queued-messages 1000000 \
    --receive-maximum 65535 $LIMITS $(extra_flags "$1") --log-level error >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do (echo >"/dev/tcp/${ADDR%:*}/${ADDR#*:}") 2>/dev/null && break; sleep 0.05; done
  # shellcheck disable=SC2086
  out=$(timeout 60 "$BENCH" --addr "$ADDR" --duration "$DURATION" --broker-pid "$pid" $4)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$data"
  echo "$2 $(echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["msgs_per_sec"], r["lost"])')"
}

for _ in $(seq "$ROUNDS"); do
  for build in A B; do
    bin=$A; [ "$build" = B ] && bin=$B
    for run in "${RUNS[@]}"; do
      IFS='|' read -r name mode args <<<"$run"
      one "$bin" "$build $name" "$mode" "$args"
    done
  done
done | tee /dev/stderr | awk '{k=$1" "$2; s[k]+=$3; n[k]++} END {for (k in s) printf "mean %s %d msgs/s over %d runs\n", k, s[k]/n[k], n[k]}' | sort -k3
