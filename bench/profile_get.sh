#!/usr/bin/env bash
# Instructions per call of fanoutd's Get (100% L1 hits) and of the Echo
# floor, counted by callgrind under the same fixed load: a repeatable
# measure of the Get hot path on a noisy machine, where timings are not.
# Prints both, their difference, and fanoutd's top functions.
#
# usage: bench/profile_get.sh BUILD_DIR [CALLS]     (needs valgrind)
#   KEEP=DIR   keep the callgrind outputs there (for callgrind_annotate)
#   ADMIN=on   serve the admin endpoint (metrics counted) on a free port;
#   ADMIN=off  no admin endpoint. Unset: the config's default (127.0.0.1:7071,
#              skipped when that port is taken), so set it when comparing.
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
calls=${2:-20000}
keys=1000
value_bytes=128
command -v valgrind >/dev/null || { echo "profile: valgrind is missing" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fanout-profile.XXXXXX")
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$tmp"/*.out "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
log() { echo "profile: $*" >&2; }
cached_origin "$tmp" "$keys" "$value_bytes"
case "${ADMIN:-}" in
  on) printf 'admin:\n  listen: 127.0.0.1:0\n' >> "$tmp/fanoutd.yaml" ;;
  off) printf 'admin:\n  listen: ""\n' >> "$tmp/fanoutd.yaml" ;;
  "") ;;
  *) echo "profile: ADMIN is on or off" >&2; exit 2 ;;
esac

# profile NAME RPC SERVER_ARGS...: prints instructions per measured call.
profile() {
  local name=$1 rpc=$2
  shift 2
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/$name.out" \
    "$@" 2> "$tmp/$name.log" &
  pid=$!
  local addr=""
  for _ in $(seq 300); do
    addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$tmp/$name.log" | head -n1)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "profile: $name did not start" >&2; cat "$tmp/$name.log" >&2; exit 1; }
  local load=(--target "$addr" --rpc "$rpc" --concurrency 16 --duration 0 --warmup 0)
  [ "$rpc" = get ] && load+=(--keys "$keys")
  # Warm-up, not counted: every key reaches L1, gRPC allocates its pools.
  "$build/bench/fanout-bench" "${load[@]}" --count $((keys * 20)) > /dev/null
  callgrind_control -i on "$pid" > /dev/null 2>&1
  "$build/bench/fanout-bench" "${load[@]}" --count "$calls" > /dev/null
  callgrind_control -i off "$pid" > /dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
  callgrind_annotate "$tmp/$name.out" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' |
    tr -d ,
}

get_ir=$(profile fanoutd get "$build/server/fanoutd" --config "$tmp/fanoutd.yaml")
echo_ir=$(profile echo echo "$build/bench/fanout-echo-server" --listen 127.0.0.1:0 \
  --reply_bytes "$value_bytes")
python3 - "$get_ir" "$echo_ir" "$calls" <<'PY'
import sys
get, echo, calls = (int(x) for x in sys.argv[1:])
print("instructions per call (server process, %d calls, 16 in flight):" % calls)
print("  fanoutd Get (L1 hit) %8.0f" % (get / calls))
print("  Echo floor           %8.0f" % (echo / calls))
print("  Get above the floor  %8.0f (%.1f%%)" % ((get - echo) / calls, 100.0 * (get - echo) / echo))
PY
echo "fanoutd's top functions (self):"
callgrind_annotate "$tmp/fanoutd.out" 2>/dev/null | sed -n '/^Ir *file:function/,$p' | sed -n '3,22p' |
  sed 's/ \[\/.*\]$//' | cut -c1-150
echo "fanoutd's own code, instructions per call (inclusive):"
callgrind_annotate --inclusive=yes --threshold=100 "$tmp/fanoutd.out" 2>/dev/null |
  grep -E 'fanout::(server::SidecarService::Get|cache::ReadPath::Get|cache::.*::Lookup)\(' |
  python3 -c 'import re, sys
calls = int(sys.argv[1])
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) .*?\?\?\?:(.*?)\((?!anonymous namespace\))", line)
    if m:
        print("  %-60s %6.0f" % (m.group(2), int(m.group(1).replace(",", "")) / calls))' "$calls"
