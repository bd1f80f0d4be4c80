// Cross-pod invalidation: how an invalidation made on one pod reaches every
// other pod, and how a pod learns that it may have missed some.
//
// A bus carries Invalidation messages between the pods of one deployment.
// Every pod publishes the invalidations it makes (an Invalidate call, a
// change its origin pushed) and subscribes to the others'. The bus also
// reports the state of the pod's link to it: while the link is down the pod
// cannot know what it misses, so it limits how long it trusts what it has
// cached (LinkGuard), and when the bus cannot replay what was missed it says
// so (OnGap), and the pod drops what it has cached.
//
// The Redis implementation (cache/tiers/redis/redis_bus.h) keeps messages in
// a bounded Redis Stream that each pod reads from the last message it
// applied; a fake for tests is tests/testing/fake_invalidation_bus.h.
#ifndef FANOUT_CACHE_INVALIDATION_BUS_H_
#define FANOUT_CACHE_INVALIDATION_BUS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"

namespace fanout::cache {

// One invalidation: `keys`, and every key starting with `prefix` when it is
// not empty, in namespace `ns`.
struct Invalidation {
  std::string ns;
  std::vector<std::string> keys;
  std::string prefix;
  // Also drop the keys from the survival tier (L3) rather than keeping them
  // as stale-only copies.
  bool purge_survival = false;
  // Set by the bus on Publish: the publishing bus's id, and its count of
  // publishes (from 1).
  std::string sender;
  uint64_t sequence = 0;
};

enum class LinkState {
  kUp,        // messages from other pods arrive as they are published
  kDegraded,  // the link is down or has not answered in time: messages may be missed
};
const char* LinkStateName(LinkState state);

struct InvalidationBusStats {
  uint64_t published = 0;         // Publish calls the shared store accepted
  uint64_t publish_failures = 0;  // Publish calls that failed
  uint64_t received = 0;          // messages from other pods delivered to subscribers
  uint64_t gaps = 0;              // OnGap deliveries: messages missed for good
  uint64_t link_downs = 0;        // transitions to kDegraded
  uint64_t fenced_stores = 0;     // shared-tier writes refused as older than an invalidation
  LinkState link = LinkState::kDegraded;
  // Position of the last message applied, as the implementation names it
  // (a Redis Stream id); empty before the first.
  std::string last_applied;
};

// Thread-safe. Callbacks to subscribers run on the bus's own thread, one at
// a time and in the order of the messages, each subscriber in the order it
// subscribed; they must not block (they hold up every later message) and
// must not call Subscribe or Unsubscribe. A message counts as applied once
// every subscriber has returned from it.
class InvalidationBus {
 public:
  class Subscriber {
   public:
    virtual ~Subscriber() = default;
    // An invalidation published by another pod. The bus does not deliver a
    // pod's own messages back to it: the publisher applies them itself.
    virtual void OnInvalidation(const Invalidation& invalidation) = 0;
    // The link changed state. Starts kDegraded until the first read answers.
    virtual void OnLinkState(LinkState state) = 0;
    // Messages were missed and cannot be replayed (the bounded log dropped
    // them, or the shared store lost it): anything cached may be stale.
    // Delivered before the messages that follow the gap.
    virtual void OnGap() = 0;
  };
  using PublishDone = absl::AnyInvocable<void(absl::Status) &&>;

  virtual ~InvalidationBus() = default;
  InvalidationBus() = default;
  InvalidationBus(const InvalidationBus&) = delete;
  InvalidationBus& operator=(const InvalidationBus&) = delete;

  // Sends `invalidation` to every other pod; sets its sender and sequence.
  // `done` runs once, on any thread (possibly inline), with OK once the
  // shared store has accepted the message: from then on every pod applies
  // it, now or when its link is back (or, past a gap, drops its cache).
  // An implementation on the shared tier also removes the shared tier's
  // copies of the keys before it says OK, and fences them against writes
  // of fills that started before (see RedisBus). Errors:
  //   Unavailable       the shared store could not take it
  //   DeadlineExceeded  `deadline` passed first
  //   InvalidArgument   nothing to invalidate
  virtual void Publish(Invalidation invalidation, absl::Time deadline, PublishDone done) = 0;

  // `subscriber`: not owned; stays subscribed until Unsubscribe, which
  // waits for a callback to it under way on another thread.
  virtual void Subscribe(Subscriber* subscriber) = 0;
  virtual void Unsubscribe(Subscriber* subscriber) = 0;

  virtual LinkState link_state() const = 0;
  // Unique per bus instance (per pod and start): the `sender` of what it
  // publishes.
  virtual const std::string& id() const = 0;
  virtual InvalidationBusStats Stats() const = 0;
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_INVALIDATION_BUS_H_
