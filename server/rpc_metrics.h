// gRPC calls counted by the handlers that serve them (not by a server
// interceptor, whose machinery costs about 7,000 instructions a call, 14% of
// a cached Get): each handler starts an RpcCall when it runs and ends it
// with the status it finishes with. Series are made when the services are
// built; counting is a few relaxed atomic operations and two clock reads.
//
//   fanout_requests_total{rpc, code}          calls finished, by status code
//   fanout_request_duration_seconds{rpc}      from the handler's start to its
//                                             status (streams: their lifetime)
//   fanout_requests_in_flight{rpc}            calls waiting for work (a call
//                                             answered inside its handler is
//                                             never counted here)
//   fanout_get_answers_total{tier, stale}     values answered by Get and BatchGet
//
// rpc is "package.Service/Method" for the methods fanoutd serves, and
// "unknown" for every name it does not (whatever the client sent).
#ifndef FANOUT_SERVER_RPC_METRICS_H_
#define FANOUT_SERVER_RPC_METRICS_H_

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/support/status.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "cache/entry.h"
#include "common/metrics.h"
#include "fanout/v1/sidecar.pb.h"

namespace fanout::server {

// The series of one gRPC method. `metrics`: not owned; must outlive this.
class RpcSeries {
 public:
  RpcSeries(Metrics* metrics, absl::string_view rpc);
  RpcSeries(const RpcSeries&) = delete;
  RpcSeries& operator=(const RpcSeries&) = delete;

 private:
  friend class RpcCall;
  CounterVec codes_;  // by grpc::StatusCode, 0..16
  Histogram* const latency_;
  Gauge* const in_flight_;
};

// One call's measurement, from construction (the handler's start) to End.
// Move-only; not thread-safe (one owner at a time, as the call itself).
class RpcCall {
 public:
  RpcCall() = default;  // measures nothing
  explicit RpcCall(RpcSeries* series)
      : series_(series), start_ns_(std::chrono::steady_clock::now().time_since_epoch().count()) {}
  RpcCall(RpcCall&& other) noexcept { *this = std::move(other); }
  RpcCall& operator=(RpcCall&& other) noexcept;
  // A call dropped without End leaves the in-flight count as it found it.
  ~RpcCall();

  // The call goes on after its handler returns: counted in flight until End.
  void Async();
  // The call finishes with `code`: counted, and its latency observed. Once;
  // later calls (and calls on a moved-from RpcCall) do nothing.
  void End(grpc::StatusCode code);

 private:
  RpcSeries* series_ = nullptr;
  int64_t start_ns_ = 0;
  bool async_ = false;
};

// fanout_get_answers_total: values answered, by the tier that served them
// and whether they were stale. Series made at construction (all eight).
class AnswerCounters {
 public:
  explicit AnswerCounters(Metrics* metrics);
  AnswerCounters(const AnswerCounters&) = delete;
  AnswerCounters& operator=(const AnswerCounters&) = delete;

  void Count(cache::TierId tier, bool stale) {
    counters_[static_cast<int>(tier)][stale ? 1 : 0]->Increment();
  }
  // Every item of a BatchGet response answered with a value.
  void CountBatch(const fanout::v1::BatchGetResponse& response);

 private:
  std::array<std::array<Counter*, 2>, 4> counters_{};  // [TierId][stale]
};

// What fanout.v1.Sidecar counts.
struct SidecarMetrics {
  explicit SidecarMetrics(Metrics* metrics);

  RpcSeries get;
  RpcSeries batch_get;
  RpcSeries invalidate;
  RpcSeries route;
  RpcSeries watch;
  AnswerCounters answers;
};

// Answers every method no registered service declares with UNIMPLEMENTED,
// counting it as rpc="unknown" (so that clients cannot make series by
// sending names). Register it with RegisterCallbackGenericService.
// Thread-safe. `metrics`: not owned; must outlive this.
class UnknownMethodService final : public grpc::CallbackGenericService {
 public:
  explicit UnknownMethodService(Metrics* metrics) : series_(metrics, "unknown") {}

  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* context) override;

 private:
  RpcSeries series_;
};

}  // namespace fanout::server

#endif  // FANOUT_SERVER_RPC_METRICS_H_
