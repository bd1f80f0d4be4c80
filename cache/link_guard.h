// What a pod may still trust of what it holds while it may be missing
// invalidations: its link to the invalidation bus is down, or it missed
// some for good (a gap) or before it started.
//
// While the link is down, an entry is served as fresh from this pod's own
// tiers (L1, L3) only while it is known to be valid: for max_local_ttl past
// the later of its fetch and the moment the link went down. Past that the
// read goes on to L2 (erased by every invalidation) or the origin, and the
// copy is kept only as a stale fallback. Entries this pod's survival tier
// (L3) wrote before the last gap, or before the pod started following the
// bus, are never fresh again (L1 is dropped at a gap; L3 is not, it keeps
// its copies for outages).
#ifndef FANOUT_CACHE_LINK_GUARD_H_
#define FANOUT_CACHE_LINK_GUARD_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/time/time.h"
#include "cache/entry.h"
#include "cache/tier.h"
#include "common/clock.h"

namespace fanout::cache {

// Thread-safe; the checks are lock-free (they run on every L1 hit).
class LinkGuard {
 public:
  explicit LinkGuard(absl::Duration max_local_ttl) : max_local_ttl_(max_local_ttl) {}
  LinkGuard(const LinkGuard&) = delete;
  LinkGuard& operator=(const LinkGuard&) = delete;

  // The link is down since `since` (kept if already down), or up again.
  void SetDegraded(absl::Time since);
  void SetUp();
  bool degraded() const { return degraded_since_.load(std::memory_order_acquire) != kNone; }

  // Local-tier entries fetched before `t` are never fresh again. Only moves
  // forward.
  void DistrustLocalBefore(absl::Time t);

  // Whether an L1 entry may be served fresh at `now`.
  bool TrustL1(const Entry& e, absl::Time now) const;
  // The same for an entry of this pod's own lower tiers (L3), which also
  // honours DistrustLocalBefore.
  bool TrustLocal(const Entry& e, absl::Time now) const;

  absl::Duration max_local_ttl() const { return max_local_ttl_; }

 private:
  static constexpr int64_t kNone = INT64_MIN;

  const absl::Duration max_local_ttl_;
  std::atomic<int64_t> degraded_since_{kNone};  // Unix ns, kNone while up
  std::atomic<int64_t> local_floor_{kNone};     // Unix ns
};

// A tier of this pod's own (L3) seen through `guard`: entries it may not
// trust come out superseded (stale-only, as EraseMode::kSupersede leaves
// them), so the read path keeps them only as a fallback. Everything else is
// passed through. `guard` and `clock`: not owned; must outlive the tier.
std::unique_ptr<Tier> NewGuardedTier(std::unique_ptr<Tier> inner, const LinkGuard* guard,
                                     Clock* clock);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_LINK_GUARD_H_
