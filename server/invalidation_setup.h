// The invalidation side of one fanoutd, built from its Config: the link
// guard, the invalidation bus on the L2 Redis (when cache.l2 is set), the
// invalidator and the Watch service.
//
//   Prepare   before the read path: wraps the lower tiers (L2 with fenced
//             writes, and starts the bus on its Redis; L3 with the guard)
//   Start     once the read path exists: the invalidator, Watch, and the
//             origin's push of changes (origin.push)
//   Shutdown  at the drain: ends the Watch streams
//   ~         stops the origin's push, Watch, the invalidator and the bus,
//             in that order (each calls into the next); before the read
//             path and the origin go
#ifndef FANOUT_SERVER_INVALIDATION_SETUP_H_
#define FANOUT_SERVER_INVALIDATION_SETUP_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "cache/invalidator.h"
#include "cache/link_guard.h"
#include "cache/origin.h"
#include "cache/origin_push.h"
#include "cache/read_path.h"
#include "cache/tier.h"
#include "common/executor.h"
#include "server/config.h"
#include "server/watch_service.h"

namespace fanout::cache {
class RedisBus;
class AppliedLog;
}  // namespace fanout::cache

namespace fanout::server {

// What the invalidation side reports, for metrics and tests.
struct InvalidationStats {
  cache::InvalidatorStats invalidator;  // the bus's state and counts are in .bus
  bool origin_push = false;             // the origin pushes its changes
  cache::OriginPushStats push;
  WatchStats watch;
};

class InvalidationSetup {
 public:
  // `lower`: the read path's lower tiers, L2 first when cache.l2 is set, L3
  // last when cache.l3 is. InvalidArgument for a bad invalidation section.
  static absl::StatusOr<std::unique_ptr<InvalidationSetup>> Prepare(
      const Config& config, std::vector<std::unique_ptr<cache::Tier>>* lower);
  ~InvalidationSetup();
  InvalidationSetup(const InvalidationSetup&) = delete;
  InvalidationSetup& operator=(const InvalidationSetup&) = delete;

  // For ReadPathOptions::link_guard.
  const cache::LinkGuard* guard() const { return guard_.get(); }
  bool has_bus() const { return bus_ != nullptr; }

  // `read_path`, `origin`, `executor`: not owned; must outlive this.
  void Start(cache::ReadPath* read_path, cache::Origin* origin, Executor* executor);
  void Shutdown();

  cache::Invalidator* invalidator() { return invalidator_.get(); }
  // The origin's push of changes; null when off or the origin cannot push.
  const cache::OriginPush* push() const { return push_.get(); }
  WatchService* watch() { return watch_.get(); }
  InvalidationStats Stats() const;

 private:
  explicit InvalidationSetup(const Config& config);

  const Config config_;
  std::unique_ptr<cache::LinkGuard> guard_;
  std::shared_ptr<cache::AppliedLog> applied_;
  std::unique_ptr<cache::RedisBus> bus_;
  std::unique_ptr<cache::Invalidator> invalidator_;
  std::unique_ptr<WatchService> watch_;
  std::unique_ptr<cache::OriginPush> push_;
};

}  // namespace fanout::server

#endif  // FANOUT_SERVER_INVALIDATION_SETUP_H_
