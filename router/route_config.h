// Configuration of Route: named routes, each a gRPC method fanned out to a
// list of backends under a policy. Plain structs, filled by server/config.cc
// from `routes: {NAME: {policy, method, timeout, hedge_after, backends}}`;
// the defaults below are what an omitted field means.
#ifndef FANOUT_ROUTER_ROUTE_CONFIG_H_
#define FANOUT_ROUTER_ROUTE_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fanout::router {

// How a route fans a call out. Names in configuration are the lower-case
// forms: all, all_settled, first_success, fallback, hedged, least_loaded,
// round_robin, adaptive.
enum class Policy {
  kAll,           // every backend must answer; the first failure cancels the rest
  kAllSettled,    // every backend, each outcome reported; never fails as a whole
  kFirstSuccess,  // every backend at once; the first success wins
  kFallback,      // one backend at a time, in order, until one succeeds
  kHedged,        // like fallback, plus the next starts when no answer after hedge_after
  kLeastLoaded,   // one backend: least in-flight cost (+ this call's cost)
  kRoundRobin,    // one backend: in turn
  kAdaptive,      // races while learning; commits to a clear winner, re-races on regression
};

// InvalidArgument naming the value and the accepted names.
absl::StatusOr<Policy> ParsePolicy(absl::string_view name);
absl::string_view PolicyName(Policy policy);

struct BackendConfig {
  // gRPC target, e.g. "127.0.0.1:9000" or "dns:///models.internal:443".
  std::string address;
  // Label in responses and stats; empty = the address. Unique in a route.
  std::string name;
};

// Outlier ejection: a backend that fails `consecutive_failures` calls in a
// row (Unavailable, DeadlineExceeded, Internal, Unknown, ResourceExhausted,
// Aborted, DataLoss) is left out of selection for a period; then selection
// reserves one probe call at a time for it, and a successful probe re-admits
// it. Each ejection in a row doubles the period, up to max_ejection.
//
// Only what the backend did counts: a failure it answered, no connection, or
// no answer although the attempt had the route's full budget (its timeout,
// or attempt_timeout). Outcomes fanout or the caller caused count neither as
// failures nor as answers: cancellations (the caller's, a lost race, a
// failed sibling) and deadlines the caller made shorter than the route's.
//
// At most max_ejection_percent of a route's backends (rounded down, but at
// least one; 0 = none) are ejected at once; a backend past the threshold
// while that many are ejected stays in selection. Only selection policies
// eject (first_success, fallback, hedged, least_loaded, round_robin,
// adaptive); all and all_settled always call every backend. When every
// backend of a route is ejected, selection ignores ejection.
struct EjectionConfig {
  int consecutive_failures = 5;  // 0 disables ejection
  absl::Duration base_ejection = absl::Seconds(5);
  absl::Duration max_ejection = absl::Minutes(2);
  int max_ejection_percent = 50;  // 0..100
};

// ADAPTIVE: races every admitted backend and counts who wins. Once one
// backend has won at least commit_share of the last `window` races (and at
// least min_races races were seen; min_races <= window), calls go to it
// alone, except an explore_share of them, which race again. It goes back to
// racing when the committed backend's latency EWMA exceeds regression_factor
// times its value at commit time, when its error rate over the last `window`
// committed calls exceeds max_error_rate, or when it is ejected. Races and
// calls the caller ended (cancelled, or a deadline shorter than the route's
// budget) teach it nothing.
struct AdaptiveConfig {
  int window = 50;
  int min_races = 20;
  double commit_share = 0.8;
  // 3%: with 3 backends, exploring costs 0.06 extra calls a request, and a
  // regression is still sampled about once every 33 calls.
  double explore_share = 0.03;
  double regression_factor = 2.0;
  double max_error_rate = 0.2;
};

struct RouteConfig {
  std::string name;
  Policy policy = Policy::kFirstSuccess;
  // Full gRPC method name, "/package.Service/Method".
  std::string method;
  // Budget of one Route call; the call's deadline is min(caller's deadline,
  // now + timeout), or now + RouteRequest.timeout_ms when that is set.
  absl::Duration timeout = absl::Seconds(1);
  // HEDGED: start the next backend after this long without an answer. Zero =
  // the live p95 latency of the backend waited on (hedge_after_cold until it
  // has enough samples), at least hedge_after_floor.
  absl::Duration hedge_after = absl::ZeroDuration();
  absl::Duration hedge_after_cold = absl::Milliseconds(50);
  absl::Duration hedge_after_floor = absl::Milliseconds(1);
  // FALLBACK, HEDGED: how long one backend may take before the next is tried
  // (the call's deadline still bounds the whole). Infinite (unset) = for
  // FALLBACK, an equal share of the call's budget per backend tried (budget /
  // candidates), so that a hung backend cannot take the whole budget; for
  // HEDGED, no per-attempt limit (hedging moves on).
  absl::Duration attempt_timeout = absl::InfiniteDuration();
  std::vector<BackendConfig> backends;
  EjectionConfig ejection;
  AdaptiveConfig adaptive;
};

// InvalidArgument naming the route and field: empty name, no backends, a
// method not of the form "/service/method", a non-positive timeout, an empty
// address, duplicate backend names, out-of-range knobs, adaptive.min_races
// above adaptive.window.
absl::Status ValidateRouteConfig(const RouteConfig& route);

}  // namespace fanout::router

#endif  // FANOUT_ROUTER_ROUTE_CONFIG_H_
