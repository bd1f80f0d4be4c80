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
