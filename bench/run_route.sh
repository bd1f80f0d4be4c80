#!/usr/bin/env bash
# The Route suite: fanoutd's Route against fake backends (fanout-fake-backend),
# every process on 127.0.0.1, all in one run:
#   1. fan-out patterns one request at a time (ALL waits for the slowest
#      branch, FIRST_SUCCESS returns with the fastest and cancels the others,
#      a failing branch ends ALL at once, FALLBACK moves on in a few ms), and
#      fanout's overhead at 100 and 1000 Route calls in flight (closed loops,
#      and an open loop at the same average), side by side with the same load
#      sent straight to a backend;
#   2. throughput at 40 in flight against its ceiling, and 2000 calls in flight
#      with fanoutd's thread count;
#   3. least_loaded (cost from payload size) against round_robin and least
#      connections on capacity-1 backends whose service time grows with the
#      payload, interleaved;
#   4. adaptive against racing every backend (first_success): backend calls
#      per request, counted at the backends, and latency.
# Rewrites only the `route` section of bench/RESULTS.md (hand-written notes
# below its notes marker are kept).
#
# Every figure and the verdicts are computed by bench/route_report.py from the
# calls fanout-bench recorded (--calls_out) and the fake backends' counters.
#
# usage: bench/run_route.sh BUILD_DIR
#   QUICK=1        short runs (under a minute and a half instead of five)
#   RESULTS_MD=F   write the section into F instead of bench/RESULTS.md
#   KEEP_TMP=1     keep the raw measurements (every call of every run)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-build}" && pwd)
quick=${QUICK:-0}

bench="$build/bench/fanout-bench"
fanoutd="$build/server/fanoutd"
fake="$build/tests/router/fanout-fake-backend"
for bin in "$bench" "$fanoutd" "$fake"; do
  if [ ! -x "$bin" ]; then
    echo "route: $bin is missing; build fanoutd fanout-bench fanout-fake-backend in $1" >&2
    exit 2
  fi
done
command -v python3 >/dev/null || { echo "route: python3 is missing" >&2; exit 2; }
results_md=${RESULTS_MD:-$here/RESULTS.md}
grep -q '^<!-- BEGIN route -->$' "$results_md" && grep -q '^<!-- END route -->$' "$results_md" || {
  echo "route: $results_md lacks the route markers" >&2
  exit 2
}

if [ "$quick" = 1 ]; then
  pattern_n=6 failing_n=12
  overhead_pairs=1 overhead_run=2s overhead_warm=500ms
  load_run=4 load_warm=1s
  many_run=3
  token_rounds=1
  adaptive_learn=2s adaptive_run=2s adaptive_rounds=1
else
  pattern_n=12 failing_n=30
  overhead_pairs=2 overhead_run=3s overhead_warm=1s
  load_run=10 load_warm=1s
  many_run=6
  token_rounds=4
  adaptive_learn=3s adaptive_run=5s adaptive_rounds=2
fi

log() { echo "route: $*" >&2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fanout-route.XXXXXX")
mkdir -p "$tmp/calls"
pids=()
cleanup() {
  for pid in "${pids[@]+"${pids[@]}"}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]+"${pids[@]}"}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "measurements kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# --- Fake backends, each its own process on a port it picks.
declare -A addr pid_of
names=()
backend() {
  local name=$1
  shift
  "$fake" --listen=127.0.0.1:0 --name="$name" "$@" > "$tmp/$name.log" 2>&1 &
  pids+=($!)
  pid_of[$name]=$!
  names+=("$name")
}
# 1. The seed's services: a 300ms blocking call, a fast file read, a compute
#    step, caches and a database; one that fails 30% of the time, one always.
backend block --delay=300ms
backend block2 --delay=300ms
backend file --delay=5ms
backend compute --delay=10ms
backend cache --delay=150ms
backend cache1 --delay=500ms
backend cache2 --delay=200ms
backend database --delay=800ms
backend flaky --delay=5ms --fail_prob=0.3 --seed=7
backend broken --delay=1ms --fail_prob=1
# 3. Capacity-1 workers whose service time is proportional to the request's
#    bytes (10ms per KiB, +-20%), never to the fanout-cost header.
for i in 1 2 3; do backend "tok$i" --capacity=1 --delay_per_kb=10ms --jitter_ratio=0.2 --seed="$i"; done
# 4. One backend consistently fastest.
backend fast --delay=20ms --jitter=4ms --seed=11
backend mid --delay=60ms --jitter=10ms --seed=12
backend slow --delay=100ms --jitter=10ms --seed=13
for name in "${names[@]}"; do addr[$name]=$(address_from "$tmp/$name.log"); done

stats() { "$fake" --stats="${addr[$1]}"; }

route() {  # NAME POLICY TIMEOUT BACKEND... [-- EXTRA YAML LINES]
  local name=$1 policy=$2 timeout=$3
  shift 3
  printf '  %s:\n    policy: %s\n    method: /bench.Backend/Call\n    timeout: %s\n    backends:\n' \
    "$name" "$policy" "$timeout"
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    printf '      - {address: %s, name: %s}\n' "${addr[$1]}" "$1"
    shift
  done
  [ $# -gt 0 ] && shift
  for line in "$@"; do printf '    %s\n' "$line"; done
}
{
  cat <<EOF
server:
  listen: 127.0.0.1:0
  reflection: false
log:
  level: warning
limits:
  max_in_flight: 10000
  request_timeout: 120s
origin:
  type: file
  file:
    root: $tmp
routes:
EOF
  route aggregate all 5s block file
  route first_success first_success 5s cache1 cache2 database
  route aggregate_failing all 5s block flaky
  # Ejection off: every call shows the pattern (with it, "broken" would be
  # skipped after 5 failures in a row).
  route fallback fallback 5s broken file block -- 'ejection: {consecutive_failures: 0}'
  route multi_aggregate all 5s block file compute cache
  route overhead all 5s block block2
  route tok_least_loaded least_loaded 120s tok1 tok2 tok3
  route tok_round_robin round_robin 120s tok1 tok2 tok3
  route tok_least_conn least_loaded 120s tok1 tok2 tok3
  route adaptive adaptive 5s fast mid slow
  route race first_success 5s fast mid slow
} > "$tmp/fanoutd.yaml"
"$fanoutd" --config "$tmp/fanoutd.yaml" --log_level info 2> "$tmp/fanoutd.log" &
fanoutd_pid=$!
pids+=("$fanoutd_pid")
target=$(address_from "$tmp/fanoutd.log")
log "fanoutd $target (pid $fanoutd_pid), ${#names[@]} fake backends"

results="$tmp/results.txt"
: > "$results"
run_id=0

# fb LABEL ARGS...: one fanout-bench run; its JSON goes to $results as
# "run ID LABEL JSON" and its calls to $tmp/calls/ID. Sets $last_id.
fb() {
  local label=$1 out rc=0
  shift
  run_id=$((run_id + 1))
  out=$("$bench" --json --calls_out "$tmp/calls/$run_id" "$@") || rc=$?
  if [ "$rc" -gt 1 ] || [ -z "$out" ]; then
    log "fanout-bench $* failed (exit $rc)"
    exit 1
  fi
  echo "run $run_id $label $out" >> "$results"
  last_id=$run_id
}

# counters ID PHASE NAME...: the named backends' counters into $results.
counters() {
  local id=$1 phase=$2
  shift 2
  local name line
  for name in "$@"; do
    line=$(stats "$name")
    echo "counters $id $phase $name $line" >> "$results"
  done
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/${1:-$fanoutd_pid}/stat"; }
# "busy,total" jiffies of the whole machine (idle and iowait are not busy).
machine_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6 "," t}' /proc/stat; }

start=$(date +%s)
# The tree the binaries were presumably built from: taken now, not at the end,
# as others may edit the tree while this runs.
revision=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$src" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  revision="$revision+changes"
fi

# --- 1. Patterns, one request at a time.
pattern() {  # ROUTE N BACKEND...
  local r=$1 n=$2
  shift 2
  counters "$((run_id + 1))" before "$@"
  fb "pattern:$r" --target "$target" --rpc route --route "$r" --concurrency 1 --count "$n" \
    --duration 0 --warmup 0 --timeout 5s
  # Cancellations reach the backends asynchronously: let them land.
  sleep 0.3
  counters "$last_id" after "$@"
  log "pattern $r: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); l=d["latency_us"]; print("%d ok, %d errors, p50 %.1fms" % (d["ok"], d["errors"], l["p50"] / 1000))' "$(grep "^run $last_id " "$results" | cut -d' ' -f4-)")"
}
# Connections up first, so that the first measured call does not pay for them.
for r in aggregate first_success aggregate_failing fallback multi_aggregate; do
  "$bench" --target "$target" --rpc route --route "$r" --concurrency 1 --count 1 --duration 0 \
    --warmup 0 > /dev/null || true
done
pattern aggregate "$pattern_n" block file
pattern first_success "$pattern_n" cache1 cache2 database
pattern aggregate_failing "$failing_n" block flaky
pattern fallback "$pattern_n" broken file block
pattern multi_aggregate "$pattern_n" block file compute cache

# Overhead at 100 and 1000 in flight (closed loops), and at 1000 in flight on
# average (open loop, Poisson arrivals at 1000 / 0.3s): Route over two 300ms
# branches, and the same load sent straight to one of those backends (Echo
# answers any method). Kept per run: CPU time of fanoutd and of the block
# backend, and the machine's busy share.
"$bench" --target "$target" --rpc route --route overhead --concurrency 1000 --channels 4 \
  --duration 1s --warmup 0 > /dev/null || true
for ((p = 1; p <= overhead_pairs; p++)); do
  for load in 100 1000 open; do
    if [ "$load" = open ]; then shape=(--mode open --rate 3333); else shape=(--concurrency "$load"); fi
    for side in route direct; do
      t0=$(cpu_ticks)
      b0=$(cpu_ticks "${pid_of[block]}")
      s0=$(machine_ticks)
      if [ "$side" = route ]; then
        fb "overhead:$load:route" --target "$target" --rpc route --route overhead "${shape[@]}" \
          --channels 4 --duration "$overhead_run" --warmup "$overhead_warm"
      else
        fb "overhead:$load:direct" --target "${addr[block]}" --rpc echo "${shape[@]}" \
          --channels 4 --duration "$overhead_run" --warmup "$overhead_warm"
      fi
      echo "cpu $last_id $(($(cpu_ticks) - t0)) $(getconf CLK_TCK)" >> "$results"
      echo "bcpu $last_id $(($(cpu_ticks "${pid_of[block]}") - b0)) $(getconf CLK_TCK)" >> "$results"
      echo "busy $last_id $s0 $(machine_ticks)" >> "$results"
    done
  done
  log "overhead pair $p/$overhead_pairs done"
done

# --- 2. Under load: 40 in flight against ALL and FIRST_SUCCESS, as in the seed.
for r in aggregate first_success multi_aggregate; do
  fb "load:$r:$load_run" --target "$target" --rpc route --route "$r" --concurrency 40 \
    --duration "${load_run}s" --warmup "$load_warm"
  log "40 in flight on $r done"
done

# 2000 Route calls in flight: fanoutd's threads sampled while they run, and
# the backend's in-flight count as proof of the load.
echo "threads_idle $(sed -n 's/^Threads:[[:space:]]*//p' "/proc/$fanoutd_pid/status")" >> "$results"
run_id=$((run_id + 1))
many_id=$run_id
"$bench" --json --calls_out "$tmp/calls/$many_id" --target "$target" --rpc route \
  --route aggregate --concurrency 2000 --channels 8 --duration "${many_run}s" --warmup 1s \
  > "$tmp/many.json" &
many_pid=$!
pids+=("$many_pid")
sampled_in_flight=0
while kill -0 "$many_pid" 2>/dev/null; do
  threads=$(sed -n 's/^Threads:[[:space:]]*//p' "/proc/$fanoutd_pid/status")
  echo "threads $many_id $threads" >> "$results"
  if [ "$sampled_in_flight" = 0 ] && [ "$(grep -c "^threads $many_id " "$results")" -ge 8 ]; then
    counters "$many_id" during block
    sampled_in_flight=1
  fi
  sleep 0.25
done
wait "$many_pid" || [ $? -le 1 ] || { log "2000 in flight: fanout-bench failed"; exit 1; }
echo "run $many_id many:aggregate:$many_run $(cat "$tmp/many.json")" >> "$results"
log "2000 in flight done"

# --- 3. Token-aware balancing: 3 capacity-1 workers, 60 requests per run,
# small/large/huge payloads (1.5/137/375ms of work: the seed's 30ms/2.75s/7.5s
# over 20). The three variants run back to back with the same seed, their
# order rotating from round to round.
mix_contention=154:0.5,14080:0.25,38400:0.25
mix_heavy=154:0.2,14080:0.4,38400:0.4
variants=(least_loaded round_robin least_conn)
for ((round = 1; round <= token_rounds; round++)); do
  for scenario in contention heavy; do
    if [ "$scenario" = contention ]; then mix=$mix_contention c=30; else mix=$mix_heavy c=5; fi
    for k in 0 1 2; do
      v=${variants[$(((k + round - 1) % 3))]}
      cost=()
      [ "$v" = least_conn ] && cost=(--cost 1)
      fb "token:$scenario:$v:$round" --target "$target" --rpc route --route "tok_$v" \
        --concurrency "$c" --count 60 --duration 0 --warmup 0 --timeout 120s \
        --payload_mix "$mix" --seed "$round" "${cost[@]+"${cost[@]}"}"
    done
    log "token-aware $scenario, round $round/$token_rounds done"
  done
done

# --- 4. Adaptive: a learning phase, then measured runs interleaved with racing
# every backend; backend calls counted at the backends around each run.
"$bench" --target "$target" --rpc route --route adaptive --concurrency 4 \
  --duration "$adaptive_learn" --warmup 0 > /dev/null
for ((round = 1; round <= adaptive_rounds; round++)); do
  for r in adaptive race; do
    counters "$((run_id + 1))" before fast mid slow
    fb "adaptive:$r:$round" --target "$target" --rpc route --route "$r" --concurrency 4 \
      --duration "$adaptive_run" --warmup 0
    sleep 0.3
    counters "$last_id" after fast mid slow
  done
  log "adaptive round $round/$adaptive_rounds done"
done

elapsed=$(($(date +%s) - start))
log "measured in ${elapsed}s"

# --- The report, written into the route section of RESULTS.md.
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
grpc_version=$(dpkg-query -W -f='${Version}' libgrpc++-dev 2>/dev/null || echo unknown)
machine="$(nproc) cores, ${cpu:-unknown CPU}, $(uname -r); gRPC $grpc_version; $(date -u '+%Y-%m-%d %H:%M UTC'); revision $revision"
mode=$([ "$quick" = 1 ] && echo "QUICK=1" || echo "full")

python3 "$here/route_report.py" "$results" "$tmp/calls" "$results_md" "$machine" "$mode" \
  "$elapsed"
