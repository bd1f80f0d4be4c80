// Route: fans one call out to a route's backends under a policy, over a
// TaskGroup, and reports every branch.
//
// Threading: Route() never blocks; it starts downstream calls and returns.
// `done` runs once, on a gRPC completion thread, an executor thread, or
// inline (for errors found before any call starts). Timers (deadlines,
// hedging) run on the executor. Thread-safe.
#ifndef FANOUT_ROUTER_ROUTER_H_
#define FANOUT_ROUTER_ROUTER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/cancellation.h"
#include "common/executor.h"
#include "common/metrics.h"
#include "fanout/v1/sidecar.pb.h"
#include "router/backend_stats.h"
#include "router/downstream.h"
#include "router/route_config.h"

namespace fanout::router {

// A failed Route's status carries the RouteResponse (every branch) as a
// payload under this type URL, serialized.
inline constexpr char kRouteResponseTypeUrl[] = "type.googleapis.com/fanout.v1.RouteResponse";

// The largest RouteRequest.cost accepted; above it, InvalidArgument naming
// `cost`. In-flight cost sums saturate, so they stay exact up to millions of
// calls of this cost in flight on one backend.
inline constexpr int64_t kMaxRouteCost = 1'000'000'000'000;

// What a failed Route's status may hold, so that its trailer stays well
// within gRPC's metadata limit (8 KiB by default on clients; the status
// message travels twice, in grpc-message and in the details): the carried
// RouteResponse (branches without payloads) serializes to at most
// kMaxRouteErrorDetailsBytes, the message to at most
// kMaxRouteStatusMessageBytes.
inline constexpr size_t kMaxRouteErrorDetailsBytes = 2048;
inline constexpr size_t kMaxRouteStatusMessageBytes = 512;
// A branch's error text, in every RouteResponse.
inline constexpr size_t kMaxBranchErrorBytes = 256;
// Caller input echoed in a status message (a route name).
inline constexpr size_t kMaxEchoedInputBytes = 128;

fanout::v1::Policy ToProto(Policy policy);
// InvalidArgument naming `policy` for POLICY_UNSPECIFIED and unknown values.
absl::StatusOr<Policy> FromProto(int policy);

struct RouterOptions {
  // Makes the Downstream of each distinct backend address; unset = gRPC
  // (NewGrpcDownstream).
  DownstreamFactory downstream_factory = nullptr;
  // Seeds tie-breaking and exploration; 0 = from std::random_device.
  uint64_t seed = 0;
  // Where Route calls, branches, ejections and adaptive commits are counted
  // (by route, policy, backend and outcome; see README, Metrics); not owned,
  // must outlive the router; null = nowhere.
  Metrics* metrics = nullptr;
};

struct BackendReport {
  std::string name;
  std::string address;
  BackendSnapshot stats;
};

struct RouteReport {
  std::string name;
  Policy policy;
  int adaptive_committed = -1;  // ADAPTIVE: index of the committed backend, -1 = racing
  std::vector<BackendReport> backends;
};

namespace router_internal {
struct RouteState;
}  // namespace router_internal

class Router {
 public:
  using RouteDone = absl::AnyInvocable<void(absl::StatusOr<fanout::v1::RouteResponse>) &&>;

  // Validates every route (ValidateRouteConfig; route names unique) and
  // makes one Downstream per distinct address. `executor`: not owned; must
  // outlive the router and every call in flight.
  static absl::StatusOr<std::unique_ptr<Router>> Create(std::vector<RouteConfig> routes,
                                                        Executor* executor,
                                                        RouterOptions options = {});
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Runs request.route under request.policy (POLICY_UNSPECIFIED = the
  // route's), until min(deadline, now + timeout) where timeout is
  // request.timeout_ms or the route's. Cancelling `parent` cancels every
  // branch, down to the backends. `done` gets:
  //   OK                a RouteResponse: every backend of the route as a
  //                     branch, in configuration order (SKIPPED when not
  //                     called); for single-answer policies the winner's
  //                     payload and name. Branch payloads: always for ALL
  //                     and ALL_SETTLED (they are the answer); for the
  //                     others only with request.branch_payloads (the
  //                     winner's payload is already in `payload`)
  //   NotFound          no such route (named, cut to kMaxEchoedInputBytes)
  //   InvalidArgument   a bad policy value (names `policy`), a negative
  //                     timeout_ms, a cost < 0 or > kMaxRouteCost (`cost`)
  //   other             the policy failed: ALL's first failure (code and
  //                     message of that branch), or every candidate failed
  //                     (the last failure's code); DeadlineExceeded,
  //                     Cancelled. The RouteResponse rides along as a
  //                     payload (kRouteResponseTypeUrl): every branch's
  //                     outcome, code, error and latency, no payloads,
  //                     within kMaxRouteErrorDetailsBytes (errors are cut
  //                     further when needed); the message is at most
  //                     kMaxRouteStatusMessageBytes.
  // ALL_SETTLED fails only when cancelled. Branch outcomes: OK, ERROR,
  // TIMEOUT (deadline), CANCELLED (lost a race, a sibling failed, or the
  // caller cancelled), SKIPPED. Branch errors are valid UTF-8 (other bytes
  // become '?') and at most kMaxBranchErrorBytes. `traceparent` (the
  // caller's W3C traceparent, validated; empty = none) goes to every
  // backend call.
  void Route(const fanout::v1::RouteRequest& request, CancellationToken parent, absl::Time deadline,
             RouteDone done, absl::string_view traceparent = {});

  std::vector<std::string> RouteNames() const;
  // NotFound for an unknown route.
  absl::StatusOr<RouteReport> Report(absl::string_view route) const;

 private:
  explicit Router(Executor* executor) : executor_(executor) {}

  Executor* const executor_;
  // Immutable after Create().
  absl::flat_hash_map<std::string, std::shared_ptr<router_internal::RouteState>> routes_;
  std::vector<std::string> route_names_;
};

}  // namespace fanout::router

#endif  // FANOUT_ROUTER_ROUTER_H_
