// Applies the changes an origin pushes (Origin::WatchChanges) as
// invalidations made on this pod: L1, the shared tier and the other pods
// through the bus, and L3's marking, exactly like an Invalidate call. Every
// pod watching the same origin makes its own invalidation of a change; they
// are idempotent.
#ifndef FANOUT_CACHE_ORIGIN_PUSH_H_
#define FANOUT_CACHE_ORIGIN_PUSH_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "cache/invalidator.h"
#include "cache/origin.h"

namespace fanout::cache {

struct OriginPushStats {
  uint64_t changes = 0;        // changes the origin pushed
  uint64_t keys = 0;           // keys named by them (a prefix counts as one)
  uint64_t not_broadcast = 0;  // invalidations applied here but not beyond (bus or L2 failed)
  uint64_t resets = 0;         // changes naming every key (OriginChange::all)
};

// A change naming every key (OriginChange::all), of one namespace or of
// all, is applied as Invalidator::InvalidateEverything: L1 of every
// namespace is dropped on this pod; the shared tier keeps its copies until
// their ttl.
//
// Thread-safe.
class OriginPush {
 public:
  // Starts the origin's push. Unimplemented when the origin does not push;
  // its other errors as the origin gives them. An invalidation names at most
  // `max_keys` keys: a larger change is sent as several. `origin`,
  // `invalidator`: not owned; must outlive this.
  static absl::StatusOr<std::unique_ptr<OriginPush>> Start(Origin* origin, Invalidator* invalidator,
                                                           size_t max_keys);
  // Ends the push (no change is applied after it returns); invalidations
  // already handed to the invalidator finish on their own.
  ~OriginPush();
  OriginPush(const OriginPush&) = delete;
  OriginPush& operator=(const OriginPush&) = delete;

  OriginPushStats Stats() const;

 private:
  struct Counts;
  OriginPush(Invalidator* invalidator, size_t max_keys);
  void Apply(OriginChange change);

  Invalidator* const invalidator_;
  const size_t max_keys_;
  std::shared_ptr<Counts> counts_;
  std::unique_ptr<OriginWatch> watch_;
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_ORIGIN_PUSH_H_
