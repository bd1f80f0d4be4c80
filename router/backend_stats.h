// Live statistics of one backend of one route: load in flight, latency,
// race wins, and outlier ejection. Routes naming the same address share its
// channel, not its statistics.
#ifndef FANOUT_ROUTER_BACKEND_STATS_H_
#define FANOUT_ROUTER_BACKEND_STATS_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "router/route_config.h"

namespace fanout::router {

// True for the codes that say a backend is unhealthy (see EjectionConfig).
bool IsBackendFailure(absl::StatusCode code);

struct BackendSnapshot {
  int64_t in_flight = 0;
  int64_t in_flight_cost = 0;
  int64_t calls = 0;     // finished calls, cancelled ones included
  int64_t failures = 0;  // IsBackendFailure
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
};

// Thread-safe. `clock`: not owned; must outlive this.
class BackendStats {
 public:
  // Latency percentiles come from a ring of this many recent successes.
  static constexpr int kLatencySamples = 128;
  // Percentile() answers only with at least this many samples.
  static constexpr int kMinSamples = 8;
  // Weight of a new sample in the latency EWMA.
  static constexpr double kEwmaWeight = 0.2;

  BackendStats(Clock* clock, EjectionConfig ejection);
  BackendStats(const BackendStats&) = delete;
  BackendStats& operator=(const BackendStats&) = delete;

  // May selection pick this backend now? False while ejected; once the
  // ejection period is over, true while no probe call is in flight.
  bool Admissible() const;

  // A call with `cost` starts. A call started after the ejection period is
  // the probe that decides re-admission.
  void OnStart(int64_t cost);
  // The call started with `cost` ended with `status` after `latency`.
  // Cancelled calls count neither as samples nor as failures.
  void OnFinish(int64_t cost, const absl::Status& status, absl::Duration latency);
  void OnRace(bool won);

  int64_t in_flight() const;
  int64_t in_flight_cost() const;
  absl::Duration latency_ewma() const;
  // The q-quantile (0..1) of recent successful latencies; nullopt with fewer
  // than kMinSamples samples.
  std::optional<absl::Duration> Percentile(double q) const;
  BackendSnapshot Snapshot() const;

 private:
  std::optional<absl::Duration> PercentileLocked(double q) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EjectLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Clock* const clock_;
  const EjectionConfig ejection_;

  mutable absl::Mutex mu_;
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
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
  bool probe_in_flight_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fanout::router

#endif  // FANOUT_ROUTER_BACKEND_STATS_H_
