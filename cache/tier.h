// A shared or persistent cache tier below L1 (Redis L2, RocksDB L3).
#ifndef FANOUT_CACHE_TIER_H_
#define FANOUT_CACHE_TIER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cache/entry.h"

namespace fanout::cache {

// What a tier has done since it was created, for metrics. Counters only
// grow; `available` and `queue_depth` are current.
struct TierStats {
  uint64_t hits = 0;            // lookups that found an entry (fresh or stale)
  uint64_t misses = 0;          // lookups that found nothing (undecodable included)
  uint64_t errors = 0;          // lookups, stores or erases that failed (Unavailable, DataLoss)
  uint64_t timeouts = 0;        // operations that ran past their deadline
  uint64_t stores = 0;          // entries written
  uint64_t stores_dropped = 0;  // writes given up without trying (queue full, tier down)
  uint64_t erased = 0;          // entries removed or superseded by Erase
  uint64_t undecodable = 0;     // stored bytes that did not decode (reported as misses)
  uint64_t queue_depth = 0;     // asynchronous writes not yet applied
  // False while the tier skips its work: circuit open, read-only after a
  // write failure, closed.
  bool available = true;
};

// How Erase treats what it matches.
enum class EraseMode {
  kRemove,  // gone from the tier
  // Kept for stale answers during outages but never served as fresh again:
  // the entry's expires_at (and fresh_until) become at most now. For the
  // survival tier when an Invalidate does not purge it.
  kSupersede,
};

// Keys are composite keys (entry.h). Status meanings, for every method:
//   NotFound          miss
//   Unavailable       could not answer (down, circuit open, read-only for a
//                     write); the read path goes on without this tier
//   DeadlineExceeded  the deadline passed; the tier gave up
//   InvalidArgument   caller bug
// A stored entry that cannot be decoded is a miss (counted in `undecodable`),
// never an error the caller sees.
//
// Every method is asynchronous: it returns at once and calls `done` exactly
// once, on any thread, possibly inline. It never blocks the caller's thread
// on the network or the disk. Thread-safe.
class Tier {
 public:
  using LookupDone = absl::AnyInvocable<void(absl::StatusOr<Entry>) &&>;
  using LookupManyDone = absl::AnyInvocable<void(std::vector<absl::StatusOr<Entry>>) &&>;
  using StoreDone = absl::AnyInvocable<void(absl::Status) &&>;
  using EraseDone = absl::AnyInvocable<void(absl::StatusOr<uint64_t>) &&>;

  virtual ~Tier() = default;
  Tier() = default;
  Tier(const Tier&) = delete;
  Tier& operator=(const Tier&) = delete;

  virtual TierId id() const = 0;

  // Finds `key`, whatever its freshness: the caller judges the time windows.
  // Entries past stale_until are misses.
  virtual void Lookup(absl::string_view key, absl::Time deadline, LookupDone done) = 0;

  // Lookup of several keys in as few round trips as the tier allows (one
  // for Redis); `done` gets one result per key, in order. A failure of the
  // whole batch is reported in every slot.
  virtual void LookupMany(std::vector<std::string> keys, absl::Time deadline,
                          LookupManyDone done) = 0;

  // Writes `entry` under `key`, replacing what is there. The tier may apply
  // it later (write-behind); `done` reports when it was applied or given up.
  // The tier keeps the entry until its stale_until at most.
  virtual void Store(absl::string_view key, const Entry& entry, StoreDone done) = 0;

  // Erases `keys` and, if `prefix` is non-empty, every key starting with it.
  // Reports how many entries were erased (best effort for remote tiers).
  virtual void Erase(std::vector<std::string> keys, std::string prefix, EraseMode mode,
                     absl::Time deadline, EraseDone done) = 0;

  virtual TierStats Stats() const = 0;
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_TIER_H_
