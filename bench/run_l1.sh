#!/usr/bin/env bash
# L1 cache results: hit ratios of W-TinyLFU against LRU, Bélády's optimum
# and perfect-knowledge LFU (fanout-sim), lookup throughput against a plain
# sharded hash map, and what an entry costs in memory (fanout-l1-bench).
# Rewrites only the section between <!-- BEGIN l1 --> and <!-- END l1 --> of
# bench/RESULTS.md.
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
  SHIFT_SCALE=2
  BENCH_FLAGS=(--benchmark_min_time=0.2)
else
  ZIPF_LENGTH=1000000
  LOOP_LENGTH=500000
  SHIFT_SCALE=1
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
    web07) sizes=500,1000,2000,4000,8000 ;;
    web12) sizes=300,1000,3000,8000 ;;
  esac
  sim "cache2k $t" real "$sizes" --trace "$f" --format u32be
done
for a in 0.8 1.0 1.2; do
  sim "zipf α=$a" zipf 1000,5000,20000 --synthetic "zipf:$a" --keys 100000 --length "$ZIPF_LENGTH"
done
sim "loop of 5000" loop 1000,2500,4000 --synthetic loop --keys 5000 --length "$LOOP_LENGTH"
sim "scan-zipf α=1.0" scan 1000,5000,20000 --synthetic scan-zipf:1.0 --keys 100000 \
  --length "$ZIPF_LENGTH"
# Popularity that moves (QUICK halves the phases, not their number).
sim "rotating hot set" shift 500,1000,2000,4000,8000,16000 --synthetic shift-zipf:1.0 \
  --keys 25000 --phase-length $((125000 / SHIFT_SCALE)) --length $((500000 / SHIFT_SCALE)) --seed 11
sim "half rotating α=0.8" shift 500,2000,8000,16000 --synthetic shift-zipf:0.8 --keys 50000 \
  --shift-fraction 0.5 --phase-length $((150000 / SHIFT_SCALE)) --length $((600000 / SHIFT_SCALE)) \
  --seed 7
sim "fast rotating" shift 500,2000,8000,16000 --synthetic shift-zipf:1.0 --keys 10000 \
  --phase-length $((30000 / SHIFT_SCALE)) --length $((300000 / SHIFT_SCALE)) --seed 3
sim "flat fast rotating α=0.67" shift 400,800,1600 --synthetic shift-zipf:0.67 --keys 2000 \
  --phase-length $((30000 / SHIFT_SCALE)) --length $((240000 / SHIFT_SCALE)) --seed 1
# Recency, where frequency tells nothing.
sim "recency" recency 500,1000,2000,4000,8000,16000 --synthetic recency --new-fraction 0.25 \
  --mean-depth 80 --length "$ZIPF_LENGTH" --seed 5
sim "deep recency" recency 500,2000,8000,16000 --synthetic recency --new-fraction 0.1 \
  --mean-depth 400 --length "$ZIPF_LENGTH" --seed 5
sim "recency + zipf α=1.0" mix 500,2000,8000,16000 --synthetic mix:1.0 --keys 100000 \
  --mix-fraction 0.5 --length "$ZIPF_LENGTH" --seed 1

"$L1BENCH" "${BENCH_FLAGS[@]}" --benchmark_format=json >"$WORK/bench.json" 2>/dev/null
"$L1BENCH" --entry_memory >"$WORK/memory"
# Instructions per operation (callgrind), which load on the machine does not move.
: >"$WORK/instructions"
if command -v valgrind >/dev/null; then
  for workload in read mixed; do
    for impl in baseline wtinylfu lru; do
      valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null \
        "$L1BENCH" --count_ops="$workload" --impl="$impl" 2>&1 |
        awk -v w="$workload" -v i="$impl" '/Collected/ { print w, i, $NF / 200000 }' \
          >>"$WORK/instructions"
    done
  done
else
  echo "run_l1.sh: valgrind not found; skipping the instruction counts" >&2
fi
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
  echo "does by default (the shards share one window sizer). OPT is Bélády's clairvoyant optimum; LFU"
  echo "counts every access of the trace so far."
  echo "Targets: every row ≥ LRU − 1 point, and no row more than 0.5 point below the same trace's"
  echo "row at a smaller size; loop ≥ 0.9 × OPT; scan-zipf ≥ LRU + 9 points; plain Zipf ≥ LFU − 2"
  echo "points. Synthetic traces: Zipf over 100k keys, $ZIPF_LENGTH accesses, seed 1; loop: $LOOP_LENGTH"
  echo "accesses; scan-zipf: Zipf α=1.0 interrupted, after every 2 × size draws, by a scan of size"
  echo "never-seen keys. *Rotating*: \`shift-zipf\` draws Zipf ranks whose keys are replaced every phase"
  echo "(all of them, or half for *half rotating*): 25k keys per $((125000 / SHIFT_SCALE)) draws, 4 phases,"
  echo "seed 11; α=0.8, 50k keys, half every $((150000 / SHIFT_SCALE)), seed 7; 10k keys every"
  echo "$((30000 / SHIFT_SCALE)), seed 3; α=0.67, 2k keys every $((30000 / SHIFT_SCALE)), seed 1."
  echo "*Recency*: the LRU stack model (\`recency\`), a new key with probability 0.25, else the key at a"
  echo "geometric stack depth of mean 80 (deep: 0.1 and 400), seed 5; *recency + zipf* draws half its"
  echo "accesses each way, seed 1."
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
      if (kind == "scan") { target = "≥ LRU + 9"; met = (ours >= lru + 0.09) }
      if (kind == "zipf") { target = target ", ≥ LFU − 2"; met = met && (ours >= lfu - 0.02) }
      monotone = !(name in last) || ours >= last[name] - 0.005
      if (name in last) target = target ", monotone"
      met = met && monotone
      printf "| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", name, size, pct(ours),
             pct(ours16), pct(lru), pct(opt), pct(lfu), target, met ? "yes" : "**no**"
      if (!met) {
        missed = missed sprintf("\n- %s at %d: W-TinyLFU is %+.1f points from LRU%s;" \
                                " perfect LFU %+.1f, OPT %+.1f.", name, size, 100 * (ours - lru),
                                monotone ? "" : sprintf(" and %+.1f from the size before",
                                                        100 * (ours - last[name])),
                                100 * (lfu - lru), 100 * (opt - lru))
      }
      last[name] = ours
    }
    END { if (missed != "") printf "\nTargets not met:%s\n", missed }' "$WORK/rows"
  echo
  echo "The cache2k traces web07 and web12 are by headissue GmbH (Jens Wilke), from the cache2k"
  echo "benchmark traces, licensed CC BY 4.0."
  echo
  echo "### L1 memory (fanout-l1-bench --entry_memory)"
  echo
  echo "What an entry takes from the heap, per entry: a million entries (250k for 1000-byte values) with"
  echo "26-byte composite keys inserted into an empty cache; *heap* is the growth of malloc's bytes in use"
  echo "(\`mallinfo2\`), *RSS* that of the resident set, *charged* what \`L1Stats::bytes\` counts (\`ChargeOf\`:"
  echo "key and value buffers plus 336 bytes). The index and the policy's tables grow in powers of two, so"
  echo "the overhead moves by some 20 bytes an entry with the entry count."
  echo
  echo "| engine | value bytes | entries | heap B/entry | RSS B/entry | charged B/entry | charged / heap |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  awk '$1 == "memory" {
    printf "| %s | %d | %d | %.0f | %.0f | %.0f | %.2f |\n", $2, $4, $5, $6, $7, $8, $8 / $6
  }' "$WORK/memory"
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
  if [[ -s "$WORK/instructions" ]]; then
    echo
    echo "The same per operation in instructions, counted by callgrind over 200k operations of one thread"
    echo "after every key was inserted once and 200k operations of warm-up (\`valgrind --tool=callgrind"
    echo "--instr-atstart=no fanout-l1-bench --count_ops=read|mixed --impl=baseline|wtinylfu|lru\`):"
    echo "a measure of the work that other load on the machine does not move. *Speed* is the baseline's"
    echo "count over the engine's."
    echo
    echo "| workload | baseline instr/op | W-TinyLFU instr/op | speed | LRU instr/op | speed |"
    echo "|---|---:|---:|---:|---:|---:|"
    awk '
      { n[$1, $2] = $3 }
      END {
        split("read mixed", order, " ")
        for (k = 1; k <= 2; k++) {
          w = order[k]; base = n[w, "baseline"]
          if (base == 0) continue
          printf "| %s | %.0f | %.0f | %.2f | %.0f | %.2f |\n",
                 w == "read" ? "read hits" : "mixed 90/10", base, n[w, "wtinylfu"],
                 base / n[w, "wtinylfu"], n[w, "lru"], base / n[w, "lru"]
        }
      }' "$WORK/instructions"
  fi
} >"$WORK/section"

python3 "$ROOT/bench/results_md.py" "$RESULTS" l1 <"$WORK/section"
echo "run_l1.sh: updated the l1 section of $RESULTS" >&2
