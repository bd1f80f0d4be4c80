// Selection logic of the single-target policies, free of I/O so that it can
// be tested on its own: least-loaded by cost, and the ADAPTIVE controller.
#ifndef FANOUT_ROUTER_BALANCER_H_
#define FANOUT_ROUTER_BALANCER_H_

#include <cstdint>
#include <deque>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "router/route_config.h"

namespace fanout::router {

struct LoadView {
  int64_t in_flight_cost = 0;
  int64_t in_flight = 0;
  absl::Duration latency_ewma = absl::ZeroDuration();
};

// The index minimising in_flight_cost + cost (the sum saturates at
// INT64_MAX; negative values count as 0). Ties are broken by the power
// of two choices: two distinct tied indices drawn with `uniform(n)` (a
// uniform integer in [0, n)); the one with fewer calls in flight wins, then
// the one with the lower latency EWMA, then the first drawn. `loads` must
// not be empty.
int PickLeastLoaded(absl::Span<const LoadView> loads, int64_t cost,
                    absl::FunctionRef<size_t(size_t)> uniform);

// ADAPTIVE (see AdaptiveConfig): decides, call by call, between racing every
// backend and calling the one it has committed to, and learns from the
// results. Backends are indices into the route's list. Thread-safe.
class AdaptiveController {
 public:
  struct Decision {
    bool race = true;
    int backend = -1;  // when !race
  };

  AdaptiveController(AdaptiveConfig config, int backends);
  AdaptiveController(const AdaptiveController&) = delete;
  AdaptiveController& operator=(const AdaptiveController&) = delete;

  // `explore`: a uniform draw in [0, 1) deciding exploration. A committed
  // backend that is not `admissible` ends the commitment.
  Decision Next(double explore, absl::FunctionRef<bool(int)> admissible);
  // A race ended; `winner` is -1 when nobody succeeded. `winner_ewma` is the
  // winner's latency EWMA after the race. Returns whether this race made the
  // controller commit (to committed()).
  bool OnRace(int winner, absl::Duration winner_ewma);
  // A call to the committed backend ended.
  void OnCommittedCall(int backend, bool ok, absl::Duration ewma);

  // The committed backend, or -1 while racing.
  int committed() const;

 private:
  void UncommitLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const AdaptiveConfig config_;
  const int backends_;

  mutable absl::Mutex mu_;
  std::deque<int> winners_ ABSL_GUARDED_BY(mu_);  // last `window` race winners (-1 = none)
  int races_seen_ ABSL_GUARDED_BY(mu_) = 0;       // since the last change of mode
  int committed_ ABSL_GUARDED_BY(mu_) = -1;
  absl::Duration baseline_ewma_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  std::deque<bool> committed_results_ ABSL_GUARDED_BY(mu_);  // last `window`; true = failed
  int committed_failures_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fanout::router

#endif  // FANOUT_ROUTER_BALANCER_H_
