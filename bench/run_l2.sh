#!/usr/bin/env bash
# The L2 suite: the Redis tier (RedisTier, through fanout's async client)
# against raw hiredis on the same throwaway redis-server, in one process and
# run, in interleaved pairs (fanout-l2-bench); then lookups while that Redis
# is frozen with SIGSTOP. Rewrites only the section between <!-- BEGIN l2 -->
# and <!-- END l2 --> of bench/RESULTS.md (notes below its notes marker are
# kept).
#
#   bash bench/run_l2.sh BUILD_DIR
#
# QUICK=1 shortens the runs; PAIRS=N sets the pairs per benchmark (default 5).
set -euo pipefail

build=$(cd "${1:?usage: bash bench/run_l2.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
results="$root/bench/RESULTS.md"
quick=${QUICK:-0}
pairs=${PAIRS:-5}
if [ "$quick" = 1 ]; then duration=300ms freeze=2s; else duration=1s freeze=3s; fi

cmake --build "$build" -j2 --target fanout-l2-bench >/dev/null
bench="$build/bench/fanout-l2-bench"
command -v redis-server >/dev/null || { echo "run_l2.sh: redis-server is missing (make deps)" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fanout-l2.XXXXXX")
redis_pid=
cleanup() {
  if [ -n "$redis_pid" ]; then
    kill -CONT "$redis_pid" 2>/dev/null || true
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning \
  > "$tmp/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do
  [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done

start=$(date +%s)
"$bench" --redis "127.0.0.1:$port" --redis_pid "$redis_pid" --pairs "$pairs" \
  --duration "$duration" --freeze "$freeze" > "$tmp/l2.json"
elapsed=$(($(date +%s) - start))

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
redis_version=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
hiredis_version=$(dpkg-query -W -f='${Version}' libhiredis-dev 2>/dev/null || echo unknown)
revision=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no -- . \
  ':(exclude)bench/RESULTS.md' 2>/dev/null)" ]; then
  revision="$revision+changes"
fi
machine="$(nproc) cores, ${cpu:-unknown CPU}, $(uname -r), shared with other work while measured; Redis $redis_version, hiredis $hiredis_version; $(date -u '+%Y-%m-%d %H:%M UTC'); revision $revision"
mode=$([ "$quick" = 1 ] && echo "QUICK=1" || echo "full")

python3 - "$tmp/l2.json" "$results" "$machine" "$mode" "$pairs" "$duration" "$freeze" "$elapsed" <<'PY'
import json, os, statistics, sys

data_path, results, machine, mode, pairs, duration, freeze, elapsed = sys.argv[1:]
data = json.load(open(data_path))
runs = {}
for r in data["runs"]:
    runs.setdefault(r["bench"], {}).setdefault(r["pair"], {})[r["side"]] = r

def fmt(metric, v):
    if metric == "throughput":
        return "%.1fk/s" % (v / 1000)
    return "%.0f us" % v

rows = []
def row(label, baseline, bench, subject, base, metric, note="-"):
    pairs_ = [p for p in runs.get(bench, {}).values() if subject in p and base in p]
    if not pairs_:
        return
    s = [p[subject][metric] for p in pairs_]
    b = [p[base][metric] for p in pairs_]
    ratios = [x / y if y else float("inf") for x, y in zip(s, b)]
    rows.append("| %s | %s | %s | %s | %s | %.2f (%.2f-%.2f) | %s |" % (
        label, baseline, {"throughput": "throughput", "p50_us": "p50", "p99_us": "p99"}[metric],
        fmt(metric, statistics.median(s)), fmt(metric, statistics.median(b)),
        statistics.median(ratios), min(ratios), max(ratios), note))

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

# LookupMany's keys/s against Lookup's calls/s at 1 in flight: each pair's
# batch run against the same pair's c1 run.
cross = []
for p, sides in runs.get("batch", {}).items():
    c1 = runs.get("c1", {}).get(p, {}).get("tier")
    if "tier" in sides and c1:
        cross.append(sides["tier"]["throughput"] / c1["throughput"])

errors = {}
for bench, by_pair in runs.items():
    for sides in by_pair.values():
        for side, r in sides.items():
            if r["errors"]:
                errors["%s %s" % (bench, side)] = errors.get("%s %s" % (bench, side), 0) + r["errors"]

out = []
out.append("## L2: the Redis tier (bench/run_l2.sh)")
out.append("")
out.append("Machine: %s. Mode: %s, %s pairs per benchmark, each run %s; suite took %ss." % (
    machine, mode, pairs, duration, elapsed))
out.append("")
out.append("`fanout-l2-bench` measures `RedisTier` (fanout's async client: a caller thread hands the "
           "call to the I/O thread, the answer comes back on it) and raw hiredis (a blocking "
           "context on the calling thread) on one throwaway redis-server, in one process, run "
           "after run (tier, raw, tier, raw, ...). 1000 keys, 128-byte values (the tier reads its "
           "54-byte envelope around each). Ratios are tier / baseline per pair; the columns are "
           "medians. Command timeout 50 ms, as configured by default.")
out.append("")
out.append("| benchmark | compared with | metric | RedisTier | baseline | ratio: median (min-max) | note |")
out.append("|---|---|---|---|---|---|---|")
out.extend(rows)
out.append("")
if cross:
    out.append("LookupMany of 100 keys against Lookups one at a time (keys/s over calls/s at 1 in "
               "flight, same pair): %.1fx (%.1f-%.1fx)." % (
                   statistics.median(cross), min(cross), max(cross)))
    out.append("")
out.append("Errors: " + (", ".join("%s %d" % kv for kv in sorted(errors.items())) or "none") + ".")
out.append("")

f = data.get("freeze")
if f:
    out.append("### Lookups while Redis is frozen (SIGSTOP)")
    out.append("")
    out.append("%d callers, each making at most one Lookup a millisecond; Redis SIGSTOPped for "
               "%.0f ms, then SIGCONT. A frozen Redis accepts TCP connections and never answers." % (
                   f["callers"], f["freeze_ms"]))
    out.append("")
    out.append("| phase | calls | hits | p50 | p99 | max |")
    out.append("|---|---|---|---|---|---|")
    b, d, a = f["before"], f["during"], f["after"]
    out.append("| 1 s before | %d | - | %.0f us | %.0f us | - |" % (b["calls"], b["p50_us"], b["p99_us"]))
    out.append("| frozen | %d | %d | %.0f us | %.0f us | %.1f ms |" % (
        d["calls"], d["ok"], d["p50_us"], d["p99_us"], d["max_us"] / 1000))
    out.append("| 3 s after SIGCONT | %d | - | %.0f us | %.0f us | - |" % (
        a["calls"], a["p50_us"], a["p99_us"]))
    out.append("")
    out.append("While frozen, %d calls took longer than the %.0f ms timeout (the slowest %.1f ms); "
               "the circuit opened %.0f ms after SIGSTOP; the first hit came %.0f ms after "
               "SIGCONT (target: bounded by the timeout while frozen; used again within 5 s)." % (
                   d["over_timeout"], f["timeout_ms"], d["max_us"] / 1000,
                   f["circuit_open_after_ms"], f["first_hit_after_thaw_ms"]))
    out.append("")

generated = "\n".join(out)
sys.path.insert(0, os.path.dirname(os.path.abspath(results)))
from results_md import rewrite_section
rewrite_section(results, "l2", generated)
print(generated)
PY
echo "run_l2.sh: updated the l2 section of $results" >&2
