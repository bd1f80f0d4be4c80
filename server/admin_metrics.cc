#include "server/admin_metrics.h"

#include <google/protobuf/descriptor.h>
#include <prometheus/metric_family.h>

#include <chrono>
#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "fanout/v1/sidecar.pb.h"

namespace fanout::server {
namespace {

using grpc::experimental::InterceptionHookPoints;

const char* const kCodeNames[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};
static_assert(sizeof(kCodeNames) / sizeof(kCodeNames[0]) == 17);

const char* const kTierNames[] = {"l1", "l2", "l3", "origin"};

// Counts one call: created by gRPC when the call arrives, destroyed when it
// has ended.
class RpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(RpcMetrics* metrics, RpcMetrics::Method* method)
      : metrics_(metrics), method_(method), start_(std::chrono::steady_clock::now()) {
    method_->in_flight->Increment();
  }
  ~RpcMetricsInterceptor() override { method_->in_flight->Decrement(); }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (method_->kind != RpcMetrics::Method::Kind::kOther &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      CountAnswers(methods->GetSendMessage());
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start_;
      method_->latency->Observe(elapsed.count());
      metrics_->CountCall(method_, static_cast<int>(methods->GetSendStatus().error_code()));
    }
    methods->Proceed();
  }

 private:
  // The message is the handler's response object: the generated service
  // fixes its type per method.
  void CountAnswers(const void* message) {
    if (message == nullptr) return;
    if (method_->kind == RpcMetrics::Method::Kind::kGet) {
      const auto* r = static_cast<const fanout::v1::GetResponse*>(message);
      metrics_->CountAnswer(r->served_by(), r->stale());
    } else {
      const auto* r = static_cast<const fanout::v1::BatchGetResponse*>(message);
      for (const fanout::v1::BatchGetItem& item : r->items()) {
        if (item.code() == 0) metrics_->CountAnswer(item.served_by(), item.stale());
      }
    }
  }

  RpcMetrics* const metrics_;
  RpcMetrics::Method* const method_;
  const std::chrono::steady_clock::time_point start_;
};

class RpcMetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcMetricsInterceptorFactory(RpcMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcMetricsInterceptor(metrics_, metrics_->ForMethod(info->method()));
  }

 private:
  RpcMetrics* const metrics_;
};

}  // namespace

const std::vector<double>& RpcMetrics::Buckets() {
  static const std::vector<double>* const kBuckets =
      new std::vector<double>{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                              0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30};
  return *kBuckets;
}

RpcMetrics::RpcMetrics(prometheus::Registry* registry)
    : calls_(prometheus::BuildCounter()
                 .Name("fanout_requests_total")
                 .Help("gRPC calls finished, by method (rpc) and status code")
                 .Register(*registry)),
      latency_(prometheus::BuildHistogram()
                   .Name("fanout_request_duration_seconds")
                   .Help("Time from a gRPC call's arrival to its status, by method (rpc); for "
                         "streams, the stream's lifetime")
                   .Register(*registry)),
      in_flight_(prometheus::BuildGauge()
                     .Name("fanout_requests_in_flight")
                     .Help("gRPC calls (and Watch streams) under way, by method (rpc)")
                     .Register(*registry)),
      answers_(prometheus::BuildCounter()
                   .Name("fanout_get_answers_total")
                   .Help("Values answered by Get and BatchGet, by the tier that served them and "
                         "whether they were stale")
                   .Register(*registry)) {
  for (int tier = 0; tier < 4; ++tier) {
    for (int stale = 0; stale < 2; ++stale) {
      answer_counters_[tier][stale] =
          &answers_.Add({{"tier", kTierNames[tier]}, {"stale", stale ? "true" : "false"}});
    }
  }
  absl::MutexLock l(&mu_);
  unknown_ = MakeMethod("", "unknown", Method::Kind::kOther);
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
RpcMetrics::NewInterceptorFactory() {
  return std::make_unique<RpcMetricsInterceptorFactory>(this);
}

RpcMetrics::Method* RpcMetrics::MakeMethod(std::string key, std::string rpc, Method::Kind kind) {
  auto m = std::make_unique<Method>();
  m->rpc = rpc;
  m->kind = kind;
  m->latency = &latency_.Add({{"rpc", rpc}}, Buckets());
  m->in_flight = &in_flight_.Add({{"rpc", rpc}});
  Method* raw = m.get();
  methods_[std::move(key)] = std::move(m);
  return raw;
}

RpcMetrics::Method* RpcMetrics::ForMethod(const char* method) {
  const absl::string_view name = method != nullptr ? method : "";
  {
    absl::ReaderMutexLock l(&mu_);
    auto it = methods_.find(name);
    if (it != methods_.end()) return it->second.get();
  }
  // "/package.Service/Method": labelled only if a compiled-in service
  // declares it, so that clients cannot make series by sending names. Names
  // that are not are not remembered either.
  const std::string rpc(name.empty() ? name : name.substr(1));
  const bool known = name.size() > 1 && name[0] == '/' &&
                     std::count(rpc.begin(), rpc.end(), '/') == 1 &&
                     google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(
                         absl::StrReplaceAll(rpc, {{"/", "."}})) != nullptr;
  absl::MutexLock l(&mu_);
  if (!known) return unknown_;
  auto it = methods_.find(name);
  if (it != methods_.end()) return it->second.get();
  Method::Kind kind = Method::Kind::kOther;
  if (rpc == "fanout.v1.Sidecar/Get") kind = Method::Kind::kGet;
  if (rpc == "fanout.v1.Sidecar/BatchGet") kind = Method::Kind::kBatchGet;
  return MakeMethod(std::string(name), rpc, kind);
}

void RpcMetrics::CountCall(Method* m, int code) {
  if (code < 0 || code > 16) code = 2;  // UNKNOWN
  prometheus::Counter* c = m->calls[code].load(std::memory_order_acquire);
  if (c == nullptr) {
    // Family::Add returns the same counter for the same labels.
    c = &calls_.Add({{"rpc", m->rpc}, {"code", kCodeNames[code]}});
    m->calls[code].store(c, std::memory_order_release);
  }
  c->Increment();
}

void RpcMetrics::CountAnswer(int tier, bool stale) {
  if (tier < 1 || tier > 4) return;
  answer_counters_[tier - 1][stale ? 1 : 0]->Increment();
}

// --- ComponentCollector ----------------------------------------------------

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

class Families {
 public:
  MetricFamily& Add(std::string name, std::string help, MetricType type) {
    families_.push_back(MetricFamily{std::move(name), std::move(help), type, {}});
    return families_.back();
  }
  std::vector<MetricFamily> Take() {
    std::vector<MetricFamily> out;
    for (MetricFamily& f : families_) {
      if (!f.metric.empty()) out.push_back(std::move(f));
    }
    return out;
  }

 private:
  std::deque<MetricFamily> families_;  // references to its elements stay valid
};

void Sample(MetricFamily& family, std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  if (family.type == MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  family.metric.push_back(std::move(m));
}

void CollectReadPath(const cache::ReadPathStats& s, Families& out) {
  Sample(
      out.Add("fanout_origin_fetches_total",
              "Origin fills started (one per key however many readers wait)", MetricType::Counter),
      {}, s.origin_fetches);
  Sample(out.Add("fanout_origin_failures_total",
                 "Origin fills that ended without a value (not counting NotFound)",
                 MetricType::Counter),
         {}, s.origin_failures);
  Sample(out.Add("fanout_coalesced_reads_total", "Reads that joined a fill already under way",
                 MetricType::Counter),
         {}, s.coalesced);
  Sample(out.Add("fanout_refreshes_ahead_total", "Background refreshes started before expiry",
                 MetricType::Counter),
         {}, s.refreshes_ahead);
  Sample(out.Add("fanout_stale_fallbacks_total",
                 "Stale answers given because the origin could not answer", MetricType::Counter),
         {}, s.stale_served);
}

void CollectL1(const cache::L1Stats& s, uint64_t capacity, Families& out) {
  MetricFamily& lookups =
      out.Add("fanout_l1_lookups_total",
              "L1 lookups by result: hit (fresh), stale (found past expiry), miss; hit ratio = "
              "hit / sum",
              MetricType::Counter);
  Sample(lookups, {{"result", "hit"}}, s.hits);
  Sample(lookups, {{"result", "stale"}}, s.stale_hits);
  Sample(lookups, {{"result", "miss"}}, s.misses);
  MetricFamily& removals = out.Add("fanout_l1_removals_total",
                                   "Entries that left L1, by cause: size (evicted for the byte "
                                   "budget), expired, invalidated, replaced",
                                   MetricType::Counter);
  Sample(removals, {{"cause", "size"}}, s.evicted_size);
  Sample(removals, {{"cause", "expired"}}, s.evicted_expired);
  Sample(removals, {{"cause", "invalidated"}}, s.invalidated);
  Sample(removals, {{"cause", "replaced"}}, s.replaced);
  MetricFamily& rejected =
      out.Add("fanout_l1_rejected_total",
              "Inserts L1 declined, by reason: too_large (over the per-entry limit), not_admitted "
              "(the eviction policy preferred what it held)",
              MetricType::Counter);
  Sample(rejected, {{"reason", "too_large"}}, s.rejected_too_large);
  Sample(rejected, {{"reason", "not_admitted"}}, s.not_admitted);
  Sample(out.Add("fanout_l1_bytes", "Bytes charged to L1 now (key + value + per-entry overhead)",
                 MetricType::Gauge),
         {}, s.bytes);
  Sample(out.Add("fanout_l1_entries", "Entries in L1 now", MetricType::Gauge), {}, s.entries);
  if (capacity > 0) {
    Sample(out.Add("fanout_l1_capacity_bytes", "L1's byte budget (cache.l1.capacity)",
                   MetricType::Gauge),
           {}, capacity);
  }
}

void CollectTiers(const std::vector<std::pair<std::string, const cache::Tier*>>& tiers,
                  Families& out) {
  if (tiers.empty()) return;
  MetricFamily& lookups =
      out.Add("fanout_tier_lookups_total", "Lower-tier lookups by tier and result (hit, miss)",
              MetricType::Counter);
  MetricFamily& errors =
      out.Add("fanout_tier_errors_total",
              "Lower-tier operations that failed (unavailable, data loss)", MetricType::Counter);
  MetricFamily& timeouts =
      out.Add("fanout_tier_timeouts_total", "Lower-tier operations that ran past their deadline",
              MetricType::Counter);
  MetricFamily& stores =
      out.Add("fanout_tier_stores_total", "Entries written to a lower tier", MetricType::Counter);
  MetricFamily& dropped = out.Add(
      "fanout_tier_stores_dropped_total",
      "Writes a lower tier gave up without trying (queue full, tier down)", MetricType::Counter);
  MetricFamily& erased =
      out.Add("fanout_tier_erased_total", "Entries removed or superseded by invalidation",
              MetricType::Counter);
  MetricFamily& undecodable =
      out.Add("fanout_tier_undecodable_total",
              "Stored entries that did not decode (counted as misses)", MetricType::Counter);
  MetricFamily& queue =
      out.Add("fanout_tier_queue_depth", "Asynchronous writes not yet applied", MetricType::Gauge);
  MetricFamily& available =
      out.Add("fanout_tier_available",
              "1 while the tier does its work, 0 while it skips it (circuit open, read-only, "
              "closed)",
              MetricType::Gauge);
  for (const auto& [name, tier] : tiers) {
    if (tier == nullptr) continue;
    const cache::TierStats s = tier->Stats();
    Sample(lookups, {{"tier", name}, {"result", "hit"}}, s.hits);
    Sample(lookups, {{"tier", name}, {"result", "miss"}}, s.misses);
    Sample(errors, {{"tier", name}}, s.errors);
    Sample(timeouts, {{"tier", name}}, s.timeouts);
    Sample(stores, {{"tier", name}}, s.stores);
    Sample(dropped, {{"tier", name}}, s.stores_dropped);
    Sample(erased, {{"tier", name}}, s.erased);
    Sample(undecodable, {{"tier", name}}, s.undecodable);
    Sample(queue, {{"tier", name}}, s.queue_depth);
    Sample(available, {{"tier", name}}, s.available ? 1 : 0);
  }
}

void CollectRouter(const router::Router& router, Families& out) {
  const std::vector<std::string> names = router.RouteNames();
  if (names.empty()) return;
  MetricFamily& info = out.Add(
      "fanout_route_info", "One series per configured route, with its policy", MetricType::Gauge);
  MetricFamily& calls = out.Add(
      "fanout_route_backend_calls_total",
      "Calls to a route's backend that finished (cancelled ones included)", MetricType::Counter);
  MetricFamily& failures =
      out.Add("fanout_route_backend_failures_total",
              "Calls to a route's backend that failed in a way that counts against its health",
              MetricType::Counter);
  MetricFamily& races =
      out.Add("fanout_route_backend_races_total",
              "Races (hedged, adaptive) a route's backend ran in", MetricType::Counter);
  MetricFamily& wins = out.Add("fanout_route_backend_race_wins_total",
                               "Races a route's backend won", MetricType::Counter);
  MetricFamily& in_flight = out.Add("fanout_route_backend_in_flight",
                                    "Calls to a route's backend under way", MetricType::Gauge);
  MetricFamily& in_flight_cost = out.Add(
      "fanout_route_backend_in_flight_cost",
      "Cost (least_loaded units) of the calls to a route's backend under way", MetricType::Gauge);
  MetricFamily& ejected =
      out.Add("fanout_route_backend_ejected", "1 while a route's backend is ejected from selection",
              MetricType::Gauge);
  MetricFamily& ewma = out.Add("fanout_route_backend_latency_ewma_seconds",
                               "Moving average of a route's backend's latency", MetricType::Gauge);
  MetricFamily& recent = out.Add(
      "fanout_route_backend_recent_latency_seconds",
      "Quantiles of a route's backend's recent successful latencies (0 without enough samples)",
      MetricType::Gauge);
  MetricFamily& committed =
      out.Add("fanout_route_adaptive_committed",
              "Adaptive routes: 1 for the backend calls are committed to, 0 for the others (all 0 "
              "while racing)",
              MetricType::Gauge);
  for (const std::string& name : names) {
    absl::StatusOr<router::RouteReport> report = router.Report(name);
    if (!report.ok()) continue;
    Sample(info, {{"route", name}, {"policy", std::string(router::PolicyName(report->policy))}}, 1);
    for (size_t i = 0; i < report->backends.size(); ++i) {
      const router::BackendReport& b = report->backends[i];
      const router::BackendSnapshot& s = b.stats;
      const std::vector<ClientMetric::Label> labels = {{"route", name}, {"backend", b.name}};
      Sample(calls, labels, s.calls);
      Sample(failures, labels, s.failures);
      Sample(races, labels, s.races);
      Sample(wins, labels, s.wins);
      Sample(in_flight, labels, s.in_flight);
      Sample(in_flight_cost, labels, s.in_flight_cost);
      Sample(ejected, labels, s.ejected ? 1 : 0);
      Sample(ewma, labels, absl::ToDoubleSeconds(s.latency_ewma));
      for (const auto& [q, v] : {std::pair{"0.5", s.p50}, {"0.95", s.p95}, {"0.99", s.p99}}) {
        Sample(recent, {{"route", name}, {"backend", b.name}, {"quantile", q}},
               absl::ToDoubleSeconds(v));
      }
      if (report->policy == router::Policy::kAdaptive) {
        Sample(committed, labels, report->adaptive_committed == static_cast<int>(i) ? 1 : 0);
      }
    }
  }
}

}  // namespace

std::vector<prometheus::MetricFamily> ComponentCollector::Collect() const {
  Families out;
  if (sources_.read_path != nullptr) CollectReadPath(sources_.read_path->Stats(), out);
  if (sources_.l1 != nullptr) CollectL1(sources_.l1->Stats(), sources_.l1_capacity_bytes, out);
  CollectTiers(sources_.tiers, out);
  if (sources_.router != nullptr) CollectRouter(*sources_.router, out);
  return out.Take();
}

}  // namespace fanout::server
