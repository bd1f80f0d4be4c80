// A gRPC backend that answers ANY method after a configurable delay, for
// Route tests and benchmarks: a latency/failure/capacity model, and counters
// of what it saw, cancellations included.
//
// It never blocks a gRPC thread: answers come from executor timers. With
// `capacity` k it serves k calls at once and queues the rest in FIFO order
// (a GPU-like worker); service time starts when a call gets a slot.
//
// Out of process (the fanout-fake-backend binary), the counters are read by
// calling kFakeBackendStatsMethod, which answers them as text.
#ifndef FANOUT_TESTS_TESTING_FAKE_BACKEND_H_
#define FANOUT_TESTS_TESTING_FAKE_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/executor.h"

namespace fanout::testing {

// Answers the counters, formatted by FormatCounters, and counts as no call.
inline constexpr char kFakeBackendStatsMethod[] = "/fanout.fake/Stats";

struct FakeBackendOptions {
  std::string listen = "127.0.0.1:0";
  // The reply payload, unless `echo` (then the request payload).
  std::string name = "fake";
  bool echo = false;
  absl::Duration delay = absl::ZeroDuration();
  absl::Duration delay_per_kb = absl::ZeroDuration();    // per 1024 request bytes
  absl::Duration delay_per_cost = absl::ZeroDuration();  // per unit of cost
  absl::Duration jitter = absl::ZeroDuration();          // uniform in [-jitter, +jitter]
  // Relative jitter: the service time is scaled by a uniform factor in
  // [1 - jitter_ratio, 1 + jitter_ratio] (one draw serves both jitters).
  double jitter_ratio = 0;
  // Probability of answering UNAVAILABLE (after the delay).
  double fail_prob = 0;
  // Calls served at once; 0 = unlimited.
  int capacity = 0;
  uint64_t seed = 1;
};

struct FakeBackendCounters {
  int64_t calls = 0;      // requests received (the stats method excluded)
  int64_t ok = 0;         // answered
  int64_t failed = 0;     // answered UNAVAILABLE (fail_prob)
  int64_t cancelled = 0;  // cancelled by the client or its deadline before the answer
  int64_t in_flight = 0;  // received, not yet answered or cancelled
  int64_t queued = 0;     // of those, waiting for capacity
};

// "calls=3 ok=2 failed=0 cancelled=1 in_flight=0 queued=0"
std::string FormatCounters(const FakeBackendCounters& counters);

// The cost of a call: the fanout-cost metadata value when present and
// positive, else max(1, payload bytes / 4).
int64_t FakeBackendCost(absl::string_view cost_header, size_t payload_bytes);

// The service time of a call of `payload_bytes` and `cost`, given the jitter
// draw `u` in [-1, 1]: (delay + delay_per_kb * KiB + delay_per_cost * cost)
// * (1 + jitter_ratio * u) + jitter * u, at least zero.
absl::Duration FakeBackendServiceTime(const FakeBackendOptions& options, size_t payload_bytes,
                                      int64_t cost, double u);

// Parses FormatCounters' text. InvalidArgument naming what is missing.
absl::StatusOr<FakeBackendCounters> ParseCounters(absl::string_view text);

// Reads the counters of the fake backend at `address` (any process) through
// kFakeBackendStatsMethod. Blocks the caller up to `timeout`; never call it
// on a gRPC or executor thread. Unavailable/DeadlineExceeded when the
// backend does not answer.
absl::StatusOr<FakeBackendCounters> ReadFakeBackendCounters(
    const std::string& address, absl::Duration timeout = absl::Seconds(5));

// Keeps one reference to gRPC's process-wide callback completion queue for
// the rest of the process (idempotent; a deliberate, bounded leak of one
// port-less server).
//
// Why: in gRPC 1.51 on Linux (epoll1, no background poller) every
// callback-API server, and every channel once it has made a callback call,
// holds a reference to one shared completion queue served by "nexting"
// threads (src/cpp/common/completion_queue_cc.cc, CallbackAlternativeCQ).
// When the count falls to zero the queue is shut down, its threads are
// joined and the queue is deleted. If the last reference is dropped on one
// of those threads - a channel whose last owner is a completion callback's
// capture, as when a test has already destroyed the router or client that
// made the call - that thread "joins" itself (pthread_join fails with
// EDEADLK, unchecked), deletes the queue, returns to its loop and polls the
// deleted queue: "assertion failed: prior > 0" in grpc_cq_internal_unref, or
// a use-after-free. Test binaries that create and drop servers and channels
// test after test hit it; holding a reference that is never dropped keeps
// the count above zero. (fanoutd takes the same hold in Fanoutd::Start.)
void HoldGrpcCallbackQueue();

// Thread-safe.
class FakeBackend {
 public:
  // Serves on options.listen. `executor` runs the answer timers (not owned;
  // must outlive this); nullptr = a private one-thread pool.
  static absl::StatusOr<std::unique_ptr<FakeBackend>> Start(FakeBackendOptions options,
                                                            Executor* executor = nullptr);
  // Shuts the server down; calls in flight end CANCELLED.
  ~FakeBackend();
  FakeBackend(const FakeBackend&) = delete;
  FakeBackend& operator=(const FakeBackend&) = delete;

  // "127.0.0.1:<port>" (the bound port when listening on port 0).
  const std::string& address() const { return address_; }
  int port() const { return port_; }
  const std::string& name() const;

  FakeBackendCounters counters() const;
  // The `traceparent` metadata of the last call received; empty when it
  // carried none.
  std::string last_traceparent() const;
  // Apply to calls received from now on.
  void SetDelay(absl::Duration delay);
  void SetFailProb(double fail_prob);

  // Polls the counters until `done` holds or `timeout` passes; returns
  // whether it held. For tests waiting on another process or thread.
  bool WaitFor(absl::FunctionRef<bool(const FakeBackendCounters&)> done,
               absl::Duration timeout = absl::Seconds(10)) const;

  class Impl;

 private:
  FakeBackend() = default;

  std::unique_ptr<Executor> own_executor_;
  std::shared_ptr<Impl> impl_;
  std::string address_;
  int port_ = 0;
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_FAKE_BACKEND_H_
