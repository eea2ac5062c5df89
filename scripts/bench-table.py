"""The Markdown table of bench-compare results: medians per scenario, metric and broker, and
the edgemq/peer ratios. Usage: bench-table.py results.jsonl"""
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(name, broker, key):
    vals = [r["result"].get(key) for r in rows
            if r["name"] == name and r["result"].get("label") == broker and not r["result"].get("failed")]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
def fmt(v):
    if v is None:
        return "–"
    return f"{v:,.0f}" if v >= 100 or float(v).is_integer() else f"{v:.1f}"
names = []
for r in rows:
    if r["name"] not in names:
        names.append(r["name"])
print("| scenario | metric | edgemq | mosquitto | rumqttd | edgemq/mosquitto | edgemq/rumqttd |")
print("|---|---|---|---|---|---|---|")
for n in names:
    if n.endswith("storm"):
        metrics = [("connects_per_sec", "connects/s"), ("rss_per_conn_bytes", "bytes/conn"), ("rss_before_kb", "idle RSS KB")]
    elif n.startswith("latency"):
        metrics = [("p50_us", "p50 µs"), ("p99_us", "p99 µs"), ("lost", "lost")]
    else:
        metrics = [("msgs_per_sec", "msgs/s"), ("lost", "lost"), ("broker_cpu_pct", "CPU %")]
    for key, label in metrics:
        e, m, r = (med(n, b, key) for b in ("edgemq", "mosquitto", "rumqttd"))
        # A ratio of lost-message counts says nothing: only the counts are shown.
        ratio = lambda a, b: "–" if a is None or not b or key == "lost" else f"{a / b:.2f}"
        print(f"| {n} | {label} | {fmt(e)} | {fmt(m)} | {fmt(r)} | {ratio(e, m)} | {ratio(e, r)} |")
