// fanoutd's Prometheus metrics: the only place that knows Prometheus. Two
// sources, both bounded in series:
//
// - RegistryCollector exposes the MetricRegistry (common/metrics.h) the
//   components count into as they work: gRPC calls by method and code,
//   latencies, Get answers by tier (rpc_metrics.h), Route calls, branches,
//   ejections and adaptive commits (router/), origin fetch latency (the
//   read path), configuration reloads.
// - ComponentCollector reads the components' own statistics at scrape time
//   (read path, L1, lower tiers, router): nothing is counted twice and the
//   hot paths carry no extra work for it.
//
// No label ever holds a key, a namespace or a payload: labels are method
// names, status codes, tier names, route and backend names from the
// configuration, and fixed enumerations.
#ifndef FANOUT_SERVER_ADMIN_METRICS_H_
#define FANOUT_SERVER_ADMIN_METRICS_H_

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cache/l1_cache.h"
#include "cache/read_path.h"
#include "cache/tier.h"
#include "common/metrics.h"
#include "router/router.h"

namespace fanout::cache {
class Invalidator;
class OriginPush;
class RedisTier;
class RocksDbTier;
}  // namespace fanout::cache

namespace fanout::server {

class WatchService;

// A Collectable over a MetricRegistry (not owned; must outlive this).
class RegistryCollector final : public prometheus::Collectable {
 public:
  explicit RegistryCollector(const MetricRegistry* registry) : registry_(registry) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const MetricRegistry* const registry_;
};

// A Collectable over the components' own statistics, read at each scrape.
// Every pointer is not owned and must outlive this; null ones are skipped.
class ComponentCollector final : public prometheus::Collectable {
 public:
  struct Sources {
    const cache::ReadPath* read_path = nullptr;
    const cache::L1Cache* l1 = nullptr;
    uint64_t l1_capacity_bytes = 0;
    // Lower tiers by name ("l2", "l3"), in read order.
    std::vector<std::pair<std::string, const cache::Tier*>> tiers;
    // The same tiers again, for what only they report (Redis connections
    // and circuit, L3's disk use).
    const cache::RedisTier* redis = nullptr;
    const cache::RocksDbTier* l3 = nullptr;
    // Cross-pod invalidation and the Watch streams; unset = none.
    const cache::Invalidator* invalidator = nullptr;
    const WatchService* watch = nullptr;
    // The origin's push of changes (origin.push); unset = none.
    const cache::OriginPush* push = nullptr;
    // The router calls use now (a reload replaces it); unset = none.
    std::function<std::shared_ptr<const router::Router>()> router{};
  };
  explicit ComponentCollector(Sources sources) : sources_(std::move(sources)) {}

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const Sources sources_;
};

}  // namespace fanout::server

#endif  // FANOUT_SERVER_ADMIN_METRICS_H_
