# Shell pieces shared by the benchmark scripts; source it after defining
# log() (each script prefixes its own lines).

# Waits up to 10s for "listening on ADDR" in the log file $1 and prints ADDR.
address_from() {
  for _ in $(seq 100); do
    local addr
    addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$1" | head -n1)
    if [ -n "$addr" ]; then echo "$addr"; return 0; fi
    sleep 0.1
  done
  log "no address in $1:"; cat "$1" >&2
  return 1
}

# cached_origin DIR KEYS VALUE_BYTES: writes KEYS files k0..k{KEYS-1} of
# VALUE_BYTES bytes under DIR/origin and a fanoutd config DIR/fanoutd.yaml
# serving them from a file origin with a day-long ttl, so that every Get
# after the first of each key is an L1 hit.
cached_origin() {
  local dir=$1 keys=$2 value_bytes=$3 value
  value=$(head -c "$value_bytes" /dev/zero | tr '\0' 'v')
  mkdir -p "$dir/origin"
  for ((i = 0; i < keys; i++)); do printf '%s' "$value" > "$dir/origin/k$i"; done
  cat > "$dir/fanoutd.yaml" <<YAML
server:
  listen: 127.0.0.1:0
log:
  level: info
cache:
  ttl: 24h
origin:
  type: file
  file:
    root: $dir/origin
YAML
}

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_redis LOG: a throwaway redis-server (no persistence) on a free
# loopback port, logging to LOG; sets redis_port, adds its pid to the
# caller's pids array and waits (10 s at most) until it answers PING.
start_redis() {
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning \
    > "$1" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  log "redis-server did not answer:"; cat "$1" >&2
  return 1
}

# start_fanoutd BUILD DIR LOG [ARGS...]: BUILD's fanoutd in directory DIR on
# a free loopback port, logging to LOG, with ARGS; adds its pid to the
# caller's pids array and sets addr to its gRPC address.
start_fanoutd() {
  local build=$1 dir=$2 out=$3
  shift 3
  (cd "$dir" && exec "$build/server/fanoutd" --listen=127.0.0.1:0 "$@") > "$out" 2>&1 &
  pids+=($!)
  addr=$(address_from "$out")
}

# start_pods BUILD DIR ROOT KEY_PREFIX PUSH TTL: three fanoutd pods (pod-a,
# pod-b, pod-c) on the file origin ROOT, sharing the Redis at $redis_port
# (cache.l2 with KEY_PREFIX), with origin.push PUSH and cache.ttl TTL and no
# admin endpoint; configs and logs in DIR. Sets the addrs array (in order).
start_pods() {
  local build=$1 dir=$2 root=$3 prefix=$4 push=$5 ttl=$6 pod
  addrs=()
  for pod in a b c; do
    cat > "$dir/$pod.yaml" <<YAML
origin:
  type: file
  push: $push
  file:
    root: $root
cache:
  ttl: $ttl
  l2:
    redis: 127.0.0.1:$redis_port
    key_prefix: "$prefix"
invalidation:
  pod: pod-$pod
admin:
  listen: ""
YAML
    start_fanoutd "$build" "$dir" "$dir/$pod.log" --config="$dir/$pod.yaml"
    addrs+=("$addr")
  done
}
