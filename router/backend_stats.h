// Live statistics of one backend of one route: load in flight, latency,
// race wins, and outlier ejection. Routes naming the same address share its
// channel, not its statistics.
//
// A call goes through three steps, each owned by an RAII object so that the
// statistics stay balanced whatever happens to the call:
//   BackendPass pass = stats.Admit();          // selection; may reserve the probe
//   BackendCall call = std::move(pass).Start(cost);  // counted in flight
//   std::move(call).Finish(status, latency, attribution);
// A pass dropped unused gives back a probe it reserved; a call dropped
// unfinished (a downstream that never called back) leaves the in-flight
// count and cost as an inconclusive end.
#ifndef FANOUT_ROUTER_BACKEND_STATS_H_
#define FANOUT_ROUTER_BACKEND_STATS_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "router/route_config.h"

namespace fanout::router {

// True for the codes that say a backend is unhealthy (see EjectionConfig).
bool IsBackendFailure(absl::StatusCode code);

// Who ended a call, as far as the router can tell.
enum class Attribution {
  // The backend: its answer (whatever the code), no connection, or no
  // answer within the route's full budget.
  kBackend,
  // fanout or the caller: a cancellation, a deadline shorter than the
  // route's budget, a dropped callback. Neither a failure nor an answer.
  kLocal,
};

// a + b for non-negative values, at most INT64_MAX.
int64_t SaturatingAdd(int64_t a, int64_t b);

// How many of a route's backends may be ejected at once: `backends` *
// `max_percent` / 100 rounded down, at least one when max_percent > 0.
// Thread-safe.
class EjectionBudget {
 public:
  EjectionBudget(int backends, int max_percent);
  EjectionBudget(const EjectionBudget&) = delete;
  EjectionBudget& operator=(const EjectionBudget&) = delete;

  // Takes one ejection slot; false when `limit()` backends are ejected.
  bool TryTake();
  // Gives back a slot taken by TryTake.
  void Give();
  int ejected() const { return ejected_.load(std::memory_order_relaxed); }
  int limit() const { return limit_; }

 private:
  const int limit_;
  std::atomic<int> ejected_{0};
};

class BackendStats;

// One call counted in flight on its backend (count and cost), from
// BackendPass::Start until Finish. Destroying it unfinished ends it as
// Attribution::kLocal. Move-only; the stats it points to (not owned) must
// outlive it.
class BackendCall {
 public:
  BackendCall() = default;
  BackendCall(BackendCall&& other) noexcept;
  BackendCall& operator=(BackendCall&& other) noexcept;
  BackendCall(const BackendCall&) = delete;
  BackendCall& operator=(const BackendCall&) = delete;
  ~BackendCall();

  // The call ended with `status` after `latency`. Once; a no-op on an empty
  // or finished call.
  void Finish(const absl::Status& status, absl::Duration latency, Attribution attribution) &&;
  bool active() const { return stats_ != nullptr; }
  bool probe() const { return probe_ != 0; }

 private:
  friend class BackendPass;
  BackendCall(BackendStats* stats, int64_t cost, uint64_t probe)
      : stats_(stats), cost_(cost), probe_(probe) {}

  BackendStats* stats_ = nullptr;
  int64_t cost_ = 0;
  uint64_t probe_ = 0;  // the probe token; 0 = not the probe
};

// Permission, taken at selection time, for one call to a backend. A probe
// pass holds the backend's single probe slot until the call it was taken for
// ends, or until the pass is dropped unused. Move-only; the stats it points
// to (not owned) must outlive it.
class BackendPass {
 public:
  BackendPass() = default;  // refused
  BackendPass(BackendPass&& other) noexcept;
  BackendPass& operator=(BackendPass&& other) noexcept;
  BackendPass(const BackendPass&) = delete;
  BackendPass& operator=(const BackendPass&) = delete;
  ~BackendPass();

  bool admitted() const { return stats_ != nullptr; }
  bool probe() const { return probe_ != 0; }
  // Starts the call: counts it in flight with `cost` (negative counts as 0).
  // Consumes the pass; an empty call for a refused pass.
  BackendCall Start(int64_t cost) &&;

 private:
  friend class BackendStats;
  BackendPass(BackendStats* stats, uint64_t probe) : stats_(stats), probe_(probe) {}

  BackendStats* stats_ = nullptr;
  uint64_t probe_ = 0;
};

struct BackendSnapshot {
  int64_t in_flight = 0;
  int64_t in_flight_cost = 0;
  int64_t calls = 0;     // finished calls, cancelled ones included
  int64_t failures = 0;  // IsBackendFailure, attributed to the backend
  int64_t races = 0;     // races this backend ran in
  int64_t wins = 0;      // races it won
  int consecutive_failures = 0;
  absl::Duration latency_ewma = absl::ZeroDuration();
  // Over the last kLatencySamples successful calls; zero without samples.
  absl::Duration p50 = absl::ZeroDuration();
  absl::Duration p95 = absl::ZeroDuration();
  absl::Duration p99 = absl::ZeroDuration();
  bool ejected = false;
  absl::Time ejected_until = absl::InfinitePast();
  bool probe_reserved = false;
};

// Thread-safe. `clock`: not owned; must outlive this. `budget`: the route's
// ejection budget, shared by its backends; not owned, must outlive this;
// nullptr = no limit. `ejections`: counts each ejection (a renewed one after
// a failed probe included); not owned, must outlive this; nullptr = none.
class BackendStats {
 public:
  // Latency percentiles come from a ring of this many recent successes.
  static constexpr int kLatencySamples = 128;
  // Percentile() answers only with at least this many samples.
  static constexpr int kMinSamples = 8;
  // Weight of a new sample in the latency EWMA.
  static constexpr double kEwmaWeight = 0.2;

  BackendStats(Clock* clock, EjectionConfig ejection, EjectionBudget* budget = nullptr,
               Counter* ejections = nullptr);
  BackendStats(const BackendStats&) = delete;
  BackendStats& operator=(const BackendStats&) = delete;

  // Selection: a pass while admitted; once the ejection period is over, a
  // probe pass for one caller at a time (the probe slot is reserved here);
  // otherwise a refused pass.
  BackendPass Admit();
  // A pass for a call made regardless of ejection (all, all_settled, every
  // backend ejected). Never a probe: it neither re-admits nor re-ejects.
  BackendPass Unchecked();
  // Would Admit() admit now? Reserves nothing.
  bool Admissible() const;

  void OnRace(bool won);

  int64_t in_flight() const;
  int64_t in_flight_cost() const;
  absl::Duration latency_ewma() const;
  // The q-quantile (0..1) of recent successful latencies; nullopt with fewer
  // than kMinSamples samples.
  std::optional<absl::Duration> Percentile(double q) const;
  BackendSnapshot Snapshot() const;

 private:
  friend class BackendPass;
  friend class BackendCall;

  void OnStart(int64_t cost);
  // `probe`: the call's probe token (0 = not the probe). Only the call
  // holding the current token re-admits or re-ejects.
  void OnFinish(int64_t cost, uint64_t probe, const absl::Status& status, absl::Duration latency,
                Attribution attribution);
  void ReleaseProbe(uint64_t probe);

  std::optional<absl::Duration> PercentileLocked(double q) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ejects (again) from `now`. `renew`: already ejected (a failed probe).
  void EjectLocked(absl::Time now, bool renew) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Clock* const clock_;
  const EjectionConfig ejection_;
  EjectionBudget* const budget_;
  Counter* const ejections_;

  mutable absl::Mutex mu_;
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  // Saturating: costs are capped at validation (kMaxRouteCost), so the sum
  // is exact up to millions of calls of the largest cost in flight.
  int64_t in_flight_cost_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t calls_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t failures_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t races_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t wins_ ABSL_GUARDED_BY(mu_) = 0;
  int consecutive_failures_ ABSL_GUARDED_BY(mu_) = 0;
  bool has_ewma_ ABSL_GUARDED_BY(mu_) = false;
  double ewma_us_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int64_t> samples_us_ ABSL_GUARDED_BY(mu_);  // ring of kLatencySamples
  size_t next_sample_ ABSL_GUARDED_BY(mu_) = 0;
  bool ejected_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time ejected_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int ejections_in_row_ ABSL_GUARDED_BY(mu_) = 0;
  // The token of the reserved probe; 0 = none.
  uint64_t probe_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_probe_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fanout::router

#endif  // FANOUT_ROUTER_BACKEND_STATS_H_
