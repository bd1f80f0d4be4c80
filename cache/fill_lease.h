// Cross-pod single fill: before a pod asks the origin for a key, it takes a
// short lease on the key in a store every pod shares. Pods that lose the race
// do not call the origin: they wait for the winner's write to the shared
// tier, then serve it. A lease whose holder died simply expires; a pod that
// waited it out fetches the key itself.
//
// The read path's use:
//   Acquire(key, ttl ≈ origin timeout)
//     acquired      → fetch from the origin, Store the value in the shared
//                     tier, and Release only once that Store is done (a
//                     waiter that sees the lease gone before the value
//                     fetches the key itself)
//     held by other → AwaitFill(key, newer_than = fetched_at of the copy in
//                     hand, deadline ≤ now + holder_remaining + a margin),
//                     serving a stale copy meanwhile if the caller holds one
//     Unavailable   → a plain local single flight
// Keys are composite keys (entry.h), the same the shared tier stores under.
#ifndef FANOUT_CACHE_FILL_LEASE_H_
#define FANOUT_CACHE_FILL_LEASE_H_

#include <cstdint>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cache/entry.h"

namespace fanout::cache {

struct LeaseGrant {
  bool acquired = false;
  std::string token;  // acquired: proves ownership to Release
  // Not acquired: how long the holder's lease still runs (zero if unknown).
  absl::Duration holder_remaining = absl::ZeroDuration();
};

struct FillLeaseStats {
  uint64_t acquired = 0;         // leases taken
  uint64_t contended = 0;        // acquires that found another holder
  uint64_t released = 0;         // leases given back by their holder
  uint64_t release_refused = 0;  // releases by a non-holder (expired, taken over)
  uint64_t waits = 0;            // AwaitFill calls
  uint64_t waits_filled = 0;     // ... answered with the holder's value
  uint64_t waits_vacant = 0;     // ... that found the lease gone and no value
  uint64_t waits_timed_out = 0;  // ... whose deadline passed first
  uint64_t polls = 0;            // round trips AwaitFill made
  uint64_t errors = 0;           // calls that failed (Unavailable)
};

// Status meanings, for every method:
//   Unavailable       the shared store cannot answer: fill locally
//   DeadlineExceeded  the deadline passed first
//   InvalidArgument   caller bug (empty key or token, non-positive ttl)
// Every method returns at once and calls `done` exactly once, possibly
// inline, else on the implementation's I/O thread (it must not block).
// Thread-safe.
class FillLease {
 public:
  using AcquireDone = absl::AnyInvocable<void(absl::StatusOr<LeaseGrant>) &&>;
  using ReleaseDone = absl::AnyInvocable<void(absl::Status) &&>;
  using AwaitDone = absl::AnyInvocable<void(absl::StatusOr<Entry>) &&>;

  virtual ~FillLease() = default;
  FillLease() = default;
  FillLease(const FillLease&) = delete;
  FillLease& operator=(const FillLease&) = delete;

  // Takes the lease on `key` for `ttl` unless someone holds it. Exactly one
  // of several concurrent callers (on any pods) acquires it.
  virtual void Acquire(absl::string_view key, absl::Duration ttl, absl::Time deadline,
                       AcquireDone done) = 0;

  // Gives the lease back if `token` still holds it. FailedPrecondition when
  // it does not (it expired, and perhaps another caller took it): nothing
  // changes then.
  virtual void Release(absl::string_view key, absl::string_view token, absl::Time deadline,
                       ReleaseDone done) = 0;

  // Waits for the holder's write of `key`: OK with the first entry found
  // whose fetched_at is after `newer_than` and which is not past its
  // stale_until; NotFound when the lease is gone and no such entry exists
  // (the holder died or gave up: fetch the key yourself). Looks at once;
  // how it learns of a later write (polling, a notification) is the
  // implementation's.
  virtual void AwaitFill(absl::string_view key, absl::Time newer_than, absl::Time deadline,
                         AwaitDone done) = 0;

  virtual FillLeaseStats Stats() const = 0;
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_FILL_LEASE_H_
