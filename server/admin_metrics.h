// fanoutd's Prometheus metrics. Two sources, both bounded in series:
//
// - RpcMetrics counts every gRPC call through a server interceptor (so the
//   handlers stay unaware of it): calls by method and status code, latency
//   histograms, calls in flight, and the tier that answered each Get value.
//   Methods are labelled only when a compiled-in service declares them;
//   any other name a client sends is counted as rpc="unknown".
// - ComponentCollector reads the components' own statistics at scrape time
//   (read path, L1, lower tiers, router): nothing is counted twice and the
//   hot paths carry no extra work for it.
//
// No label ever holds a key, a namespace or a payload: labels are method
// names, status codes, tier names, route and backend names from the
// configuration, and fixed enumerations.
#ifndef FANOUT_SERVER_ADMIN_METRICS_H_
#define FANOUT_SERVER_ADMIN_METRICS_H_

#include <grpcpp/support/server_interceptor.h>
#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "cache/l1_cache.h"
#include "cache/read_path.h"
#include "cache/tier.h"
#include "router/router.h"

namespace fanout::server {

// Thread-safe. Register its families in `registry` (not owned; must outlive
// this). Must outlive every server whose interceptors it made.
class RpcMetrics {
 public:
  explicit RpcMetrics(prometheus::Registry* registry);
  RpcMetrics(const RpcMetrics&) = delete;
  RpcMetrics& operator=(const RpcMetrics&) = delete;

  // For grpc::ServerBuilder::experimental().SetInterceptorCreators().
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewInterceptorFactory();

  // Latency buckets, in seconds.
  static const std::vector<double>& Buckets();

  // One method's series. Public for the interceptor in the .cc file.
  struct Method {
    enum class Kind { kOther, kGet, kBatchGet };
    std::string rpc;  // "package.Service/Method" or "unknown"
    Kind kind = Kind::kOther;
    prometheus::Histogram* latency = nullptr;
    prometheus::Gauge* in_flight = nullptr;
    // By grpc::StatusCode (0..16); made on first use.
    std::array<std::atomic<prometheus::Counter*>, 17> calls{};
  };

  // The series of `method` ("/package.Service/Method" as gRPC names it).
  Method* ForMethod(const char* method);
  void CountCall(Method* m, int code);
  // A value answered by `tier` (fanout::v1::Tier), stale or not.
  void CountAnswer(int tier, bool stale);

 private:
  // Makes the series of `rpc`, found under `key` from then on.
  Method* MakeMethod(std::string key, std::string rpc, Method::Kind kind)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  prometheus::Family<prometheus::Counter>& calls_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Family<prometheus::Gauge>& in_flight_;
  prometheus::Family<prometheus::Counter>& answers_;
  // [tier 1..4 - 1][stale]
  std::array<std::array<prometheus::Counter*, 2>, 4> answer_counters_{};

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Method>> methods_ ABSL_GUARDED_BY(mu_);
  Method* unknown_ ABSL_GUARDED_BY(mu_) = nullptr;
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
    const router::Router* router = nullptr;
  };
  explicit ComponentCollector(Sources sources) : sources_(std::move(sources)) {}

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const Sources sources_;
};

// Everything fanoutd exposes on /metrics: the registry with RpcMetrics, and
// the components' statistics. Thread-safe.
class Metrics {
 public:
  explicit Metrics(ComponentCollector::Sources sources)
      : rpc_(&registry_), components_(std::move(sources)) {}
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  RpcMetrics& rpc() { return rpc_; }
  // For AdminSources::collectables; valid while this lives.
  std::vector<const prometheus::Collectable*> collectables() const {
    return {&registry_, &components_};
  }

 private:
  prometheus::Registry registry_;
  RpcMetrics rpc_;
  ComponentCollector components_;
};

}  // namespace fanout::server

#endif  // FANOUT_SERVER_ADMIN_METRICS_H_
