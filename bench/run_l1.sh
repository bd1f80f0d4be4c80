#!/usr/bin/env bash
# L1 cache results: hit ratios of W-TinyLFU against LRU, Bélády's optimum
# and perfect-knowledge LFU (fanout-sim), and lookup throughput against a
# plain sharded hash map (fanout-l1-bench). Rewrites only the section between
# <!-- BEGIN l1 --> and <!-- END l1 --> of bench/RESULTS.md.
#
#   bash bench/run_l1.sh BUILD_DIR
#
# Builds fanout-sim and fanout-l1-bench in BUILD_DIR if needed. QUICK=1
# shortens the synthetic traces and the timing runs. TRACE_DIR overrides
# where the cache2k traces are read from (rows are skipped if absent).
set -euo pipefail

BUILD_DIR=${1:?usage: bash bench/run_l1.sh BUILD_DIR}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS="$ROOT/bench/RESULTS.md"
TRACE_DIR=${TRACE_DIR:-/work/shared/data/traces}
QUICK=${QUICK:-0}

cmake --build "$BUILD_DIR" -j2 --target fanout-sim fanout-l1-bench >/dev/null
SIM="$BUILD_DIR/bench/fanout-sim"
L1BENCH="$BUILD_DIR/bench/fanout-l1-bench"

grep -q '^<!-- BEGIN l1 -->$' "$RESULTS" && grep -q '^<!-- END l1 -->$' "$RESULTS" || {
  echo "run_l1.sh: $RESULTS lacks the l1 markers" >&2
  exit 1
}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [[ "$QUICK" == 1 ]]; then
  ZIPF_LENGTH=300000
  LOOP_LENGTH=200000
  BENCH_FLAGS=(--benchmark_min_time=0.2)
else
  ZIPF_LENGTH=1000000
  LOOP_LENGTH=500000
  # Repetitions of all benchmarks interleaved at random, so that load from
  # other processes drifting over the run does not favour one column.
  BENCH_FLAGS=(--benchmark_min_time=0.4 --benchmark_repetitions=5
               --benchmark_enable_random_interleaving=true
               --benchmark_report_aggregates_only=true)
fi
POLICIES=wtinylfu,lru,opt,lfu

# sim NAME KIND SIZES ARGS...: one fanout-sim run per size, also with the
# budget split over 16 shards as the cache does; appends
# "name kind size ours ours16 lru opt lfu" rows to $WORK/rows.
sim() {
  local name=$1 kind=$2 sizes=$3
  shift 3
  local size
  for size in ${sizes//,/ }; do
    local args=("$@")
    if [[ "$kind" == scan ]]; then
      # Scans as long as the cache, after every 2x its size of Zipf draws.
      args+=(--scan-length "$size" --scan-period $((2 * size)))
    fi
    "$SIM" "${args[@]}" --sizes "$size" --policies "$POLICIES" >"$WORK/one"
    "$SIM" "${args[@]}" --sizes "$size" --policies wtinylfu --shards 16 |
      sed 's/^wtinylfu /wtinylfu16 /' >>"$WORK/one"
    awk -v name="$name" -v kind="$kind" -v size="$size" '
      { r[$1] = $3 }
      END { print name, kind, size, r["wtinylfu"], r["wtinylfu16"], r["lru"], r["opt"], r["lfu"] }
    ' "$WORK/one" >>"$WORK/rows"
  done
}

: >"$WORK/rows"
for t in web07 web12; do
  f="$TRACE_DIR/cache2k_$t.trace.xz"
  if [[ ! -r "$f" ]]; then
    echo "run_l1.sh: $f not found; skipping" >&2
    continue
  fi
  case $t in
    web07) sizes=500,1000,2000,4000 ;;
    web12) sizes=300,1000,3000 ;;
  esac
  sim "cache2k $t" real "$sizes" --trace "$f" --format u32be
done
for a in 0.8 1.0 1.2; do
  sim "zipf α=$a" zipf 1000,5000,20000 --synthetic "zipf:$a" --keys 100000 --length "$ZIPF_LENGTH"
done
sim "loop of 5000" loop 1000,2500,4000 --synthetic loop --keys 5000 --length "$LOOP_LENGTH"
sim "scan-zipf α=1.0" scan 1000,5000,20000 --synthetic scan-zipf:1.0 --keys 100000 \
  --length "$ZIPF_LENGTH"

"$L1BENCH" "${BENCH_FLAGS[@]}" --benchmark_format=json >"$WORK/bench.json" 2>/dev/null
# "name threads items_per_second" for the medians (or the single runs).
jq -r '.benchmarks[]
       | select((.aggregate_name // "median") == "median")
       | "\(.run_name // .name | sub("/real_time.*$"; "")) \(.threads) \(.items_per_second)"' \
  "$WORK/bench.json" >"$WORK/speed"

{
  echo "Written by \`bash bench/run_l1.sh BUILD_DIR\` on $(date -u +%Y-%m-%d) at" \
    "$(git -C "$ROOT" rev-parse --short HEAD)$([[ "$QUICK" == 1 ]] && echo ' (QUICK=1)')."
  echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')," \
    "shared with other work while measured."
  echo
  echo "### Hit ratio (fanout-sim)"
  echo
  echo "Cache sizes are in entries. *W-TinyLFU* is the cache's own policy code (\`WTinyLfuPolicy\`)"
  echo "with unit weights and one shard; *×16 shards* splits the budget by key hash as \`NewWTinyLfuCache\`"
  echo "does by default. OPT is Bélády's clairvoyant optimum; LFU counts every access of the trace so far."
  echo "Targets: every row ≥ LRU − 1 point; loop ≥ 0.9 × OPT; scan-zipf ≥ LRU + 10 points;"
  echo "plain Zipf ≥ LFU − 3 points. Synthetic traces: 100k keys, $ZIPF_LENGTH accesses, seed 1; loop:"
  echo "$LOOP_LENGTH accesses; scan-zipf: Zipf α=1.0 interrupted, after every 2 × size draws, by a scan"
  echo "of size never-seen keys."
  echo
  echo "| trace | size | W-TinyLFU | ×16 shards | LRU | OPT | LFU | target | met |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|---|"
  awk '
    function pct(x) { return sprintf("%.2f%%", 100 * x) }
    {
      n = NF; kind = $(n-6); size = $(n-5); ours = $(n-4); ours16 = $(n-3)
      lru = $(n-2); opt = $(n-1); lfu = $n
      name = $1; for (i = 2; i <= n - 7; i++) name = name " " $i
      target = "≥ LRU − 1"; met = (ours >= lru - 0.01)
      if (kind == "loop") { target = target ", ≥ 0.9 OPT"; met = met && (ours >= 0.9 * opt) }
      if (kind == "scan") { target = "≥ LRU + 10"; met = (ours >= lru + 0.10) }
      if (kind == "zipf") { target = target ", ≥ LFU − 3"; met = met && (ours >= lfu - 0.03) }
      printf "| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", name, size, pct(ours),
             pct(ours16), pct(lru), pct(opt), pct(lfu), target, met ? "yes" : "**no**"
      if (!met) {
        missed = missed sprintf("\n- %s at %d: W-TinyLFU is %+.1f points from LRU;" \
                                " perfect LFU %+.1f, OPT %+.1f.", name, size, 100 * (ours - lru),
                                100 * (lfu - lru), 100 * (opt - lru))
      }
    }
    END { if (missed != "") printf "\nTargets not met:%s\n", missed }' "$WORK/rows"
  echo
  echo "The cache2k traces web07 and web12 are by headissue GmbH (Jens Wilke), from the cache2k"
  echo "benchmark traces, licensed CC BY 4.0."
  echo
  echo "### Throughput (fanout-l1-bench)"
  echo
  echo "Lookups of Zipf(0.99)-distributed keys (100k keys, 100-byte values), every call copying the entry"
  echo "out. *Read hits*: every key resident. *Mixed*: 90% lookups, 10% inserts, budget for a quarter of"
  echo "the keys (the baseline holds them all and never evicts). Baseline: 16 \`absl::flat_hash_map\`"
  echo "shards behind \`absl::Mutex\`, no policy. Aggregate ops/s over all threads (median of 5 runs"
  echo "interleaved at random with the other columns' runs, unless QUICK); the ratio is per thread"
  echo "against the baseline with the same thread count."
  echo "Target: read hits ≥ 0.5 × baseline."
  echo
  echo "| workload | threads | baseline ops/s | W-TinyLFU ops/s | ratio | LRU ops/s | ratio | target |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|"
  awk '
    function ops(x) { return sprintf("%.2fM", x / 1e6) }
    {
      split($1, p, /[<>]/); rate[p[1], $2, p[2]] = $3
    }
    END {
      n = split("BM_ReadHit 1,BM_ReadHit 2,BM_Mixed 1,BM_Mixed 2", order, ",")
      for (i = 1; i <= n; i++) {
        split(order[i], k, " "); bm = k[1]; th = k[2]
        base = rate[bm, th, "Impl::kBaseline"]; ours = rate[bm, th, "Impl::kWTinyLfu"]
        lru = rate[bm, th, "Impl::kLru"]
        if (base == 0) continue
        label = (bm == "BM_ReadHit") ? "read hits" : "mixed 90/10"
        target = "—"
        if (bm == "BM_ReadHit") target = (ours >= 0.5 * base) ? "met" : "**missed**"
        printf "| %s | %d | %s | %s | %.2f | %s | %.2f | %s |\n", label, th, ops(base), ops(ours),
               ours / base, ops(lru), lru / base, target
      }
    }' "$WORK/speed"
} >"$WORK/section"

python3 "$ROOT/bench/results_md.py" "$RESULTS" l1 <"$WORK/section"
echo "run_l1.sh: updated the l1 section of $RESULTS" >&2
