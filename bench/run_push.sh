#!/usr/bin/env bash
# The origin-push suite: how long after a file under the file origin's root
# changes a pod serves the new value, with no Invalidate call
# (fanout-push-bench). Two set-ups:
#   make-run  one fanoutd on its embedded default (the `make run`
#             configuration: L1 and L3, no Redis), working directory a
#             temporary copy of the repository's deploy/examples/config.d;
#   pods      three fanoutd pods sharing a throwaway redis-server (cache.l2)
#             and one root, each watching it.
# Rewrites only the section between <!-- BEGIN push --> and <!-- END push -->
# of bench/RESULTS.md.
#
#   bash bench/run_push.sh BUILD_DIR
#
# ROUNDS=N sets the changes per set-up (default 200).
set -euo pipefail

build=$(cd "${1:?usage: bash bench/run_push.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
results="$root/bench/RESULTS.md"
rounds=${ROUNDS:-200}

cmake --build "$build" -j2 --target fanout-push-bench fanoutd >/dev/null
command -v redis-server >/dev/null || { echo "run_push.sh: redis-server is missing (make deps)" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fanout-push.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]+"${pids[@]}"}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

log() { echo "run_push.sh: $*" >&2; }
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The make-run set-up.
mkdir -p "$tmp/run/deploy/examples"
cp -r "$root/deploy/examples/config.d" "$tmp/run/deploy/examples/"
start_fanoutd "$build" "$tmp/run" "$tmp/run.log"
run_addr=$addr
start=$(date +%s)
"$build/bench/fanout-push-bench" --pods "$run_addr" --root "$tmp/run/deploy/examples/config.d" \
  --rounds "$rounds" > "$tmp/run.json" || echo "run_push.sh: some rounds were late or failed" >&2
cat "$tmp/run.json" >&2

# The pods set-up.
start_redis "$tmp/redis.log"
mkdir -p "$tmp/root"
start_pods "$build" "$tmp" "$tmp/root" "push:" true 60s
"$build/bench/fanout-push-bench" --pods "$(IFS=,; echo "${addrs[*]}")" --root "$tmp/root" \
  --rounds "$rounds" > "$tmp/pods.json" || echo "run_push.sh: some rounds were late or failed" >&2
cat "$tmp/pods.json" >&2
elapsed=$(($(date +%s) - start))

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
revision=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no -- . \
  ':(exclude)bench/RESULTS.md' 2>/dev/null)" ]; then
  revision="$revision+changes"
fi
machine="$(nproc) cores, ${cpu:-unknown CPU}, $(uname -r), shared with other work while measured; $(date -u '+%Y-%m-%d %H:%M UTC'); revision $revision"

python3 - "$tmp/run.json" "$tmp/pods.json" "$machine" "$elapsed" <<'PY' | python3 "$root/bench/results_md.py" "$results" push
import json, sys
run, pods = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
machine, elapsed = sys.argv[3], sys.argv[4]
print("## Origin push: a changed file reaching Get (bench/run_push.sh)")
print()
print("Machine: %s. %d changes per set-up; suite took %ss." % (machine, run["rounds"], elapsed))
print()
print("Measured from the write of a file under `origin.file.root` being done to `Get` answering "
      "the new value, with no Invalidate call: the pod's inotify watch waits for the burst of "
      "events to be quiet for 50 ms (at most 500 ms), rescans the root, and invalidates the keys "
      "whose files differ. Each round, every pod first caches the current value; changes "
      "alternate between rewriting the file in place and writing a hidden file beside it and "
      "renaming it over the key (how editors and ConfigMap updates replace files). Pods are "
      "polled with Get every 0.5 ms, in turn, so each figure includes Get round trips.")
print()
print("| set-up | way of writing | samples | p50 | p99 | max |")
print("|---|---|---|---|---|---|")
def row(setup, label, s):
    print("| %s | %s | %d | %.1f ms | %.1f ms | %.1f ms |" % (setup, label, s["n"], s["p50_ms"], s["p99_ms"], s["max_ms"]))
for name, d, label in (("make-run", run, "`make run` (one pod, L1 + L3)"),
                       ("pods", pods, "3 pods, shared Redis L2, one root")):
    row(label, "in place", d["in_place"])
    row(label, "renamed over", d["rename"])
    row(label, "all", d["all"])
print()
print("Rounds where a pod still served the old value 5 s after the write: %d (make-run), %d "
      "(pods); errors: %d, %d." % (run["late"], pods["late"], run["errors"], pods["errors"]))
PY
