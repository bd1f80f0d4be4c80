#!/usr/bin/env bash
# The invalidation suite: three fanoutd pods on loopback sharing one
# throwaway redis-server (cache.l2) and one file-origin root. The delay from
# Invalidate returning on the first pod to each other pod serving the new
# value (fanout-inval-bench). Rewrites only the section between
# <!-- BEGIN inval --> and <!-- END inval --> of bench/RESULTS.md.
#
#   bash bench/run_inval.sh BUILD_DIR
#
# ROUNDS=N sets the invalidations (default 1000).
set -euo pipefail

build=$(cd "${1:?usage: bash bench/run_inval.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
results="$root/bench/RESULTS.md"
rounds=${ROUNDS:-1000}

cmake --build "$build" -j2 --target fanout-inval-bench fanoutd >/dev/null
command -v redis-server >/dev/null || { echo "run_inval.sh: redis-server is missing (make deps)" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fanout-inval.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning \
  > "$tmp/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done

mkdir -p "$tmp/root/bench"
addrs=()
for pod in a b c; do
  cat > "$tmp/$pod.yaml" <<YAML
origin:
  type: file
  file:
    root: $tmp/root
cache:
  l2:
    redis: 127.0.0.1:$port
    key_prefix: "bench:"
invalidation:
  pod: pod-$pod
admin:
  listen: ""
YAML
  "$build/server/fanoutd" --config="$tmp/$pod.yaml" --listen=127.0.0.1:0 2> "$tmp/$pod.log" &
  pids+=($!)
  for _ in $(seq 200); do
    grep -q "listening on " "$tmp/$pod.log" && break
    sleep 0.05
  done
  addrs+=("$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$tmp/$pod.log" | head -n1)")
done

start=$(date +%s)
"$build/bench/fanout-inval-bench" --pods "$(IFS=,; echo "${addrs[*]}")" --root "$tmp/root" \
  --rounds "$rounds" > "$tmp/inval.json" || echo "run_inval.sh: some rounds were late or failed (see the table)" >&2
cat "$tmp/inval.json" >&2
elapsed=$(($(date +%s) - start))

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
redis_version=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
revision=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no -- . \
  ':(exclude)bench/RESULTS.md' 2>/dev/null)" ]; then
  revision="$revision+changes"
fi
machine="$(nproc) cores, ${cpu:-unknown CPU}, $(uname -r), shared with other work while measured; Redis $redis_version; $(date -u '+%Y-%m-%d %H:%M UTC'); revision $revision"

python3 - "$tmp/inval.json" "$machine" "$elapsed" <<'PY' | python3 "$root/bench/results_md.py" "$results" inval
import json, sys
d = json.load(open(sys.argv[1]))
machine, elapsed = sys.argv[2], sys.argv[3]
print("## Invalidation: delay between pods (bench/run_inval.sh)")
print()
print("Machine: %s. %d invalidations, %d pods (one invalidates, the others are polled), "
      "default invalidation settings; suite took %ss." % (machine, d["rounds"], d["pods"], elapsed))
print()
print("Measured from `Invalidate` returning `broadcast=true` on the first pod to a `Get` on the "
      "other pod answering the new value (each round: the other pods cache the old value, the "
      "file changes, Invalidate; then the other pods are polled with Get in turn, so a pod's "
      "figure includes the Get round trips to the pods polled before it, about 0.2-0.3 ms each, "
      "and every figure includes its own Get).")
print()
print("| measure | samples | p50 | p99 | max |")
print("|---|---|---|---|---|")
def row(label, s):
    print("| %s | %d | %.2f ms | %.2f ms | %.2f ms |" % (label, s["n"], s["p50_ms"], s["p99_ms"], s["max_ms"]))
row("propagation, every other pod", d["propagation"])
for k in sorted(k for k in d if k.startswith("pod") and k != "pods"):
    row("propagation to %s" % k.replace("pod", "pod #"), d[k])
row("the Invalidate call itself (pod A)", d["invalidate_call"])
print()
print("Rounds where a pod still served the old value 5 s after the acknowledgement: %d; "
      "errors: %d." % (d["late"], d["errors"]))
PY
