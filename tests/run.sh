#!/usr/bin/env bash
# Runs every test of a build directory through ctest. Integration tests start
# their own processes (fanoutd, fake backends, redis-server) on free ports.
set -euo pipefail
build=${1:-build}
export FANOUT_BUILD_DIR=$(cd "$build" && pwd)
export FANOUT_SOURCE_DIR=$(cd "$(dirname "$0")/.." && pwd)
cd "$build"
ctest --output-on-failure --timeout 600 -j "$(nproc)"
