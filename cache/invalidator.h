// Where invalidations are applied on a pod: the ones it makes (an
// Invalidate call, a change its origin pushed) and the ones other pods send
// through the invalidation bus; and what the pod does when its link to the
// bus goes down or misses messages for good.
//
//   made here    L1 (at once) → the bus (which, on the shared tier, fences
//                and erases L2, then logs the message for the others) → L1
//                again and L3. The second L1 pass drops what a read may
//                have refilled from L2 before L2 was erased.
//   from others  L1 and L3 (L2 was erased by the sender).
//   link down    LinkGuard: L1 and L3 answers capped at max_local_ttl.
//   gap          L1 dropped; L3 copies from before kept only as fallbacks.
//
// Listeners (the Watch RPC) hear of each invalidation once it has been
// applied on this pod, and of link changes and gaps.
#ifndef FANOUT_CACHE_INVALIDATOR_H_
#define FANOUT_CACHE_INVALIDATOR_H_

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cache/invalidation_bus.h"
#include "cache/link_guard.h"
#include "cache/read_path.h"
#include "common/clock.h"

namespace fanout::cache {

struct InvalidatorOptions {
  // Deadline of one publish to the bus (its shared-tier work included).
  absl::Duration publish_timeout = absl::Seconds(2);
};

struct InvalidatorStats {
  bool has_bus = false;
  uint64_t made = 0;           // invalidations made on this pod
  uint64_t not_broadcast = 0;  // ... that the bus did not take
  uint64_t applied = 0;        // invalidations from other pods applied here
  uint64_t cache_drops = 0;    // gaps, InvalidateEverything, a first link-up with L1 entries
  LinkState link = LinkState::kUp;
  InvalidationBusStats bus;  // when has_bus
};

// Thread-safe.
class Invalidator final : private InvalidationBus::Subscriber {
 public:
  struct Result {
    uint64_t evicted = 0;    // L1 entries erased on this pod
    bool broadcast = false;  // the bus took it: every pod applies it
  };
  using Done = absl::AnyInvocable<void(absl::StatusOr<Result>) &&>;

  // `bus` may be null: a single pod, whose invalidations stay on it (its
  // read path then has no shared tier). With a bus, the guard starts
  // distrusting L3 copies written before now (invalidations sent while
  // this pod was down are unknown to it) and follows the link's state.
  // `read_path`, `bus`, `guard`, `clock`: not owned; must outlive this.
  Invalidator(ReadPath* read_path, InvalidationBus* bus, LinkGuard* guard, Clock* clock,
              InvalidatorOptions options = {});
  ~Invalidator() override;
  Invalidator(const Invalidator&) = delete;
  Invalidator& operator=(const Invalidator&) = delete;

  // Applies `invalidation` on this pod and sends it to the others. `done`
  // runs once, on any thread, possibly inline: OK once it is applied here
  // and (with a bus) the bus took it; Unavailable when the bus did not (it
  // is applied here all the same; other pods may keep serving the old
  // value: retry), or when the shared tier could not erase it (no bus).
  void Invalidate(Invalidation invalidation, Done done);

  // For a change nobody can name (the origin lost its place in its log of
  // changes: every key may have changed): drops everything L1 holds,
  // detaches the fills under way and forgets remembered NotFounds and
  // backoffs (ReadPath::InvalidateAll), and makes this pod's L3 copies from
  // before now serve only as stale fallbacks (where L3 is guarded: with a
  // bus). Nothing is sent to the other pods (each one watching the origin
  // hears the same from it), and the shared tier (L2) keeps its copies until
  // their ttl: a read may fill L1 from there again. Listeners hear it as a
  // gap. Returns how many L1 entries were dropped.
  uint64_t InvalidateEverything();

  // `listener` hears of every invalidation once applied on this pod (its
  // own included), of link changes and of gaps; from the thread that
  // applied it. Callbacks must not block, nor add or remove listeners.
  // Not owned; RemoveListener waits for callbacks under way.
  void AddListener(InvalidationBus::Subscriber* listener);
  void RemoveListener(InvalidationBus::Subscriber* listener);

  LinkState link_state() const;
  bool has_bus() const { return bus_ != nullptr; }
  InvalidatorStats Stats() const;

 private:
  // InvalidationBus::Subscriber: messages from other pods.
  void OnInvalidation(const Invalidation& invalidation) override;
  void OnLinkState(LinkState state) override;
  void OnGap() override;

  // Calls `f` on every listener, outside mu_.
  template <typename F>
  void Notify(F f);

  ReadPath* const read_path_;
  InvalidationBus* const bus_;
  LinkGuard* const guard_;
  Clock* const clock_;
  const InvalidatorOptions options_;

  mutable absl::Mutex mu_;
  std::vector<InvalidationBus::Subscriber*> listeners_ ABSL_GUARDED_BY(mu_);
  int notifying_ ABSL_GUARDED_BY(mu_) = 0;
  LinkState link_ ABSL_GUARDED_BY(mu_) = LinkState::kUp;
  bool never_up_ ABSL_GUARDED_BY(mu_) = false;  // with a bus, until its first kUp
  uint64_t made_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t not_broadcast_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t applied_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t cache_drops_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_INVALIDATOR_H_
