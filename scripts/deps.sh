#!/usr/bin/env bash
# Installs what fanout needs to build, test and benchmark, if it is missing.
# Idempotent and quiet when everything is present. Debian 12 packages only,
# plus the npm package @bufbuild/buf (for `buf curl`).
set -euo pipefail

packages=(
  build-essential cmake pkg-config git xz-utils
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev
  libabsl-dev libhiredis-dev librocksdb-dev libyaml-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  redis-server redis-tools valgrind
  prometheus-cpp-dev libcivetweb-dev libcurl4-openssl-dev
  python3 python3-yaml python3-prometheus-client
  nodejs npm
)
# kubectl renders the Kubernetes manifests in a test; any kubectl will do,
# else Debian's.
if ! command -v kubectl >/dev/null; then packages+=(kubernetes-client); fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# node and npm may come from elsewhere than Debian's packages; accept them.
if command -v node >/dev/null && command -v npm >/dev/null; then
  filtered=()
  for p in "${missing[@]}"; do [[ "$p" == nodejs || "$p" == npm ]] || filtered+=("$p"); done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v buf >/dev/null; then
  echo "deps: installing @bufbuild/buf (npm)"
  "${sudo_cmd[@]}" npm install -g --silent @bufbuild/buf >/dev/null 2>&1
fi
