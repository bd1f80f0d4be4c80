#!/usr/bin/env bash
# The outage drill at scale (fanout-outage-drill): real fanoutd (L3 on disk)
# in front of a real gRPC origin (fanout-outage-origin); the origin hangs
# (SIGSTOP), then dies (kill -9); fanoutd is killed (kill -9) and restarted
# while the origin is still down; the origin comes back with new values.
# Rewrites only the section between <!-- BEGIN outage --> and
# <!-- END outage --> of bench/RESULTS.md (inside the L3 section's notes;
# hand-written notes below its notes marker are kept).
#
#   bash bench/run_outage.sh BUILD_DIR
#
# KEYS (default 10000), THREADS (128), PHASE (20s), DEADLINE (1s), TTL (1s)
# and MAX_RETRY_BACKOFF (30s, fanoutd's default) set the drill; QUICK=1 runs 1000
# keys with 5 s phases.
set -euo pipefail

BUILD_DIR=${1:?usage: bash bench/run_outage.sh BUILD_DIR}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS="$ROOT/bench/RESULTS.md"
if [[ "${QUICK:-0}" == 1 ]]; then
  KEYS=${KEYS:-1000}
  PHASE=${PHASE:-5s}
fi
KEYS=${KEYS:-10000}
THREADS=${THREADS:-128}
PHASE=${PHASE:-20s}
DEADLINE=${DEADLINE:-1s}
TTL=${TTL:-1s}
MAX_RETRY_BACKOFF=${MAX_RETRY_BACKOFF:-30s}

cmake --build "$BUILD_DIR" -j2 --target fanout-outage-drill fanout-outage-origin fanoutd >/dev/null

grep -q '^<!-- BEGIN outage -->$' "$RESULTS" && grep -q '^<!-- END outage -->$' "$RESULTS" || {
  echo "run_outage.sh: $RESULTS lacks the outage markers" >&2
  exit 1
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fanout-outage.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s)
"$BUILD_DIR/bench/fanout-outage-drill" --fanoutd="$BUILD_DIR/server/fanoutd" \
  --origin="$BUILD_DIR/tests/integration/fanout-outage-origin" --dir="$WORK/drill" \
  --keys="$KEYS" --threads="$THREADS" --phase="$PHASE" --deadline="$DEADLINE" --ttl="$TTL" \
  --max_retry_backoff="$MAX_RETRY_BACKOFF" \
  >"$WORK/rows" 2>"$WORK/log" || {
  cat "$WORK/log" >&2
  exit 1
}
elapsed=$(($(date +%s) - start))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
l3_lag=$(sed -n 's/^outage drill: L3 held every key \(.*\) after the fill$/\1/p' "$WORK/log")

revision=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- . \
  ':(exclude)bench/RESULTS.md' 2>/dev/null)" ]; then
  revision="$revision+changes"
fi
machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(uname -r);"
machine="$machine $(date -u '+%Y-%m-%d %H:%M UTC'); revision $revision"

{
  echo "### The outage drill (\`bash bench/run_outage.sh BUILD_DIR\`, fanout-outage-drill)"
  echo
  echo "Machine: $machine. $KEYS keys, $THREADS Gets in flight, every Get with a $DEADLINE deadline" \
    "(the caller's), \`cache.ttl\` $TTL, \`cache.deadline_margin\` 250ms, \`cache.retry_backoff\`" \
    "200ms, \`cache.max_retry_backoff\` $MAX_RETRY_BACKOFF, \`origin.timeout\` 2s, $PHASE per outage phase; the drill took ${elapsed}s. Load" \
    "average (1, 5, 15 min) $load_before before and $load_after after (the 2 cores were shared)."
  echo "Real processes: fanoutd with L3 on disk in front of fanout-outage-origin, a gRPC origin" \
    "that answers every key with \`g<generation>:<key>\`. After the fill, the drill waits until" \
    "every key is past its ttl; then each phase Gets every key once per pass, $THREADS at a" \
    "time, for the phase's length. L3 held every filled key $l3_lag after the fill (the" \
    "\`fanout_tier_stores_total{tier=\"l3\"}\` counter). *Failed* counts errors and wrong values;" \
    "latencies are the caller's, per Get."
  echo
  echo "| phase | passes | took | Gets | answered | stale | failed | served by | p50 | p99 | max | caller deadline | note |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"
  cat "$WORK/rows"
} >"$WORK/section"

python3 "$ROOT/bench/results_md.py" "$RESULTS" outage <"$WORK/section"
cat "$WORK/section"
echo "run_outage.sh: updated the outage section of $RESULTS" >&2
