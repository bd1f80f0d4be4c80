#!/usr/bin/env bash
# The Get suite (`make bench`): fanoutd's Get measured side by side with two
# baselines in the same run, on the same machine, at the same concurrency:
#   - the Echo floor: fanout-echo-server, same gRPC stack and threading, no work;
#   - Redis: redis-benchmark GET against a local redis-server.
# Subject and baseline run in interleaved pairs (A B A B ...) after a warm-up;
# each pair gives a ratio, and the table reports the median ratio and its
# spread (min-max). Absolute figures are for trend only: this machine is
# shared and noisy, ratios are what the targets are about.
#
# Rewrites only the `get` section of bench/RESULTS.md (hand-written notes
# below its notes marker are kept), then runs the other suites' scripts,
# bench/run_l1.sh, bench/run_route.sh, bench/run_l2.sh, bench/run_l3.sh,
# bench/run_outage.sh, bench/run_inval.sh and bench/run_push.sh, if they exist.
#
# usage: bench/run.sh BUILD_DIR
#   QUICK=1   short runs (under 2 minutes for this suite)
#   PAIRS=N   pairs per benchmark (default 5, at least 5 for the table)
#   SUITES=   which suites to run (default "get l1 route l2 l3 outage inval push")
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-build}" && pwd)
quick=${QUICK:-0}
pairs=${PAIRS:-5}
suites=" ${SUITES:-get l1 route l2 l3 outage inval push} "
keys=1000
value_bytes=128
if [ "$quick" = 1 ]; then
  duration=800ms warmup=200ms run_seconds=0.8
else
  duration=3s warmup=1s run_seconds=3
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fanout-bench.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]+"${pids[@]}"}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]+"${pids[@]}"}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench: $*" >&2; }

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

get_suite() {
  bench="$build/bench/fanout-bench"
  echo_server="$build/bench/fanout-echo-server"
  fanoutd="$build/server/fanoutd"
  for bin in "$bench" "$echo_server" "$fanoutd"; do
    if [ ! -x "$bin" ]; then
      echo "bench: $bin is missing; build first (make build BUILD=$1)" >&2
      exit 2
    fi
  done
  for tool in redis-server redis-benchmark redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (make deps)" >&2; exit 2; }
  done

  # --- The subject: fanoutd on a file origin, every key an L1 hit after warm-up.
  cached_origin "$tmp" "$keys" "$value_bytes"
  value=$(head -c "$value_bytes" /dev/zero | tr '\0' 'v')  # the same values, for Redis
  "$fanoutd" --config "$tmp/fanoutd.yaml" 2> "$tmp/fanoutd.log" &
  pids+=($!)
  "$echo_server" --listen 127.0.0.1:0 --reply_bytes "$value_bytes" 2> "$tmp/echo.log" &
  pids+=($!)
  start_redis "$tmp/redis.log"
  fanoutd_addr=$(address_from "$tmp/fanoutd.log")
  echo_addr=$(address_from "$tmp/echo.log")
  # redis-benchmark -r K reads "key:" + a 12-digit index below K: store those.
  for ((i = 0; i < keys; i++)); do
    k=$(printf 'key:%012d' "$i")
    printf '*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n' "${#k}" "$k" "$value_bytes" "$value"
  done | redis-cli -p "$redis_port" --pipe > /dev/null
  log "fanoutd $fanoutd_addr, echo $echo_addr, redis 127.0.0.1:$redis_port; $pairs pairs of ${duration} (+${warmup} warm-up)"

  results="$tmp/results.txt"
  : > "$results"

  # fanout-bench WORKLOAD SIDE PAIR ARGS...: one run, its JSON appended to $results.
  fb() {
    local workload=$1 side=$2 pair=$3 out rc=0
    shift 3
    out=$("$bench" --json --duration "$duration" --warmup "$warmup" "$@") || rc=$?
    if [ "$rc" -gt 1 ] || [ -z "$out" ]; then
      log "fanout-bench $* failed (exit $rc)"
      exit 1
    fi
    echo "$workload $side $pair $out" >> "$results"
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.0f/s p99 %.0fus%s" % (d["throughput"], d["latency_us"]["p99"], " errors %d" % d["errors"] if d["errors"] else ""))' "$out"
  }

  # redis-benchmark at 50 clients; the same JSON shape as fanout-bench's.
  redis_n=0
  rb() {
    local workload=$1 side=$2 pair=$3 n=$4 csv
    redis-cli -p "$redis_port" config resetstat > /dev/null
    csv=$(redis-benchmark -h 127.0.0.1 -p "$redis_port" -t get -c 50 -n "$n" -r "$keys" \
      -d "$value_bytes" --csv | grep '^"GET"')
    local misses
    misses=$(redis-cli -p "$redis_port" info stats | sed -n 's/^keyspace_misses:\([0-9]*\).*/\1/p')
    local out
    out=$(python3 -c 'import csv,json,sys
row = next(csv.reader([sys.argv[1]]))
print(json.dumps({"throughput": float(row[1]), "errors": 0, "ok": int(sys.argv[2]),
                  "misses": int(sys.argv[3]),
                  "latency_us": {"p50": float(row[4]) * 1000, "p99": float(row[6]) * 1000}}))' \
      "$csv" "$n" "$misses")
    echo "$workload $side $pair $out" >> "$results"
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.0f/s p99 %.0fus" % (d["throughput"], d["latency_us"]["p99"]))' "$out"
  }

  start=$(date +%s)

  # Warm-up: fills L1 with every key (from then on each Get is an L1 hit), and
  # sizes the Redis runs to last as long as the others.
  log "warm-up"
  "$bench" --target "$fanoutd_addr" --rpc get --keys "$keys" --concurrency 16 --channels 4 \
    --duration 2s --warmup 0s > /dev/null
  "$bench" --target "$echo_addr" --rpc echo --concurrency 16 --channels 4 \
    --duration 2s --warmup 0s > /dev/null
  warm_rps=$(redis-benchmark -h 127.0.0.1 -p "$redis_port" -t get -c 50 -n 50000 -r "$keys" --csv |
    grep '^"GET"' | cut -d, -f2 | tr -d '"')
  redis_n=$(python3 -c "print(max(10000, int(float('$warm_rps') * $run_seconds)))")

  # Closed loop: Get against Echo at 1, 16 and 64 in flight.
  for c in 1 16 64; do
    channels=$((c < 4 ? c : 4))
    for ((p = 1; p <= pairs; p++)); do
      a=$(fb "c$c" subject "$p" --target "$fanoutd_addr" --rpc get --keys "$keys" \
        --concurrency "$c" --channels "$channels")
      b=$(fb "c$c" baseline "$p" --target "$echo_addr" --rpc echo --concurrency "$c" \
        --channels "$channels")
      log "closed $c in flight, pair $p/$pairs: get $a | echo $b"
    done
  done

  # Closed loop: Get at 50 in flight against Redis GET with 50 clients.
  for ((p = 1; p <= pairs; p++)); do
    a=$(fb redis subject "$p" --target "$fanoutd_addr" --rpc get --keys "$keys" \
      --concurrency 50 --channels 4)
    b=$(rb redis baseline "$p" "$redis_n")
    log "closed 50 in flight, pair $p/$pairs: get $a | redis $b"
  done

  # Open loop at 50% and 80% of Get's open-loop capacity: what Get completes
  # when offered twice its closed-loop capacity with at most 64 in flight.
  # (Closed loops batch better: calls start on gRPC's threads as answers
  # arrive; in open loop every call starts from the sending thread.)
  median_of() {
    python3 -c 'import json,statistics,sys
print(round(statistics.median(json.loads(l.split(" ", 3)[3])["throughput"]
      for l in open(sys.argv[1]) if l.startswith(sys.argv[2] + " "))))' "$results" "$1"
  }
  closed_capacity=$(median_of "c64 subject")
  for ((p = 1; p <= 3; p++)); do
    a=$(fb capacity subject "$p" --target "$fanoutd_addr" --rpc get --keys "$keys" \
      --mode open --rate $((2 * closed_capacity)) --max_in_flight 64 --channels 4 --seed "$p")
    log "open-loop capacity, run $p/3: get $a"
  done
  capacity=$(median_of "capacity subject")
  for pct in 50 80; do
    rate=$(python3 -c "print(round($capacity * $pct / 100))")
    for ((p = 1; p <= pairs; p++)); do
      a=$(fb "open$pct" subject "$p" --target "$fanoutd_addr" --rpc get --keys "$keys" \
        --mode open --rate "$rate" --channels 4 --seed "$p")
      b=$(fb "open$pct" baseline "$p" --target "$echo_addr" --rpc echo --mode open \
        --rate "$rate" --channels 4 --seed "$p")
      log "open loop at $pct% of capacity ($rate/s), pair $p/$pairs: get $a | echo $b"
    done
  done
  elapsed=$(($(date +%s) - start))
  log "measured in ${elapsed}s"

  # --- The table, written into the get section of RESULTS.md.
  cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
  grpc_version=$(dpkg-query -W -f='${Version}' libgrpc++-dev 2>/dev/null || echo unknown)
  redis_version=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
  revision=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)
  # The results file is rewritten by the suites themselves: not a change.
  if [ -n "$(git -C "$src" status --porcelain --untracked-files=no -- . \
    ':(exclude)bench/RESULTS.md' 2>/dev/null)" ]; then
    revision="$revision+changes"
  fi
  machine="$(nproc) cores, ${cpu:-unknown CPU}, $(uname -r); gRPC $grpc_version, Redis $redis_version; $(date -u '+%Y-%m-%d %H:%M UTC'); revision $revision"
  mode=$([ "$quick" = 1 ] && echo "QUICK=1" || echo "full")

  python3 - "$results" "$here/RESULTS.md" "$machine" "$mode" "$pairs" "$duration" "$warmup" \
    "$elapsed" "$capacity" "$closed_capacity" <<'PY'
import json, os, statistics, sys

results, path, machine, mode, pairs, duration, warmup, elapsed, capacity, closed_capacity = \
    sys.argv[1:]
runs = {}
for line in open(results):
    workload, side, pair, doc = line.split(" ", 3)
    runs.setdefault(workload, {}).setdefault(int(pair), {})[side] = json.loads(doc)

def metric(doc, name):
    return doc["throughput"] if name == "throughput" else doc["latency_us"][name]

def fmt_abs(name, v):
    return "%.1fk/s" % (v / 1000) if name == "throughput" else "%.0f us" % v

rows = []
def row(label, baseline, workload, name, op, target):
    pairs_ = [p for p in runs.get(workload, {}).values() if "subject" in p and "baseline" in p]
    if not pairs_:
        return
    subj = [metric(p["subject"], name) for p in pairs_]
    base = [metric(p["baseline"], name) for p in pairs_]
    ratios = [s / b if b else float("inf") for s, b in zip(subj, base)]
    med = statistics.median(ratios)
    if target is None:
        tgt, met = "-", "-"
    else:
        tgt = "%s %.1fx" % (op, target)
        met = "yes" if (med >= target if op == ">=" else med <= target) else "**no**"
    pretty = {"throughput": "throughput", "p50": "p50", "p99": "p99"}[name]
    rows.append("| %s | %s | %s | %s | %s | %.2f (%.2f-%.2f) | %s | %s |" % (
        label, baseline, pretty, fmt_abs(name, statistics.median(subj)),
        fmt_abs(name, statistics.median(base)), med, min(ratios), max(ratios), tgt, met))

for c in (1, 16, 64):
    label = "Get, L1 hit, %d in flight" % c
    row(label, "Echo, %d in flight" % c, "c%d" % c, "throughput", ">=", 0.9)
    row(label, "Echo, %d in flight" % c, "c%d" % c, "p99", "<=", 1.2)
row("Get, L1 hit, 50 in flight", "redis-benchmark GET, 50 clients", "redis", "throughput", ">=", 1.0)
row("Get, L1 hit, 50 in flight", "redis-benchmark GET, 50 clients", "redis", "p99", None, None)
cap = float(capacity)
for pct in (50, 80):
    label = "Get, open loop, %d%% of capacity (%.1fk/s)" % (pct, cap * pct / 100 / 1000)
    row(label, "Echo at the same rate", "open%d" % pct, "p99", "<=", 1.3)
    row(label, "Echo at the same rate", "open%d" % pct, "p50", None, None)

# What every measured call did: errors, and whether each Get was an L1 hit.
errors, not_l1, gets = {}, 0, 0
lag = []
for workload, by_pair in runs.items():
    for p in by_pair.values():
        for side, doc in p.items():
            for code, n in doc.get("errors_by_code", {}).items():
                key = "%s %s" % (workload, side)
                errors[key] = errors.get(key, 0) + n
            if side == "subject":
                served = doc.get("served_by", {})
                gets += doc.get("ok", 0)
                not_l1 += doc.get("ok", 0) - served.get("l1", 0)
            if doc.get("mode") == "open" and workload != "capacity":
                lag.append(doc.get("late_sends", 0) / max(1, doc.get("calls", 1)))
redis_misses = sum(p["baseline"].get("misses", 0) for p in runs.get("redis", {}).values())

out = []
out.append("## Get (`make bench`, bench/run.sh)")
out.append("")
out.append("Machine: %s. Mode: %s, %s pairs per benchmark, each run %s measured after %s "
           "warm-up; suite took %ss." % (machine, mode, pairs, duration, warmup, elapsed))
out.append("")
out.append("| benchmark | compared with | metric | fanoutd | baseline | ratio: median (min-max) | target | met? |")
out.append("|---|---|---|---|---|---|---|---|")
out.extend(rows)
out.append("")
out.append("Ratios are fanoutd / baseline per pair (subject and baseline run back to back); "
           "throughput counts successful calls only. fanoutd and baseline columns are medians, "
           "for trend only. Open-loop capacity: the median of 3 runs offering Get twice its "
           "closed-loop capacity (%.1fk/s, its median throughput at 64 in flight) with at most "
           "64 in flight; closed loops start calls on gRPC's threads as answers arrive and batch "
           "better than one sending thread." % (float(closed_capacity) / 1000))
out.append("")
checks = []
checks.append("measured Gets not answered by L1: %d of %d" % (not_l1, gets))
checks.append("Redis GET misses: %d" % redis_misses)
checks.append("errors: " + (", ".join("%s %d" % kv for kv in sorted(errors.items())) or "none"))
if lag:
    checks.append("open loop sends later than 1ms: at most %.2f%% of a run" % (100 * max(lag)))
out.append("Checks: " + "; ".join(checks) + ".")

generated = "\n".join(out)
sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
from results_md import rewrite_section
rewrite_section(path, "get", generated)
print(generated)
PY
}

if [[ "$suites" == *" get "* ]]; then get_suite; fi

# --- The other suites, when present.
status=0
for suite in l1 route l2 l3 outage inval push; do
  if [[ "$suites" == *" $suite "* && -f "$here/run_$suite.sh" ]]; then
    suite=run_$suite.sh
    log "running bench/$suite"
    bash "$here/$suite" "$build" || { log "bench/$suite failed"; status=1; }
  fi
done
exit "$status"
