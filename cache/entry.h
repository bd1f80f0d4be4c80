// What the cache tiers store for a key, and how keys are named inside them.
#ifndef FANOUT_CACHE_ENTRY_H_
#define FANOUT_CACHE_ENTRY_H_

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cache/value.h"

namespace fanout::cache {

// Where an answer came from.
enum class TierId { kL1, kL2, kL3, kOrigin };

// A cached value with its time windows. For any entry
// fetched_at <= fresh_until <= expires_at <= stale_until:
//   now < fresh_until               fresh
//   fresh_until <= now < expires_at  still fresh, but a read starts a background refresh
//   expires_at <= now < stale_until  stale: served only when the origin cannot answer
//   stale_until <= now               gone
struct Entry {
  SharedValue value;
  int64_t version = 0;
  absl::Time fetched_at = absl::InfinitePast();  // when the origin produced the value
  absl::Time fresh_until = absl::InfinitePast();
  absl::Time expires_at = absl::InfinitePast();
  absl::Time stale_until = absl::InfinitePast();
  absl::Duration fill_time = absl::ZeroDuration();  // how long the origin took
};

enum class Freshness {
  kFresh,         // serve
  kRefreshAhead,  // serve, and refresh in the background
  kStale,         // serve only if the origin cannot answer
};

inline Freshness FreshnessAt(const Entry& e, absl::Time now) {
  if (now < e.fresh_until) return Freshness::kFresh;
  if (now < e.expires_at) return Freshness::kRefreshAhead;
  return Freshness::kStale;
}

// Cache identity of a key: namespace and key joined by a NUL byte, which
// neither may contain (the server rejects it). Prefix scans of one namespace
// are prefix scans of the composite key.
inline std::string CompositeKey(absl::string_view ns, absl::string_view key) {
  return absl::StrCat(ns, absl::string_view("\0", 1), key);
}

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_ENTRY_H_
