#!/usr/bin/env bash
# The L2 suite, all in one run on one throwaway redis-server:
#   1. the Redis tier (RedisTier, through fanout's async client) against raw
#      hiredis, in one process, in interleaved pairs (fanout-l2-bench), and
#      lookups while that Redis is frozen with SIGSTOP;
#   2. fanoutd end to end, L1 too small to keep any value so that every Get
#      is an L2 hit: Get at 1 in flight against the Echo floor plus a raw
#      hiredis GET measured in the same pair; at 16 in flight against Echo;
#      BatchGet of 100 keys against single Gets; Get while another client
#      reads batches of large values; context switches and CPU per call.
#      Three fanoutd differ only in where Redis answers continue
#      (cache.l2.inline_answer_bytes): the default (16 KiB), always on the
#      Redis I/O thread, always on the executor;
#   3. three fanoutd pods on a slow gRPC origin that counts fetches
#      (fanout-l2-pods-bench): cold stampedes on one key, and steady reads of
#      one hot key across expiries (XFetch), beside three pods configured
#      without the fill lease and with the fixed refresh window;
#   4. Gets on fanoutd while Redis is frozen (SIGSTOP), then thawed.
# Rewrites only the section between <!-- BEGIN l2 --> and <!-- END l2 --> of
# bench/RESULTS.md (notes below its notes marker are kept); the report is
# bench/l2_report.py's.
#
#   bash bench/run_l2.sh BUILD_DIR
#
# QUICK=1 shortens the runs; PAIRS=N sets the pairs per comparison (default 5).
set -euo pipefail

build=$(cd "${1:?usage: bash bench/run_l2.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
results="$root/bench/RESULTS.md"
quick=${QUICK:-0}
pairs=${PAIRS:-5}
if [ "$quick" = 1 ]; then
  duration=300ms freeze=2s e2e_duration=500ms rounds=20 expiries=10 ttl=3s
else
  duration=1s freeze=3s e2e_duration=1s rounds=20 expiries=10 ttl=3s
fi

cmake --build "$build" -j2 --target fanout-l2-bench fanout-l2-pods-bench fanout-bench \
  fanout-echo-server fanoutd >/dev/null
l2bench="$build/bench/fanout-l2-bench"
podsbench="$build/bench/fanout-l2-pods-bench"
bench="$build/bench/fanout-bench"
echo_server="$build/bench/fanout-echo-server"
fanoutd="$build/server/fanoutd"
command -v redis-server >/dev/null || { echo "run_l2.sh: redis-server is missing (make deps)" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fanout-l2.XXXXXX")
redis_pid=
pids=()
cleanup() {
  for pid in "${pids[@]+"${pids[@]}"}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]+"${pids[@]}"}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$redis_pid" ]; then
    kill -CONT "$redis_pid" 2>/dev/null || true
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  [ "${KEEP_TMP:-0}" = 1 ] && echo "run_l2.sh: kept $tmp" >&2 || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "l2: $*" >&2; }
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning \
  > "$tmp/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do
  [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s)

# ---- 1. The tier against raw hiredis ---------------------------------------
log "tier against raw hiredis ($pairs pairs of $duration), then a ${freeze} freeze"
"$l2bench" --redis "127.0.0.1:$port" --redis_pid "$redis_pid" --pairs "$pairs" \
  --duration "$duration" --freeze "$freeze" > "$tmp/l2.json"

# ---- 2. fanoutd end to end --------------------------------------------------
keys=1000 value_bytes=128 big_keys=200 big_bytes=8192
mkdir -p "$tmp/origin/big"
value=$(head -c "$value_bytes" /dev/zero | tr '\0' 'v')
for ((i = 0; i < keys; i++)); do printf '%s' "$value" > "$tmp/origin/k$i"; done
big=$(head -c "$big_bytes" /dev/zero | tr '\0' 'b')
for ((i = 0; i < big_keys; i++)); do printf '%s' "$big" > "$tmp/origin/big/k$i"; done

# l2_config NAME L2_LINES: fanoutd on the file origin, an L1 too small to
# keep a value (4 KiB; an entry may take 1% of it), L2 on this Redis.
l2_config() {
  cat > "$tmp/$1.yaml" <<YAML
server:
  listen: 127.0.0.1:0
admin:
  listen: ""
cache:
  ttl: 24h
  l1:
    capacity: 4096
  l2:
    redis: 127.0.0.1:$port
    key_prefix: "e2e:"
$2
origin:
  type: file
  file:
    root: $tmp/origin
YAML
}
l2_config hybrid ""
l2_config inline "    inline_answer_bytes: 1GiB"
l2_config executor "    inline_answer_bytes: 0"
declare -A addr pid
for name in hybrid inline executor; do
  "$fanoutd" --config "$tmp/$name.yaml" 2> "$tmp/$name.log" &
  pids+=($!)
  pid[$name]=$!
done
"$echo_server" --listen 127.0.0.1:0 --reply_bytes "$value_bytes" 2> "$tmp/echo.log" &
pids+=($!)
pid[echo]=$!
# The same floor with every call finished from a thread of the server's own,
# as fanoutd finishes a call whose answer came from Redis: shown beside the
# target, not part of it.
"$echo_server" --listen 127.0.0.1:0 --reply_bytes "$value_bytes" --answer_from_thread \
  2> "$tmp/echo_thread.log" &
pids+=($!)
pid[echo_thread]=$!
for name in hybrid inline executor echo echo_thread; do
  addr[$name]=$(address_from "$tmp/$name.log")
done

e2e="$tmp/e2e.txt"
: > "$e2e"
# fb WORKLOAD SIDE PAIR ARGS...: one fanout-bench run, its JSON appended to $e2e.
fb() {
  local workload=$1 side=$2 pair=$3 out
  shift 3
  out=$("$bench" --json --duration "$e2e_duration" --warmup 200ms "$@") || true
  [ -n "$out" ] || { log "fanout-bench $* failed"; exit 1; }
  echo "$workload $side $pair $out" >> "$e2e"
}
raw() {
  local out
  out=$("$l2bench" --redis "127.0.0.1:$port" --raw_get_only --duration "$e2e_duration" \
    --value_bytes $((value_bytes + 54)))
  echo "c1 raw $1 $out" >> "$e2e"
}

log "fanoutd: filling L2 (every first read goes to the origin)"
"$bench" --target "${addr[hybrid]}" --rpc get --keys "$keys" --concurrency 8 --duration 2s \
  --warmup 0s > /dev/null
"$bench" --target "${addr[hybrid]}" --rpc get --keys "$big_keys" --key_prefix big/k \
  --concurrency 4 --duration 1s --warmup 0s > /dev/null

for ((p = 1; p <= pairs; p++)); do
  log "pair $p/$pairs: Get at 1 and 16 in flight, Echo, raw GET, BatchGet, Get beside large batches"
  for name in hybrid inline executor; do
    fb c1 "$name" "$p" --target "${addr[$name]}" --rpc get --keys "$keys" --concurrency 1
  done
  fb c1 echo "$p" --target "${addr[echo]}" --rpc echo --concurrency 1
  fb c1 echo_thread "$p" --target "${addr[echo_thread]}" --rpc echo --concurrency 1
  raw "$p"
  for name in hybrid inline executor; do
    fb c16 "$name" "$p" --target "${addr[$name]}" --rpc get --keys "$keys" --concurrency 16 \
      --channels 4
  done
  fb c16 echo "$p" --target "${addr[echo]}" --rpc echo --concurrency 16 --channels 4
  fb batch hybrid "$p" --target "${addr[hybrid]}" --rpc batchget --batch_size 100 --keys "$keys" \
    --concurrency 1
  # Get at 1 in flight while another client reads 100 values of 8 KiB a call.
  for name in hybrid inline executor; do
    "$bench" --json --target "${addr[$name]}" --rpc batchget --batch_size 100 --keys "$big_keys" \
      --key_prefix big/k --concurrency 1 --duration 5s --warmup 0s > "$tmp/bg.json" &
    bg=$!
    sleep 0.3
    fb beside "$name" "$p" --target "${addr[$name]}" --rpc get --keys "$keys" --concurrency 1
    kill "$bg" 2>/dev/null || true
    wait "$bg" 2>/dev/null || true
  done
done

# Context switches and CPU per call (every thread of the process), 5000
# calls at 1 in flight.
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/{s+=$2} END{print s+0}'; }
ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
: > "$tmp/switches.txt"
for name in echo hybrid inline executor; do
  rpc=get
  [ "$name" = echo ] && rpc=echo
  s0=$(switches "${pid[$name]}")
  t0=$(ticks "${pid[$name]}")
  "$bench" --target "${addr[$name]}" --rpc "$rpc" --keys "$keys" --concurrency 1 --duration 0 \
    --count 5000 --warmup 0s > /dev/null
  echo "$name $(($(switches "${pid[$name]}") - s0)) $(($(ticks "${pid[$name]}") - t0)) 5000 $(getconf CLK_TCK)" \
    >> "$tmp/switches.txt"
done

# ---- 3. Pods: stampedes and steady reads on a slow origin -------------------
origin_port=$(free_port)
# pods_config NAME PREFIX EXTRA_CACHE EXTRA_L2
pods_config() {
  cat > "$tmp/$1.yaml" <<YAML
server:
  listen: 127.0.0.1:0
admin:
  listen: ""
cache:
  ttl: $ttl
$3
  l2:
    redis: 127.0.0.1:$port
    key_prefix: "$2"
$4
origin:
  type: grpc
  timeout: 2s
  grpc:
    target: 127.0.0.1:$origin_port
YAML
}
pods_config pod pods: "" ""
pods_config base base: "  xfetch_beta: 0" "    lease: false"
targets=() baseline=()
for i in 1 2 3; do
  for kind in pod base; do
    "$fanoutd" --config "$tmp/$kind.yaml" 2> "$tmp/$kind$i.log" &
    pids+=($!)
  done
done
for i in 1 2 3; do
  targets+=("$(address_from "$tmp/pod$i.log")")
  baseline+=("$(address_from "$tmp/base$i.log")")
done
log "pods: $rounds stampede rounds of 300 Gets, then one hot key for $expiries x $ttl, twice"
"$podsbench" --mode=pods --origin_listen "127.0.0.1:$origin_port" --origin_delay 50ms \
  --targets "$(IFS=,; echo "${targets[*]}")" --baseline_targets "$(IFS=,; echo "${baseline[*]}")" \
  --rounds "$rounds" --concurrency 300 --expiries "$expiries" --ttl "$ttl" --chains 2 \
  --pace 1ms > "$tmp/pods.json"

# ---- 4. fanoutd while Redis is frozen ---------------------------------------
log "Gets on fanoutd while Redis is frozen for $freeze"
"$podsbench" --mode=freeze --targets "${addr[hybrid]}" --redis_pid "$redis_pid" \
  --freeze "$freeze" --timeout 50ms --chains 4 --pace 1ms --keys "$keys" > "$tmp/freeze.json"

elapsed=$(($(date +%s) - start))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
redis_version=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
hiredis_version=$(dpkg-query -W -f='${Version}' libhiredis-dev 2>/dev/null || echo unknown)
revision=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no -- . \
  ':(exclude)bench/RESULTS.md' 2>/dev/null)" ]; then
  revision="$revision+changes"
fi
machine="$(nproc) cores, ${cpu:-unknown CPU}, $(uname -r), shared with other work while measured (load average $load_before before, $load_after after); Redis $redis_version, hiredis $hiredis_version; $(date -u '+%Y-%m-%d %H:%M UTC'); revision $revision"
mode=$([ "$quick" = 1 ] && echo "QUICK=1" || echo "full")

python3 "$root/bench/l2_report.py" --tier "$tmp/l2.json" --e2e "$e2e" \
  --switches "$tmp/switches.txt" --pods "$tmp/pods.json" --freeze "$tmp/freeze.json" \
  --results "$results" --machine "$machine" --mode "$mode" --pairs "$pairs" \
  --duration "$duration" --e2e_duration "$e2e_duration" --freeze_for "$freeze" \
  --elapsed "$elapsed"
echo "run_l2.sh: updated the l2 section of $results" >&2
