"""The l2 section of bench/RESULTS.md from what bench/run_l2.sh measured.

Inputs: fanout-l2-bench's document (--tier), fanout-bench runs as lines
"WORKLOAD SIDE PAIR JSON" (--e2e), context switches and CPU ticks per
process (--switches: "NAME SWITCHES TICKS CALLS CLK_TCK"), and
fanout-l2-pods-bench's documents (--pods, --freeze). Rewrites the section
through results_md.rewrite_section and prints it.
"""
import argparse
import json
import os
import statistics
import sys

p = argparse.ArgumentParser()
for flag in ("tier", "e2e", "switches", "pods", "freeze", "results", "machine", "mode", "pairs",
             "duration", "e2e_duration", "freeze_for", "elapsed"):
    p.add_argument("--" + flag, required=True)
a = p.parse_args()

out = []
add = out.append


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs):
    return "%.2f (%.2f-%.2f)" % (med(xs), min(xs), max(xs)) if xs else "-"


def us(v):
    return "%.0f us" % v


def kps(v):
    return "%.1fk/s" % (v / 1000)


add("## L2: the Redis tier and fanoutd on it (bench/run_l2.sh)")
add("")
add("Machine: %s. Mode: %s, %s pairs per comparison; suite took %ss." % (
    a.machine, a.mode, a.pairs, a.elapsed))
add("")

# ---- 1. The tier against raw hiredis -----------------------------------------
data = json.load(open(a.tier))
runs = {}
for r in data["runs"]:
    runs.setdefault(r["bench"], {}).setdefault(r["pair"], {})[r["side"]] = r


def fmt(metric, v):
    return kps(v) if metric == "throughput" else us(v)


rows = []


def row(label, baseline, bench, subject, base, metric, note="-"):
    pairs_ = [x for x in runs.get(bench, {}).values() if subject in x and base in x]
    if not pairs_:
        return
    s = [x[subject][metric] for x in pairs_]
    b = [x[base][metric] for x in pairs_]
    ratios = [x / y if y else float("inf") for x, y in zip(s, b)]
    rows.append("| %s | %s | %s | %s | %s | %s | %s |" % (
        label, baseline, {"throughput": "throughput", "p50_us": "p50", "p99_us": "p99"}[metric],
        fmt(metric, med(s)), fmt(metric, med(b)), spread(ratios), note))


for m in ("throughput", "p50_us", "p99_us"):
    row("Lookup, 1 in flight", "hiredis GET loop", "c1", "tier", "raw", m)
for m in ("throughput", "p50_us", "p99_us"):
    row("Lookup, 32 in flight", "hiredis, windows of 32 pipelined GETs", "c32", "tier", "raw", m)
row("LookupMany, 100 keys", "100 Lookups started together", "batch", "tier", "tier-single",
    "throughput", "keys/s")
row("LookupMany, 100 keys", "100 Lookups started together", "batch", "tier", "tier-single",
    "p50_us", "per batch")
row("LookupMany, 100 keys", "hiredis MGET of 100 keys", "batch", "tier", "raw", "throughput",
    "keys/s")
row("LookupMany, 100 keys", "hiredis MGET of 100 keys", "batch", "tier", "raw", "p50_us",
    "per batch")

add("### 1. The tier against raw hiredis (fanout-l2-bench)")
add("")
add("`RedisTier` (fanout's async client: a caller thread hands the call to the I/O thread, the "
    "answer comes back on it) and raw hiredis (a blocking context on the calling thread) on one "
    "throwaway redis-server, in one process, run after run (tier, raw, tier, raw, ...), each run "
    "%s. 1000 keys, 128-byte values (the tier reads its 54-byte envelope around each). Ratios are "
    "tier / baseline per pair; the columns are medians. Command timeout 50 ms." % a.duration)
add("")
add("| benchmark | compared with | metric | RedisTier | baseline | ratio: median (min-max) | note |")
add("|---|---|---|---|---|---|---|")
out.extend(rows)
add("")
errors = {}
for bench, by_pair in runs.items():
    for sides in by_pair.values():
        for side, r in sides.items():
            if r["errors"]:
                errors["%s %s" % (bench, side)] = errors.get("%s %s" % (bench, side), 0) + r["errors"]
add("Errors: " + (", ".join("%s %d" % kv for kv in sorted(errors.items())) or "none") + ".")
add("")
f = data.get("freeze")
if f:
    b, d, af = f["before"], f["during"], f["after"]
    add("Lookups while Redis is frozen (%d callers, each at most one Lookup a millisecond, Redis "
        "SIGSTOPped for %.0f ms): p99 %s before, %s frozen (slowest %.1f ms, %d of %d calls over "
        "the %.0f ms timeout), %s after SIGCONT; the circuit opened %.0f ms after SIGSTOP, the "
        "first hit came %.0f ms after SIGCONT." % (
            f["callers"], f["freeze_ms"], us(b["p99_us"]), us(d["p99_us"]), d["max_us"] / 1000,
            d["over_timeout"], d["calls"], f["timeout_ms"], us(af["p99_us"]),
            f["circuit_open_after_ms"], f["first_hit_after_thaw_ms"]))
    add("")

# ---- 2. fanoutd end to end ---------------------------------------------------
e2e = {}
for line in open(a.e2e):
    workload, side, pair, doc = line.split(" ", 3)
    e2e.setdefault(workload, {}).setdefault(int(pair), {})[side] = json.loads(doc)


def lat(doc, q):
    return doc["latency_us"][q]


names = {"hybrid": "default (answers up to 16 KiB on the I/O thread)",
         "inline": "every answer on the I/O thread",
         "executor": "every answer on the executor"}
add("### 2. fanoutd end to end: L2-hit Get, BatchGet, where Redis answers continue")
add("")
add("fanoutd on a file origin with an L1 too small to keep any value (4 KiB), so every Get is "
    "an L2 hit (checked below); 1000 keys of 128 bytes, Redis command timeout 50 ms. Each pair "
    "runs, back to back and %s each: Get on three fanoutd that differ only in "
    "`cache.l2.inline_answer_bytes`, the Echo floor (`fanout-echo-server`, same gRPC stack, no "
    "work), and a raw hiredis GET loop of a value the size of the stored envelope "
    "(`fanout-l2-bench --raw_get_only`). Target: Get p50 and p99 <= 1.15 x (Echo + raw GET) of "
    "the same pair." % a.e2e_duration)
add("")
add("| fanoutd | metric | Get | Echo + raw GET | ratio: median (min-max) | target | met? |")
add("|---|---|---|---|---|---|---|")
c1 = [x for x in e2e.get("c1", {}).values() if "echo" in x and "raw" in x]
for name in ("hybrid", "inline", "executor"):
    for q in ("p50", "p99"):
        got = [lat(x[name], q) for x in c1 if name in x]
        floor = [lat(x["echo"], q) + lat(x["raw"], q) for x in c1 if name in x]
        ratios = [g / f for g, f in zip(got, floor)]
        ok = ratios and med(ratios) <= 1.15
        add("| %s | %s | %s | %s | %s | <= 1.15x | %s |" % (
            names[name], q, us(med(got)), us(med(floor)), spread(ratios),
            "yes" if ok else "**no**"))
    tp = [x[name]["throughput"] for x in c1 if name in x]
    add("| %s | throughput | %s | - | - | - | - |" % (names[name], kps(med(tp))))
add("")
add("Same pairs, medians: Echo p50 %s / p99 %s, raw GET p50 %s / p99 %s." % (
    us(med([lat(x["echo"], "p50") for x in c1])), us(med([lat(x["echo"], "p99") for x in c1])),
    us(med([lat(x["raw"], "p50") for x in c1])), us(med([lat(x["raw"], "p99") for x in c1]))))
add("")
c1t = [x for x in c1 if "echo_thread" in x]
if c1t:
    # Not the target: the floor of a call finished from another thread, as
    # fanoutd finishes one whose answer came from Redis.
    add("Beside the target, the Echo floor with every call finished from a thread of the "
        "server's own (`fanout-echo-server --answer_from_thread`): p50 %s / p99 %s. Default "
        "fanoutd Get against that floor plus the raw GET, same pairs: p50 ratio %s, p99 ratio "
        "%s." % (
            us(med([lat(x["echo_thread"], "p50") for x in c1t])),
            us(med([lat(x["echo_thread"], "p99") for x in c1t])),
            spread([lat(x["hybrid"], "p50") / (lat(x["echo_thread"], "p50") + lat(x["raw"], "p50"))
                    for x in c1t if "hybrid" in x]),
            spread([lat(x["hybrid"], "p99") / (lat(x["echo_thread"], "p99") + lat(x["raw"], "p99"))
                    for x in c1t if "hybrid" in x])))
    add("")
c16 = [x for x in e2e.get("c16", {}).values() if "echo" in x]
add("| 16 in flight | Get throughput | Echo throughput | ratio: median (min-max) | Get p99 | Echo p99 |")
add("|---|---|---|---|---|---|")
for name in ("hybrid", "inline", "executor"):
    tp = [x[name]["throughput"] for x in c16 if name in x]
    et = [x["echo"]["throughput"] for x in c16 if name in x]
    add("| %s | %s | %s | %s | %s | %s |" % (
        names[name], kps(med(tp)), kps(med(et)), spread([g / e for g, e in zip(tp, et)]),
        us(med([lat(x[name], "p99") for x in c16 if name in x])),
        us(med([lat(x["echo"], "p99") for x in c16 if name in x]))))
add("")

# BatchGet of 100 L2-resident keys against single Gets of the same keys.
batch = e2e.get("batch", {})
b_keys = [batch[pp]["hybrid"]["throughput"] * 100 for pp in sorted(batch)]
s1 = [e2e["c1"][pp]["hybrid"]["throughput"] for pp in sorted(batch) if pp in e2e.get("c1", {})]
s16 = [e2e["c16"][pp]["hybrid"]["throughput"] for pp in sorted(batch) if pp in e2e.get("c16", {})]
r1 = [b / s for b, s in zip(b_keys, s1)]
r16 = [b / s for b, s in zip(b_keys, s16)]
add("BatchGet of 100 L2-resident keys (1 call in flight, one MGET each): %s keys/s, p50 %s a "
    "batch. Against single Gets of the same keys: %sx the keys/s of Gets at 1 in flight, %sx "
    "those of Gets at 16 in flight (target >= 5x: %s)." % (
        kps(med(b_keys)), us(med([batch[pp]["hybrid"]["latency_us"]["p50"] for pp in batch])),
        spread(r1), spread(r16), "yes" if r16 and med(r16) >= 5 else "**no**"))
add("")

beside = [x for x in e2e.get("beside", {}).values()]
add("Get at 1 in flight while a second client reads 100 values of 8 KiB a call (800 KiB "
    "answers) from the same fanoutd, medians:")
add("")
add("| fanoutd | Get p50 | Get p99 | Get throughput |")
add("|---|---|---|---|")
for name in ("hybrid", "inline", "executor"):
    docs = [x[name] for x in beside if name in x]
    add("| %s | %s | %s | %s |" % (names[name], us(med([lat(d, "p50") for d in docs])),
                                   us(med([lat(d, "p99") for d in docs])),
                                   kps(med([d["throughput"] for d in docs]))))
add("")

sw = {}
for line in open(a.switches):
    name, switches, ticks, calls, clk = line.split()
    sw[name] = (int(switches) / int(calls), int(ticks) / int(clk) / int(calls) * 1e6)
add("Context switches and CPU per call (every thread of the process, 5000 calls at 1 in "
    "flight): " + "; ".join(
        "%s %.1f switches, %.0f us CPU" % ("Echo" if n == "echo" else names[n], sw[n][0], sw[n][1])
        for n in ("echo", "hybrid", "inline", "executor") if n in sw) + ".")
add("")

not_l2 = 0
gets = 0
errs = {}
for workload, by_pair in e2e.items():
    for x in by_pair.values():
        for side, doc in x.items():
            if side in ("echo", "echo_thread", "raw"):
                continue
            served = doc.get("served_by", {})
            gets += sum(served.values())
            not_l2 += sum(v for k, v in served.items() if k != "l2")
            for code, n in doc.get("errors_by_code", {}).items():
                errs["%s %s" % (workload, side)] = errs.get("%s %s" % (workload, side), 0) + n
add("Checks: answers not from L2: %d of %d; errors: %s." % (
    not_l2, gets, ", ".join("%s %d" % kv for kv in sorted(errs.items())) or "none"))
add("")

# ---- 3. Pods ------------------------------------------------------------------
pods = json.load(open(a.pods))
add("### 3. Three pods on one slow origin: stampedes and XFetch (fanout-l2-pods-bench)")
add("")
add("Three fanoutd processes share this Redis; the gRPC origin (in the bench process) answers "
    "every key after %.0f ms and counts its fetches. Beside them, three pods configured as "
    "before the fill lease and XFetch (`cache.l2.lease: false`, `cache.xfetch_beta: 0`, "
    "refresh window at 0.8 of the ttl), on keys of their own." % pods["origin_delay_ms"])
add("")
add("| pods | stampede: origin fetches per round, mean (max) | goal | rounds | Get p50 / p99 / max | answered by |")
add("|---|---|---|---|---|---|")
labels = {"subject": "lease + XFetch (default)", "baseline": "no lease, fixed refresh window"}
for key in ("subject", "baseline"):
    if key not in pods:
        continue
    s = pods[key]["stampede"]
    t = s["tiers"]
    add("| %s | %.2f (%d) | %s | %d x %d Gets over %d pods: %s | %s / %s / %.1f ms | "
        "origin %d, L2 %d, L1 %d; errors %d |" % (
            labels[key], s["mean_fetches"], s["max_fetches"],
            "<= 1.2, " + ("met" if s["mean_fetches"] <= 1.2 else "**not met**")
            if key == "subject" else "-",
            s["rounds"], s["gets_per_round"], s["pods"], ", ".join(map(str, s["origin_fetches"])),
            us(s["latency"]["p50_us"]), us(s["latency"]["p99_us"]), s["latency"]["max_us"] / 1000,
            t["origin"], t["l2"], t["l1"], s["errors"]))
add("")
add("| pods | steady: origin fetches per expiry | goal | reads (per s) | not from L1 | took >= half a fill | Get p99 / max |")
add("|---|---|---|---|---|---|---|")
for key in ("subject", "baseline"):
    if key not in pods:
        continue
    s = pods[key]["steady"]
    add("| %s | %.2f (%d fetches in %.1f s, ttl %.0f ms) | %s | %d (%.0f) | %d | %d | %s / %.1f ms |" % (
        labels[key], s["fetches_per_expiry"], s["origin_fetches"], s["seconds"], s["ttl_ms"],
        ("<= 1.2 and no reader waits on the origin: " + (
            "met" if s["fetches_per_expiry"] <= 1.2 and s["not_from_l1"] == 0
            else "**not met**"))
        if key == "subject" else "-",
        s["reads"], s["reads_per_s"], s["not_from_l1"], s["waited"],
        us(s["latency"]["p99_us"]), s["latency"]["max_us"] / 1000))
add("")
add("Steady load: %d callers per pod, each at most one Get of the one hot key a millisecond; "
    "every pod read the key once before the window opened. The ttl is spread by +-10%% per "
    "fill, so fetches per expiry counts fetches per ttl of wall time. A read answered by L1 "
    "did not wait for the origin (a refresh runs in the background), so \"no reader waits on "
    "the origin\" is judged by \"not from L1\" = 0; \"took >= half a fill\" counts reads "
    "slower than half the origin's delay whoever answered them (on a loaded machine, "
    "scheduling stalls)." % (
        pods["subject"]["steady"]["callers"] // max(1, pods["subject"]["steady"]["pods"])))
add("")

# ---- 4. Freeze ----------------------------------------------------------------
fz = json.load(open(a.freeze))
add("### 4. fanoutd while Redis is frozen (SIGSTOP)")
add("")
add("The default fanoutd of part 2 (every Get an L2 hit while Redis answers), %d callers each "
    "at most one Get a millisecond; Redis SIGSTOPped for %.0f ms after 1 s, then SIGCONT. "
    "Target: p99 <= `cache.l2.timeout` + 10 ms = %.0f ms while frozen." % (
        fz["callers"], fz["freeze_ms"], fz["timeout_ms"] + 10))
add("")
add("| phase | Gets | p50 | p99 | max | over %.0f ms | answered by | errors |" % (
    fz["timeout_ms"] + 10))
add("|---|---|---|---|---|---|---|---|")
for phase, label in (("before", "1 s before"), ("frozen_first_s", "frozen, first second"),
                     ("frozen_rest", "frozen, the rest"), ("thawed_first_s", "thawed, first second"),
                     ("thawed_rest", "thawed, the rest")):
    x = fz[phase]
    t = x["tiers"]
    add("| %s | %d | %s | %s | %.1f ms | %d | L2 %d, origin %d | %d |" % (
        label, x["latency"]["count"], us(x["latency"]["p50_us"]), us(x["latency"]["p99_us"]),
        x["latency"]["max_us"] / 1000, x["over_bound"], t["l2"], t["origin"], x["errors"]))
frozen_p99 = max(fz["frozen_first_s"]["latency"]["p99_us"], fz["frozen_rest"]["latency"]["p99_us"])
add("")
add("While frozen, p99 %s against the %.0f ms target: %s. The first L2 answer after SIGCONT "
    "came %.0f ms after it." % (
        us(frozen_p99), fz["timeout_ms"] + 10,
        "met" if frozen_p99 <= (fz["timeout_ms"] + 10) * 1000 else "**not met**",
        fz["first_l2_after_thaw_ms"]))
add("")

generated = "\n".join(out)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_md import rewrite_section  # noqa: E402

rewrite_section(a.results, "l2", generated)
print(generated)
