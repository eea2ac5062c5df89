"""The Markdown table of bench-compare results: medians per scenario, metric and broker, and
the edgemq/peer ratios. Usage: bench-table.py results.jsonl

One column per broker present in the results (edgemq first, then mosquitto, rumqttd,
flashmq, then any other label in order of appearance) and one edgemq/peer ratio column per
peer. A `persist-*-interval` row runs edgemq only (its second sync policy): the peers'
figures shown there are those of the row without the suffix, marked with *."""
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
KNOWN = ["edgemq", "mosquitto", "rumqttd", "flashmq"]
labels = []
for r in rows:
    label = r["result"].get("label")
    if label is not None and label not in labels:
        labels.append(label)
brokers = [b for b in KNOWN if b in labels] + [b for b in labels if b not in KNOWN]
peers = [b for b in brokers if b != "edgemq"]


def value(result, key):
    v = result.get(key)
    # Results from before edgemq-bench reported CPU per message: the same quotient, as CPU %
    # and msgs/s cover the same window.
    if v is None and key == "broker_cpu_us_per_msg" and result.get("broker_cpu_pct") is not None \
            and result.get("msgs_per_sec"):
        v = result["broker_cpu_pct"] / 100 / result["msgs_per_sec"] * 1e6
    return v


def med(name, broker, key):
    vals = [value(r["result"], key) for r in rows
            if r["name"] == name and r["result"].get("label") == broker and not r["result"].get("failed")]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def ran(name, broker):
    return any(r["name"] == name and r["result"].get("label") == broker for r in rows)


def fmt(v):
    if v is None:
        return "–"
    if v >= 100 or float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


names = []
for r in rows:
    if r["name"] not in names:
        names.append(r["name"])
header = ["scenario", "metric"] + brokers + [f"edgemq/{p}" for p in peers]
print("| " + " | ".join(header) + " |")
print("|" + "---|" * len(header))
borrowed = False
for n in names:
    if n.endswith("storm"):
        metrics = [("connects_per_sec", "connects/s"), ("rss_per_conn_bytes", "bytes/conn"), ("rss_before_kb", "idle RSS KB")]
    elif n.startswith("latency"):
        metrics = [("p50_us", "p50 µs"), ("p99_us", "p99 µs"), ("lost", "lost")]
    else:
        metrics = [("msgs_per_sec", "msgs/s"), ("lost", "lost"), ("broker_cpu_pct", "CPU %"),
                   ("broker_cpu_us_per_msg", "CPU µs/msg")]
    # Where a peer did not run this row, an *-interval row shows the peer's base row.
    source = {}
    for b in brokers:
        source[b] = n
        if b != "edgemq" and n.endswith("-interval") and not ran(n, b) and ran(n[:-len("-interval")], b):
            source[b] = n[:-len("-interval")]
            borrowed = True
    for key, label in metrics:
        vals = {b: med(source[b], b, key) for b in brokers}
        cells = [fmt(vals[b]) + ("*" if source[b] != n and vals[b] is not None else "") for b in brokers]
        # A ratio of lost-message counts says nothing: only the counts are shown.
        e = vals.get("edgemq")
        ratios = ["–" if e is None or not vals[p] or key == "lost" else f"{e / vals[p]:.2f}" for p in peers]
        print("| " + " | ".join([n, label] + cells + ratios) + " |")
if borrowed:
    print()
    print("\\* the peer's figure from the row without `-interval` (it has one persistence mode).")
