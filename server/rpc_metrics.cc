#include "server/rpc_metrics.h"

#include <grpcpp/support/server_callback.h>

#include "absl/status/status.h"

namespace fanout::server {
namespace {

// grpc::StatusCode and absl::StatusCode share their numbers and names.
const std::vector<std::string>& CodeNames() {
  static const std::vector<std::string>* const kNames = [] {
    auto* names = new std::vector<std::string>();
    for (int code = 0; code <= static_cast<int>(absl::StatusCode::kUnauthenticated); ++code) {
      names->push_back(absl::StatusCodeToString(static_cast<absl::StatusCode>(code)));
    }
    return names;
  }();
  return *kNames;
}

constexpr const char* kTierNames[] = {"l1", "l2", "l3", "origin"};

cache::TierId FromProto(int tier) {
  switch (tier) {
    case fanout::v1::TIER_L2:
      return cache::TierId::kL2;
    case fanout::v1::TIER_L3:
      return cache::TierId::kL3;
    case fanout::v1::TIER_ORIGIN:
      return cache::TierId::kOrigin;
    default:
      return cache::TierId::kL1;
  }
}

// Answers one call of a method nobody serves, without reading it.
class UnknownMethodReactor final : public grpc::ServerGenericBidiReactor {
 public:
  explicit UnknownMethodReactor(RpcSeries* series) {
    RpcCall call(series);
    call.End(grpc::StatusCode::UNIMPLEMENTED);
    Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "no such method"));
  }
  void OnDone() override { delete this; }
};

}  // namespace

RpcSeries::RpcSeries(Metrics* metrics, absl::string_view rpc)
    : codes_(metrics, "fanout_requests_total",
             "gRPC calls finished, by method (rpc) and status code", {{"rpc", std::string(rpc)}},
             "code", CodeNames()),
      latency_(metrics->GetHistogram(
          "fanout_request_duration_seconds",
          "Time from a gRPC handler's start to its status, by method (rpc); for streams, the "
          "stream's lifetime",
          {{"rpc", std::string(rpc)}}, LatencyBuckets())),
      in_flight_(metrics->GetGauge("fanout_requests_in_flight",
                                   "gRPC calls (and streams) waiting for work, by method (rpc)",
                                   {{"rpc", std::string(rpc)}})) {}

RpcCall& RpcCall::operator=(RpcCall&& other) noexcept {
  if (this != &other) {
    if (series_ != nullptr && async_) series_->in_flight_->Add(-1);
    series_ = other.series_;
    start_ns_ = other.start_ns_;
    async_ = other.async_;
    other.series_ = nullptr;
  }
  return *this;
}

RpcCall::~RpcCall() {
  if (series_ != nullptr && async_) series_->in_flight_->Add(-1);
}

void RpcCall::Async() {
  if (series_ == nullptr || async_) return;
  async_ = true;
  series_->in_flight_->Add(1);
}

void RpcCall::End(grpc::StatusCode code) {
  if (series_ == nullptr) return;
  const int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
  series_->latency_->ObserveNanos(now - start_ns_);
  const int c = static_cast<int>(code);
  series_->codes_.Increment(c >= 0 && c <= 16 ? static_cast<size_t>(c) : 2);  // else UNKNOWN
  if (async_) series_->in_flight_->Add(-1);
  series_ = nullptr;
}

AnswerCounters::AnswerCounters(Metrics* metrics) {
  for (int tier = 0; tier < 4; ++tier) {
    for (int stale = 0; stale < 2; ++stale) {
      counters_[tier][stale] = metrics->GetCounter(
          "fanout_get_answers_total",
          "Values answered by Get and BatchGet, by the tier that served them and whether they "
          "were stale",
          {{"tier", kTierNames[tier]}, {"stale", stale ? "true" : "false"}});
    }
  }
}

void AnswerCounters::CountBatch(const fanout::v1::BatchGetResponse& response) {
  for (const fanout::v1::BatchGetItem& item : response.items()) {
    if (item.code() == 0) Count(FromProto(item.served_by()), item.stale());
  }
}

SidecarMetrics::SidecarMetrics(Metrics* metrics)
    : get(metrics, "fanout.v1.Sidecar/Get"),
      batch_get(metrics, "fanout.v1.Sidecar/BatchGet"),
      invalidate(metrics, "fanout.v1.Sidecar/Invalidate"),
      route(metrics, "fanout.v1.Sidecar/Route"),
      watch(metrics, "fanout.v1.Sidecar/Watch"),
      answers(metrics) {}

grpc::ServerGenericBidiReactor* UnknownMethodService::CreateReactor(
    grpc::GenericCallbackServerContext* context) {
  return new UnknownMethodReactor(&series_);
}

}  // namespace fanout::server
