#include "server/admin_metrics.h"

#include <prometheus/metric_family.h>

#include <algorithm>
#include <deque>
#include <limits>

#include "absl/strings/str_cat.h"
#include "cache/invalidator.h"
#include "cache/origin_push.h"
#include "cache/tiers/redis/redis_tier.h"
#include "cache/tiers/rocksdb/rocksdb_tier.h"
#include "server/watch_service.h"

namespace fanout::server {

// --- RegistryCollector -----------------------------------------------------

std::vector<prometheus::MetricFamily> RegistryCollector::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  for (MetricFamilySample& f : registry_->Read()) {
    prometheus::MetricFamily family;
    family.name = std::move(f.name);
    family.help = std::move(f.help);
    switch (f.kind) {
      case MetricKind::kCounter:
        family.type = prometheus::MetricType::Counter;
        break;
      case MetricKind::kGauge:
        family.type = prometheus::MetricType::Gauge;
        break;
      case MetricKind::kHistogram:
        family.type = prometheus::MetricType::Histogram;
        break;
    }
    for (MetricSample& sample : f.samples) {
      prometheus::ClientMetric m;
      for (auto& [name, value] : sample.labels) m.label.push_back({name, value});
      // By name, as prometheus-cpp's own families write them, so that a
      // series reads the same whichever component made it.
      std::sort(m.label.begin(), m.label.end(),
                [](const prometheus::ClientMetric::Label& a,
                   const prometheus::ClientMetric::Label& b) { return a.name < b.name; });
      if (f.kind == MetricKind::kCounter) {
        m.counter.value = sample.value;
      } else if (f.kind == MetricKind::kGauge) {
        m.gauge.value = sample.value;
      } else {
        const Histogram::Snapshot& h = sample.histogram;
        uint64_t cumulative = 0;
        for (size_t i = 0; i < h.counts.size(); ++i) {
          cumulative += h.counts[i];
          prometheus::ClientMetric::Bucket b;
          b.cumulative_count = cumulative;
          b.upper_bound = i < h.bounds.size() ? absl::ToDoubleSeconds(h.bounds[i])
                                              : std::numeric_limits<double>::infinity();
          m.histogram.bucket.push_back(b);
        }
        m.histogram.sample_count = cumulative;
        m.histogram.sample_sum = absl::ToDoubleSeconds(h.sum);
      }
      family.metric.push_back(std::move(m));
    }
    if (!family.metric.empty()) out.push_back(std::move(family));
  }
  return out;
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
  Sample(out.Add("fanout_refreshes_skipped_total",
                 "Refreshes not started because cache.max_background_refreshes were under way",
                 MetricType::Counter),
         {}, s.refreshes_skipped);
  Sample(out.Add("fanout_negative_hits_total",
                 "Reads answered NOT_FOUND from a remembered NotFound (cache.negative_ttl)",
                 MetricType::Counter),
         {}, s.negative_hits);
  Sample(out.Add("fanout_backoff_answers_total",
                 "Reads answered without an origin fetch because the key was in its retry "
                 "backoff (cache.retry_backoff)",
                 MetricType::Counter),
         {}, s.backoff_answers);
  Sample(
      out.Add("fanout_deadline_answers_total",
              "Reads answered before their deadline while their fill went on", MetricType::Counter),
      {}, s.deadline_answers);
  Sample(out.Add("fanout_cancelled_reads_total",
                 "Reads whose caller cancelled while they waited for a fill", MetricType::Counter),
         {}, s.cancelled);
  Sample(out.Add("fanout_detached_fills_total",
                 "Fills detached by Invalidate or a bypass_cache read (they cache nothing)",
                 MetricType::Counter),
         {}, s.detached_fills);
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

void CollectRedis(const cache::RedisTier& redis, Families& out) {
  const cache::RedisClientStats s = redis.client_stats();
  MetricFamily& circuit =
      out.Add("fanout_l2_circuit_state",
              "1 for the state the Redis client's circuit breaker is in (closed: calls go "
              "through; open: refused at once; half_open: trying again)",
              MetricType::Gauge);
  using State = cache::CircuitBreaker::State;
  Sample(circuit, {{"state", "closed"}}, s.circuit == State::kClosed ? 1 : 0);
  Sample(circuit, {{"state", "open"}}, s.circuit == State::kOpen ? 1 : 0);
  Sample(circuit, {{"state", "half_open"}}, s.circuit == State::kHalfOpen ? 1 : 0);
  Sample(out.Add("fanout_l2_circuit_opens_total", "Times the Redis circuit breaker opened",
                 MetricType::Counter),
         {}, s.circuit_opens);
  Sample(out.Add("fanout_l2_connections_ready", "Connections to Redis ready for commands",
                 MetricType::Gauge),
         {}, s.ready_connections);
  Sample(out.Add("fanout_l2_commands_total", "Commands sent to Redis", MetricType::Counter), {},
         s.commands);
  Sample(out.Add("fanout_l2_refused_total",
                 "Redis calls failed at once (circuit open, no ready connection)",
                 MetricType::Counter),
         {}, s.refused);
  Sample(out.Add("fanout_l2_connection_losses_total",
                 "Ready connections to Redis lost, or closed after a timeout", MetricType::Counter),
         {}, s.connection_losses);
  Sample(out.Add("fanout_l2_connect_failures_total",
                 "Connection attempts to Redis that failed (refused, timed out, AUTH)",
                 MetricType::Counter),
         {}, s.connect_failures);
}

void CollectL3(const cache::RocksDbTier& l3, Families& out) {
  const cache::RocksDbTierState s = l3.State();
  Sample(out.Add("fanout_l3_disk_bytes",
                 "SST bytes of the survival tier on disk (cache.l3.max_bytes caps them)",
                 MetricType::Gauge),
         {}, s.sst_bytes);
  Sample(out.Add("fanout_l3_read_only",
                 "1 while the survival tier does not write (opened read-only, a write failure, "
                 "full)",
                 MetricType::Gauge),
         {}, s.read_only ? 1 : 0);
}

void CollectPush(const cache::OriginPush& push, Families& out) {
  const cache::OriginPushStats s = push.Stats();
  Sample(out.Add("fanout_origin_changes_total",
                 "Changes the origin reported by itself (inotify, Origin.Watch), applied as "
                 "invalidations",
                 MetricType::Counter),
         {}, static_cast<double>(s.changes));
  Sample(
      out.Add("fanout_origin_changed_keys_total",
              "Keys named by the origin's changes (a prefix counts as one)", MetricType::Counter),
      {}, static_cast<double>(s.keys));
  Sample(out.Add("fanout_origin_resets_total",
                 "Changes naming every key (the origin could not say which changed): L1 dropped",
                 MetricType::Counter),
         {}, static_cast<double>(s.resets));
  Sample(out.Add("fanout_origin_changes_not_broadcast_total",
                 "Invalidations of origin changes applied on this pod only (the stream or L2 "
                 "failed)",
                 MetricType::Counter),
         {}, static_cast<double>(s.not_broadcast));
}

void CollectInvalidation(const cache::Invalidator& invalidator, Families& out) {
  const cache::InvalidatorStats s = invalidator.Stats();
  MetricFamily& made = out.Add("fanout_invalidations_total",
                               "Invalidations applied here, by where they were made: this pod "
                               "(Invalidate) or another (the invalidation stream)",
                               MetricType::Counter);
  Sample(made, {{"from", "local"}}, static_cast<double>(s.made));
  Sample(made, {{"from", "remote"}}, static_cast<double>(s.applied));
  Sample(out.Add("fanout_invalidations_not_broadcast_total",
                 "Invalidations made here that the stream did not take (other pods may still "
                 "serve the old value until their own limits)",
                 MetricType::Counter),
         {}, static_cast<double>(s.not_broadcast));
  Sample(out.Add("fanout_invalidation_cache_drops_total",
                 "Times L1 was dropped whole because invalidations were missed (a gap)",
                 MetricType::Counter),
         {}, static_cast<double>(s.cache_drops));
  if (s.has_bus) {
    Sample(out.Add("fanout_invalidation_link_up",
                   "1 while this pod reads the invalidation stream, 0 while it is degraded",
                   MetricType::Gauge),
           {}, s.link == cache::LinkState::kUp ? 1 : 0);
  }
}

void CollectWatch(const WatchService& watch, Families& out) {
  const WatchStats s = watch.Stats();
  Sample(out.Add("fanout_watch_streams", "Watch streams open now", MetricType::Gauge), {},
         static_cast<double>(s.open));
  Sample(
      out.Add("fanout_watch_events_total", "Events written to Watch streams", MetricType::Counter),
      {}, static_cast<double>(s.events));
  Sample(out.Add("fanout_watch_cut_off_total",
                 "Watch streams ended because their reader fell behind by watch.buffer_bytes",
                 MetricType::Counter),
         {}, static_cast<double>(s.cut_off));
  Sample(out.Add("fanout_watch_refused_total", "Watch streams refused past watch.max_streams",
                 MetricType::Counter),
         {}, static_cast<double>(s.refused));
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
  if (sources_.redis != nullptr) CollectRedis(*sources_.redis, out);
  if (sources_.l3 != nullptr) CollectL3(*sources_.l3, out);
  if (sources_.invalidator != nullptr) CollectInvalidation(*sources_.invalidator, out);
  if (sources_.push != nullptr) CollectPush(*sources_.push, out);
  if (sources_.watch != nullptr) CollectWatch(*sources_.watch, out);
  if (sources_.router) {
    if (std::shared_ptr<const router::Router> router = sources_.router()) {
      CollectRouter(*router, out);
    }
  }
  return out.Take();
}

}  // namespace fanout::server
