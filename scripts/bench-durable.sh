#!/usr/bin/env bash
# Persistence throughput: the same edgemq-bench scenarios with persistent subscribers
# (MQTT 5, Session Expiry 3600 s, so every QoS 1/2 delivery is stored before the publisher's
# PUBACK/PUBREC) against edgemq with --sync always, --sync interval-ms=10, --sync never, and
# --in-memory. RUNS runs each (default 3); prints one JSON report per run and a median table.
#
#   scripts/bench-durable.sh [RUNS] [DURATION_SECS]
#
# Results go to target/bench-durable/ (reports) and are summarised in docs/performance.md.
set -euo pipefail
# Throughput runs measure the data path, not the per-client safety limits (docs/limits.md):
# the in-flight window, queue bytes and connection rate are opened up as the peers' are.
EDGEMQ_BENCH_LIMITS="--max-inflight-messages 65535 --max-queued-bytes 100000000000 --max-connect-rate-per-address 1000000 --max-connections 1000000 --max-connections-per-address 1000000 --max-sessions-per-address 1000000"
cd "$(dirname "$0")/.."
RUNS=${1:-3}
DURATION=${2:-5}
OUT=target/bench-durable
mkdir -p "$OUT"
cargo build --release --quiet -p edgemq -p edgemq-bench
EDGEMQ=target/release/edgemq
BENCH=target/release/edgemq-bench
ADDR=127.0.0.1:18840

MODES=("always|--sync always" "interval-ms=10|--sync interval-ms=10" "never|--sync never" "in-memory|--in-memory")
SCENARIOS=(
  "pairs-q1|--qos 1 pairs --n 100"
  "pairs-q2|--qos 2 pairs --n 100"
  "fanin-q1|--qos 1 fanin --p 50"
  "fanout-q1|--qos 1 fanout --s 20"
  "latency-q1|--qos 1 latency --rate 500"
)

for scenario in "${SCENARIOS[@]}"; do
  sname=${scenario%%|*}; sargs=${scenario#*|}
  for mode in "${MODES[@]}"; do
    mname=${mode%%|*}; margs=${mode#*|}
    for run in $(seq "$RUNS"); do
      DATA=$(mktemp -d)
      # shellcheck disable=SC2086
      "$EDGEMQ" serve --listen "$ADDR" --data-dir "$DATA" $margs --max-queued-messages 1000000 \
        --receive-maximum 65535 $EDGEMQ_BENCH_LIMITS --log-level error >"$OUT/edgemq.log" 2>&1 &
      PID=$!
      for _ in $(seq 100); do (echo >"/dev/tcp/${ADDR%:*}/${ADDR#*:}") 2>/dev/null && break; sleep 0.05; done
      # shellcheck disable=SC2086
      "$BENCH" --addr "$ADDR" --duration "$DURATION" --broker-pid "$PID" --session-expiry 3600 \
        --label "edgemq $mname" $sargs >"$OUT/$sname-$mname-$run.json"
      kill "$PID"; wait "$PID" 2>/dev/null || true
      rm -rf "$DATA"
      cat "$OUT/$sname-$mname-$run.json"
    done
  done
done

# Median per scenario and mode.
python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys, glob, os
out, runs = sys.argv[1], int(sys.argv[2])
rows = {}
for f in sorted(glob.glob(os.path.join(out, "*.json"))):
    r = json.load(open(f))
    rows.setdefault((r["scenario"] + "-q" + str(r["qos"]), r["label"]), []).append(r)
def med(rs, k):
    xs = [x[k] for x in rs if x.get(k) is not None]
    return statistics.median(xs) if xs else None
print("| scenario | sync | msgs/s delivered (median of %d) | min – max | p50 / p99 latency (µs) | lost | broker CPU %% |" % runs)
print("|---|---|---|---|---|---|---|")
for (scenario, label), rs in sorted(rows.items()):
    rates = [x["msgs_per_sec"] for x in rs]
    p50, p99 = med(rs, "p50_us"), med(rs, "p99_us")
    latency = f"{p50:.0f} / {p99:.0f}" if p50 is not None else "–"
    print(f"| {scenario} | {label} | {med(rs, 'msgs_per_sec'):,.0f} | {min(rates):,.0f} – {max(rates):,.0f} | {latency} | {sum(x['lost'] for x in rs)} | {med(rs, 'broker_cpu_pct'):.0f} |")
PY
