// How cache keys are named in Redis, in one place. For a composite key K
// (entry.h) and the deployment's key_prefix P:
//   P "v:" K   the entry's envelope (envelope.h)
//   P "l:" K   the fill lease on K (fill_lease.h)
//   P "inv"    the invalidation stream (redis_bus.h)
//   P "fk:" K  the invalidation fence of key K (redis_bus.h)
//   P "fp:" C  the invalidation fence of every key starting with C
//   P "fp*"    present while any "fp:" fence may be
// Keys are binary-safe: Redis keys may hold any byte. A Redis Cluster build
// would add hash tags here, so that a key's value and lease share a slot.
#ifndef FANOUT_CACHE_TIERS_REDIS_REDIS_KEYS_H_
#define FANOUT_CACHE_TIERS_REDIS_REDIS_KEYS_H_

#include <string>

#include "absl/strings/string_view.h"

namespace fanout::cache {

class RedisKeys {
 public:
  explicit RedisKeys(std::string key_prefix) : prefix_(std::move(key_prefix)) {}

  std::string Value(absl::string_view ckey) const;
  std::string Lease(absl::string_view ckey) const;
  std::string InvalidationStream() const;
  std::string KeyFence(absl::string_view ckey) const;
  std::string PrefixFence(absl::string_view cprefix) const;
  std::string AnyPrefixFence() const;
  // A SCAN MATCH pattern for every value key whose composite key starts with
  // `cprefix`; the prefixes' glob characters match only themselves.
  std::string ValuePattern(absl::string_view cprefix) const;

  const std::string& prefix() const { return prefix_; }

 private:
  const std::string prefix_;
};

// `literal` with Redis glob characters (* ? [ ] \) escaped by a backslash, so
// that it matches only itself in SCAN MATCH / KEYS.
std::string EscapeGlob(absl::string_view literal);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_TIERS_REDIS_REDIS_KEYS_H_
