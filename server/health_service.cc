#include "server/health_service.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "server/grpc_status.h"

namespace fanout::server {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch stream. Writes are serialised: while one is in flight, later
// statuses are coalesced into the latest one.
class HealthWatcher final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  HealthWatcher(HealthService* service, std::string name, RpcCall call)
      : service_(service), name_(std::move(name)), call_(std::move(call)) {
    call_.Async();
  }

  void Push(HealthService::Status status, bool end_after) {
    bool start = false;
    bool finish = false;
    {
      absl::MutexLock l(&mu_);
      if (finished_) return;
      latest_ = status;
      has_latest_ = true;
      end_requested_ = end_requested_ || end_after;
      if (!writing_) {
        start = TakeLatestLocked();
        finish = !start && end_requested_ && MarkFinishedLocked();
      }
    }
    if (start) StartWrite(&response_);
    if (finish) End(grpc::Status::OK);
  }

  void OnWriteDone(bool ok) override {
    bool start = false;
    bool finish = false;
    {
      absl::MutexLock l(&mu_);
      writing_ = false;
      if (!ok) {
        finish = MarkFinishedLocked();
      } else {
        start = TakeLatestLocked();
        finish = !start && end_requested_ && MarkFinishedLocked();
      }
    }
    if (start) StartWrite(&response_);
    if (finish) End(ok ? grpc::Status::OK : grpc::Status(grpc::StatusCode::CANCELLED, ""));
  }

  void OnCancel() override {
    bool finish;
    {
      absl::MutexLock l(&mu_);
      finish = MarkFinishedLocked();
    }
    if (finish) End(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    service_->Unregister(this);
    delete this;
  }

  const std::string& name() const { return name_; }

 private:
  // Finishes the stream; once (MarkFinishedLocked decides who).
  void End(grpc::Status status) {
    call_.End(status.error_code());
    Finish(std::move(status));
  }

  bool TakeLatestLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!has_latest_ || (sent_any_ && latest_ == sent_)) return false;
    response_.set_status(latest_);
    sent_ = latest_;
    sent_any_ = true;
    has_latest_ = false;
    writing_ = true;
    return true;
  }
  bool MarkFinishedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return false;
    finished_ = true;
    return true;
  }

  HealthService* const service_;
  const std::string name_;
  RpcCall call_;  // used by whoever finishes the stream
  absl::Mutex mu_;
  HealthCheckResponse response_;  // owned by the write in flight while writing_
  HealthService::Status latest_ ABSL_GUARDED_BY(mu_) = HealthCheckResponse::UNKNOWN;
  HealthService::Status sent_ ABSL_GUARDED_BY(mu_) = HealthCheckResponse::UNKNOWN;
  bool has_latest_ ABSL_GUARDED_BY(mu_) = false;
  bool sent_any_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool end_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

HealthService::HealthService(Metrics* metrics)
    : check_series_(metrics != nullptr ? metrics : DiscardMetrics(), "grpc.health.v1.Health/Check"),
      watch_series_(metrics != nullptr ? metrics : DiscardMetrics(),
                    "grpc.health.v1.Health/Watch") {
  absl::MutexLock l(&mu_);
  status_[""] = HealthCheckResponse::NOT_SERVING;
  status_["fanout.v1.Sidecar"] = HealthCheckResponse::NOT_SERVING;
}

HealthService::~HealthService() = default;

void HealthService::SetServing(bool serving) {
  std::vector<std::pair<HealthWatcher*, Status>> updates;
  {
    absl::MutexLock l(&mu_);
    if (shut_down_) return;
    for (auto& [name, status] : status_) {
      status = serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
    }
    for (HealthWatcher* w : watchers_) updates.emplace_back(w, status_[w->name()]);
    // Pushing under mu_ keeps watchers alive: OnDone unregisters under mu_.
    for (auto& [w, s] : updates) w->Push(s, /*end_after=*/false);
  }
}

void HealthService::Shutdown() {
  absl::MutexLock l(&mu_);
  shut_down_ = true;
  for (auto& [name, status] : status_) status = HealthCheckResponse::NOT_SERVING;
  for (HealthWatcher* w : watchers_) w->Push(HealthCheckResponse::NOT_SERVING, /*end_after=*/true);
}

bool HealthService::IsServing() {
  absl::MutexLock l(&mu_);
  auto it = status_.find("");
  return it != status_.end() && it->second == HealthCheckResponse::SERVING;
}

void HealthService::Unregister(HealthWatcher* watcher) {
  absl::MutexLock l(&mu_);
  watchers_.erase(watcher);
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context,
                                               const HealthCheckRequest* request,
                                               HealthCheckResponse* response) {
  RpcCall call(&check_series_);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::MutexLock l(&mu_);
  auto it = status_.find(request->service());
  if (it == status_.end()) {
    call.End(grpc::StatusCode::NOT_FOUND);
    reactor->Finish(ToGrpcStatus(
        absl::NotFoundError(absl::StrCat("unknown service ", QuoteInput(request->service())))));
  } else {
    response->set_status(it->second);
    call.End(grpc::StatusCode::OK);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* context, const HealthCheckRequest* request) {
  auto* watcher = new HealthWatcher(this, request->service(), RpcCall(&watch_series_));
  absl::MutexLock l(&mu_);
  watchers_.insert(watcher);
  auto it = status_.find(request->service());
  const Status status = it == status_.end() ? HealthCheckResponse::SERVICE_UNKNOWN : it->second;
  watcher->Push(status, /*end_after=*/shut_down_);
  return watcher;
}

}  // namespace fanout::server
