#!/usr/bin/env bash
# The invalidation suite: three fanoutd pods on loopback sharing one
# throwaway redis-server (cache.l2) and one file-origin root, with a ttl of
# an hour and origin.push off, so that a value changes on a pod only through
# an invalidation sent over the bus (not through the pod's own file watch):
#   - the delay from Invalidate returning on the first pod to each other pod
#     serving the new value (fanout-inval-bench);
#   - one invalidation to a thousand Watch streams on one pod, through Redis
#     and local, against one stream (fanout-watch-fanout-bench);
#   - invalidations lost while the second pod's bus connection is killed
#     (CLIENT KILL) over and over under a steady stream of invalidations
#     (fanout-inval-drops-bench).
# Rewrites only the section between <!-- BEGIN inval --> and
# <!-- END inval --> of bench/RESULTS.md.
#
#   bash bench/run_inval.sh BUILD_DIR
#
# ROUNDS=N sets the invalidations of the delay measure (default 1000),
# STREAMS=N the Watch streams (1000), WATCH_ROUNDS=N the invalidations per
# Watch phase and side (20), DROPS=N the forced drops (20).
set -euo pipefail

build=$(cd "${1:?usage: bash bench/run_inval.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
results="$root/bench/RESULTS.md"
rounds=${ROUNDS:-1000}
streams=${STREAMS:-1000}
watch_rounds=${WATCH_ROUNDS:-20}
drops=${DROPS:-20}

cmake --build "$build" -j2 --target fanout-inval-bench fanout-watch-fanout-bench \
  fanout-inval-drops-bench fanoutd >/dev/null
command -v redis-server >/dev/null || { echo "run_inval.sh: redis-server is missing (make deps)" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fanout-inval.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

log() { echo "run_inval.sh: $*" >&2; }
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_redis "$tmp/redis.log"

mkdir -p "$tmp/root/bench"
start_pods "$build" "$tmp" "$tmp/root" "bench:" false 1h

start=$(date +%s)
"$build/bench/fanout-inval-bench" --pods "$(IFS=,; echo "${addrs[*]}")" --root "$tmp/root" \
  --rounds "$rounds" > "$tmp/inval.json" || echo "run_inval.sh: some rounds were late or failed (see the table)" >&2
cat "$tmp/inval.json" >&2
"$build/bench/fanout-watch-fanout-bench" --pods "${addrs[0]},${addrs[1]}" --streams "$streams" \
  --rounds "$watch_rounds" > "$tmp/watch.json" ||
  echo "run_inval.sh: some Watch rounds were late or failed (see the table)" >&2
cat "$tmp/watch.json" >&2
"$build/bench/fanout-inval-drops-bench" --pods "$(IFS=,; echo "${addrs[*]}")" --root "$tmp/root" \
  --redis "127.0.0.1:$redis_port" --drop_pod pod-b --drops "$drops" > "$tmp/drops.json" ||
  echo "run_inval.sh: invalidations were lost or drops failed (see the table)" >&2
cat "$tmp/drops.json" >&2
elapsed=$(($(date +%s) - start))

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
redis_version=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
revision=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no -- . \
  ':(exclude)bench/RESULTS.md' 2>/dev/null)" ]; then
  revision="$revision+changes"
fi
machine="$(nproc) cores, ${cpu:-unknown CPU}, $(uname -r), shared with other work while measured (load average $(cut -d' ' -f1-3 /proc/loadavg) at the end); Redis $redis_version; $(date -u '+%Y-%m-%d %H:%M UTC'); revision $revision"

python3 - "$tmp/inval.json" "$tmp/watch.json" "$tmp/drops.json" "$machine" "$elapsed" \
  <<'PY' | python3 "$root/bench/results_md.py" "$results" inval
import json, sys
d = json.load(open(sys.argv[1]))
w = json.load(open(sys.argv[2]))
x = json.load(open(sys.argv[3]))
machine, elapsed = sys.argv[4], sys.argv[5]
print("## Invalidation between pods (bench/run_inval.sh)")
print()
print("Machine: %s; suite took %ss. Three fanoutd pods (A, B, C) on loopback share one "
      "redis-server (`cache.l2`) and one file-origin root, with `cache.ttl: 1h` and "
      "`origin.push: false`: a pod's value changes only when an invalidation reaches it over the "
      "bus, not through its own watch of the files. Default invalidation and Watch settings "
      "(`invalidation.max_local_ttl` 5s, `watch.heartbeat` 5s, `watch.max_streams` 4096). The "
      "machine has 2 cores shared with other work, and the pods, Redis and the benchmark share "
      "them: tails are the machine's as much as fanout's." % (machine, elapsed))
print()
print("### Delay between pods")
print()
print("%d invalidations, one pod invalidates, the others are polled. Measured from `Invalidate` "
      "returning `broadcast=true` on the first pod to a `Get` on the "
      "other pod answering the new value (each round: the other pods cache the old value, the "
      "file changes, Invalidate; then the other pods are polled with Get in turn, so a pod's "
      "figure includes the Get round trips to the pods polled before it, about 0.2-0.3 ms each, "
      "and every figure includes its own Get)." % d["rounds"])
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
print()

def trio(s, fmt="%.2f"):
    if not s["n"]:
        return "-"
    return " / ".join(fmt % s[k] + " ms" for k in ("p50_ms", "p99_ms", "max_ms"))

print("### Watch fan-out: one invalidation to %d streams" % w["streamsN"]["streams"])
print()
print("`fanout-watch-fanout-bench` holds the streams on pod B from one process (gRPC callback "
      "API, %d connections), every stream watching the prefix `w/`. A stream counts as established "
      "once it received an `INVALIDATED` (fresh keys were invalidated on B until all had one: %d "
      "invalidations). Each round invalidates a "
      "fresh key on A (through Redis) or on B itself (local), alternately, and waits for the "
      "event on every stream; %d rounds per row, first one stream alone (the baseline), then "
      "%d. Times run from `Invalidate` returning to the first and the last stream reading its "
      "`INVALIDATED`, and from the call's start (a stream may hear of it before the caller does: "
      "B queues the events as it applies the invalidation and sends them from its executor, "
      "while the reply is still on its way)." % (
          w["channels"], w["warmup_invalidations"], w["streams1"]["remote"]["first"]["n"],
          w["streamsN"]["streams"]))
print()
print("| streams | invalidated on | first stream, from the return | last stream, from the return "
      "| last stream, from the call's start | the Invalidate call |")
print("|---|---|---|---|---|---|")
for ph in ("streams1", "streamsN"):
    for side, label in (("remote", "pod A (through Redis)"), ("local", "pod B (local)")):
        s = w[ph][side]
        print("| %d | %s | %s | %s | %s | %s |" % (
            w[ph]["streams"], label, trio(s["first"]), trio(s["last"]), trio(s["last_from_call"]),
            trio(s["call"])))
print()
def why(counts, fmt):
    return fmt % "; ".join("%d %s" % (n, m) for m, n in sorted(counts.items())) if counts else ""
failed = {}
for ph in ("streams1", "streamsN"):
    for sd in ("remote", "local"):
        for m, n in w[ph][sd]["errors_by_message"].items():
            failed[m] = failed.get(m, 0) + n
print("Cells are p50 / p99 / max over the rounds (nearest rank: under 50 rounds, p99 is the "
      "max). Rounds in which a stream missed the event for 10 s: %d; failed calls: %d%s; "
      "streams that ended before the benchmark cancelled them: %d." % (
          sum(w[ph][sd]["late"] for ph in ("streams1", "streamsN") for sd in ("remote", "local")),
          sum(failed.values()), why(failed, " (%s)"), w["streams_not_cancelled_by_us"]))
print()

b, c = x["pods"][0], x["pods"][1] if len(x["pods"]) > 1 else None
print("### Invalidations lost across %d forced drops of a pod's bus connection" % x["drops_asked"])
print()
print("`fanout-inval-drops-bench`: a writer changes %d keys' files in turn and invalidates each "
      "change on pod A, %g times a second, while one thread per pod reads every key of B and C "
      "in a loop. Every %s the benchmark kills B's bus connection (`CLIENT KILL ID` of the "
      "client named `fanout-bus:pod-b` in `CLIENT LIST`) and waits for `RECOVERED` on a Watch "
      "stream on B; then, and at the end, a checkpoint: B and C must serve every key at the "
      "version A last acknowledged. An invalidation is *lost* on a pod when a Get started more "
      "than %.0f s after A's acknowledgement (`invalidation.max_local_ttl` and 2 s) still "
      "answered an older value; with a ttl of an hour, nothing but the bus would bring the new "
      "one. The delays below run from the acknowledgement to the end of the first Get that "
      "answered the new version (or a later one), so they include up to one sweep of the "
      "polling loop (the sweep row)." % (x["keys"], x["rate"], "%g s" % (x["drop_every_ms"] / 1000), x["bound_ms"] / 1000))
print()
print("| measure | pod B (link dropped) | pod C (control) |")
print("|---|---|---|")
def both(label, f):
    print("| %s | %s | %s |" % (label, f(b), f(c) if c else "-"))
both("invalidations lost (goal 0)", lambda p: "**%d**" % p["lost"] if p["lost"] else "0")
both("delay until served, every invalidation (p50 / p99 / max)",
     lambda p: "%s (%d)" % (trio(p["delay"], "%.1f"), p["delay"]["n"]))
both("... acknowledged while B's link was down (kill to RECOVERED)",
     lambda p: "%s (%d)" % (trio(p["delay_while_down"], "%.1f"), p["delay_while_down"]["n"]))
both("DEGRADED / RECOVERED / gaps on the pod's Watch stream",
     lambda p: "%d / %d / %d" % (p["degraded"], p["recovered"], p["gaps"]))
both("one sweep of the keys (Get each, p50 / p99 / max)", lambda p: trio(p["sweep"], "%.1f"))
both("Gets (errors)", lambda p: "%d (%d)" % (p["gets"], p["errors"]))
print()
print("Drops done: %d of %d (%d without RECOVERED within 10 s); invalidations acknowledged: %d "
      "(%d not broadcast%s); kill to RECOVERED on B: %s; checkpoints passed: %d of %d (after the "
      "drops: %s; final: %.1f ms); %.0f s in all." % (
          x["drops"], x["drops_asked"], x["not_recovered"], x["invalidations"],
          x["not_broadcast"], why(x["not_broadcast_by_error"], ": %s"), trio(x["kill_to_recovered"], "%.0f"),
          x["checkpoints"] - x["checkpoints_failed"], x["checkpoints"],
          trio(x["checkpoint"], "%.1f"), x["final_checkpoint_ms"], x["seconds"]))
PY
