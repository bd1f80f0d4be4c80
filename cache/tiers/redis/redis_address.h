// Where a Redis server listens: "host:port" (IPv6 hosts in brackets,
// "[::1]:6379") or "unix:///path/to/redis.sock".
#ifndef FANOUT_CACHE_TIERS_REDIS_REDIS_ADDRESS_H_
#define FANOUT_CACHE_TIERS_REDIS_REDIS_ADDRESS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fanout::cache {

struct RedisAddress {
  std::string host;  // empty for a Unix socket
  int port = 0;
  std::string unix_path;  // set for a Unix socket

  bool is_unix() const { return !unix_path.empty(); }
  // As written in configuration ("127.0.0.1:6379", "[::1]:6379", "unix:///run/redis.sock").
  std::string ToString() const;
};

// InvalidArgument saying what is wrong (no port, port out of 1-65535, empty
// host or path).
absl::StatusOr<RedisAddress> ParseRedisAddress(absl::string_view text);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_TIERS_REDIS_REDIS_ADDRESS_H_
