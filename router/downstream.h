// A backend as Route sees it: something that answers a unary call on a
// method with bytes, whose protos fanout does not know.
#ifndef FANOUT_ROUTER_DOWNSTREAM_H_
#define FANOUT_ROUTER_DOWNSTREAM_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/cancellation.h"
#include "router/route_config.h"

namespace fanout::router {

// Sent to backends with every call when the call's cost is known: the work
// estimate (decimal), for cost-aware backends and fakes.
inline constexpr char kCostMetadataKey[] = "fanout-cost";

struct DownstreamCall {
  std::string method;  // "/package.Service/Method"
  std::shared_ptr<const std::string> payload;
  int64_t cost = 0;
  absl::Time deadline = absl::InfiniteFuture();
  // Cancelling it must end the call promptly (reaching the backend).
  CancellationToken token;
  // The Route caller's W3C traceparent (validated), sent on as
  // `traceparent` metadata; empty = none.
  std::string traceparent{};
};

// Call returns at once and calls `done` exactly once, on any thread,
// possibly inline, with the response bytes or the call's status in the
// canonical meanings: Unavailable = could not answer, DeadlineExceeded = the
// deadline passed, Cancelled = the token was cancelled; a status the backend
// returned keeps its code. Thread-safe.
class Downstream {
 public:
  using Done = absl::AnyInvocable<void(absl::StatusOr<std::string>) &&>;

  virtual ~Downstream() = default;
  Downstream() = default;
  Downstream(const Downstream&) = delete;
  Downstream& operator=(const Downstream&) = delete;

  virtual void Call(const DownstreamCall& call, Done done) = 0;
};

// Makes the Downstream of one backend address; the router calls it once per
// distinct address and shares the result between routes.
using DownstreamFactory =
    absl::AnyInvocable<absl::StatusOr<std::shared_ptr<Downstream>>(const BackendConfig& backend)>;

// The production Downstream: generic unary gRPC calls (grpc::GenericStub)
// over one insecure channel to `address`, created here and reused by every
// call. The deadline becomes the call's gRPC deadline; cancellation becomes
// ClientContext::TryCancel. A lost connection is retried with a backoff of
// at most kReconnectBackoffMs, so a restarted backend is used again within
// about a second. InvalidArgument for an empty address.
inline constexpr int kReconnectBackoffMs = 1000;
absl::StatusOr<std::shared_ptr<Downstream>> NewGrpcDownstream(const std::string& address);

}  // namespace fanout::router

#endif  // FANOUT_ROUTER_DOWNSTREAM_H_
