// A shared or persistent cache tier below L1 (Redis L2, RocksDB L3).
#ifndef FANOUT_CACHE_TIER_H_
#define FANOUT_CACHE_TIER_H_

#include <cstdint>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cache/entry.h"

namespace fanout::cache {

// Keys are composite keys (entry.h). Status meanings, for every method:
//   NotFound          miss
//   Unavailable       could not answer; the read path tries the next tier
//   DeadlineExceeded  the deadline passed
//   InvalidArgument   caller bug
//
// Every method is asynchronous: it returns at once and calls `done` exactly
// once, on any thread, possibly inline. Thread-safe.
class Tier {
 public:
  using LookupDone = absl::AnyInvocable<void(absl::StatusOr<Entry>) &&>;
  using StoreDone = absl::AnyInvocable<void(absl::Status) &&>;
  using EraseDone = absl::AnyInvocable<void(absl::StatusOr<uint64_t>) &&>;

  virtual ~Tier() = default;
  Tier() = default;
  Tier(const Tier&) = delete;
  Tier& operator=(const Tier&) = delete;

  virtual TierId id() const = 0;

  virtual void Lookup(absl::string_view key, absl::Time deadline, LookupDone done) = 0;
  virtual void Store(absl::string_view key, const Entry& entry, StoreDone done) = 0;
  // Erases the keys and, if `prefix` is non-empty, every key starting with it.
  // Reports how many entries were erased (best effort for remote tiers).
  virtual void Erase(std::vector<std::string> keys, std::string prefix, EraseDone done) = 0;
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_TIER_H_
