// fanout-bench's engine: senders of one kind of RPC over several channels,
// the closed- and open-loop drivers, and what a run measured.
//
// Threading: the drivers run on the caller's thread; the open loop's sends
// start from it and from options.senders - 1 threads of its own. Calls
// complete on gRPC's callback threads, which record outcomes and, in the
// closed loop, start the next call. No thread per call, and nothing blocks a
// gRPC thread.
#ifndef FANOUT_BENCH_LOADGEN_H_
#define FANOUT_BENCH_LOADGEN_H_

#include <grpcpp/support/status.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "bench/histogram.h"
#include "bench/options.h"

namespace fanout::bench {

// "OK", "NOT_FOUND", ... ("CODE_<n>" for a code gRPC does not define).
std::string StatusCodeName(int code);

// Calls counted by gRPC status code. Codes outside gRPC's 0..16 count as
// UNKNOWN. Thread-compatible.
class StatusCounts {
 public:
  static constexpr int kCodes = 17;

  void Add(grpc::StatusCode code, uint64_t n = 1);
  void Merge(const StatusCounts& other);

  uint64_t of(grpc::StatusCode code) const;
  uint64_t ok() const { return counts_[0]; }
  uint64_t total() const;
  uint64_t errors() const { return total() - ok(); }
  // Every code other than OK with a non-zero count, by name.
  std::map<std::string, uint64_t> ErrorsByName() const;

 private:
  std::array<uint64_t, kCodes> counts_{};
};

// What the generator learned from one answer.
struct CallOutcome {
  grpc::StatusCode code = grpc::StatusCode::OK;
  // Get and BatchGet: the fanout.v1.Tier that answered (for a batch, the
  // lowest tier of any item); -1 when there is none.
  int tier = -1;
  // Route and Echo: the request payload's size; -1 when not told.
  int payload_bytes = -1;
};

// One measured call, as --calls_out writes it.
struct CallRecord {
  int64_t start_ns = 0;  // intended start, from the opening of the measured window
  int64_t latency_ns = 0;
  int code = 0;  // gRPC status code
  int payload_bytes = -1;
};

// What one run measured. Only calls whose intended start fell inside the
// measured window count; all of them were awaited.
struct Report {
  BenchOptions options;
  double elapsed_seconds = 0;  // window start to the last measured answer
  StatusCounts codes;
  LatencyHistogram latency;  // nanoseconds, successful calls only
  // Get and BatchGet answers by fanout.v1.Tier (0 = unspecified .. 4 = origin).
  std::array<uint64_t, 5> served_by{};
  // Open loop: the generator's own lateness, which is included in latency.
  int64_t max_send_lag_ns = 0;
  uint64_t late_sends = 0;  // sent more than 1ms after their arrival time
  // With options.calls_out: every measured call, errors included, in the
  // order their answers were recorded.
  std::vector<CallRecord> calls;

  // Successful calls per second.
  double Throughput() const;
};

// Human-readable, several lines.
std::string FormatText(const Report& report);
// One JSON object on one line (latencies in microseconds).
std::string FormatJson(const Report& report);
// report.calls, one per line after a "# start_ns latency_ns code
// payload_bytes" header, sorted by start.
std::string FormatCalls(const Report& report);

// Starts calls of one kind. Thread-safe.
class CallSender {
 public:
  using Done = absl::AnyInvocable<void(CallOutcome) &&>;

  virtual ~CallSender() = default;
  CallSender() = default;
  CallSender(const CallSender&) = delete;
  CallSender& operator=(const CallSender&) = delete;

  // Starts one call on channel `channel` (in [0, channels)) and returns.
  // `done` runs exactly once, on any thread, possibly inline.
  virtual void Send(int channel, Done done) = 0;
};

// Opens options.channels separate connections to options.target (distinct
// channel arguments, local subchannel pools) and waits up to `connect_timeout`
// for each. Unavailable when one does not connect. Each call carries
// options.timeout as its deadline.
absl::StatusOr<std::unique_ptr<CallSender>> NewGrpcSender(
    const BenchOptions& options, absl::Duration connect_timeout = absl::Seconds(10));

// Runs the load that `options` describes through `sender` (not owned) and
// blocks until every measured call has answered. Closed loop: `concurrency`
// call chains, each starting its next call when its last one answers, spread
// over the channels. Open loop: calls start at Poisson arrival times of mean
// `rate` (`senders` threads, each a Poisson stream of rate/senders); latency
// runs from the arrival time, so a late send (generator behind, or
// max_in_flight reached) is counted, never hidden.
Report RunLoad(const BenchOptions& options, CallSender* sender);

// Collects outcomes from many threads. Thread-safe.
class Recorder {
 public:
  // `keep_calls`: also keep every call for Report::calls.
  explicit Recorder(bool keep_calls = false) : keep_calls_(keep_calls) {}

  // `latency_ns`: from the intended start to the answer; `answered_ns`:
  // when the answer arrived (steady clock).
  void Record(const CallOutcome& outcome, int64_t latency_ns, int64_t answered_ns);
  // Moves what was recorded into `report`; `window_start_ns` is when the
  // measured window opened (steady clock).
  void Collect(int64_t window_start_ns, Report* report);

 private:
  const bool keep_calls_;
  absl::Mutex mu_;
  StatusCounts codes_ ABSL_GUARDED_BY(mu_);
  // start_ns here is on the steady clock; Collect makes it window-relative.
  std::vector<CallRecord> calls_ ABSL_GUARDED_BY(mu_);
  LatencyHistogram latency_ ABSL_GUARDED_BY(mu_);
  std::array<uint64_t, 5> served_by_ ABSL_GUARDED_BY(mu_){};
  int64_t last_answer_ns_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fanout::bench

#endif  // FANOUT_BENCH_LOADGEN_H_
