#!/usr/bin/env bash
# The admin port's cost: the same build with metrics on (an admin port scraped every 0.5 s)
# and off (no admin port), alternated, 3 rounds, in memory; one line per run.
#
#   scripts/bench-metrics.sh [EDGEMQ_BINARY]       (default target/release/edgemq)
set -u
cd "$(dirname "$0")/.."
cargo build --release --quiet -p edgemq -p edgemq-bench
BIN=${1:-target/release/edgemq}; BENCH=target/release/edgemq-bench
LIMITS="--max-inflight-messages 65535 --max-queued-bytes 100000000000 --max-connect-rate-per-address 1000000 --max-connections 1000000 --max-connections-per-address 1000000 --max-sessions-per-address 1000000"
for round in 1 2 3; do
  for mode in off on; do
    extra=""; [ $mode = on ] && extra="--admin-listen 127.0.0.1:18960"
    $BIN serve --in-memory --listen 127.0.0.1:18959 $LIMITS $extra --log-level error & B=$!
    sleep 0.5
    S=""
    if [ $mode = on ]; then (while true; do curl -s -o /dev/null http://127.0.0.1:18960/metrics; sleep 0.5; done) & S=$!; fi
    for sc in "--qos 0 fanin --p 50" "--qos 1 pairs --n 100"; do
      r=$($BENCH --addr 127.0.0.1:18959 --duration 3 $sc 2>/dev/null | grep -o '"msgs_per_sec":[0-9]*' | cut -d: -f2)
      echo "$mode ${sc// /_} $r"
    done
    [ -n "$S" ] && kill $S; kill $B; wait $B 2>/dev/null
  done
done
