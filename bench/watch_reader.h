// One Watch stream read with gRPC's callback API, for the invalidation
// benches: no thread of its own, so one process can hold a thousand.
#ifndef FANOUT_BENCH_WATCH_READER_H_
#define FANOUT_BENCH_WATCH_READER_H_

#include <functional>
#include <optional>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fanout/v1/sidecar.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace fanout::bench {

// Starts the stream at construction. `on_event` runs on a gRPC thread for
// every event, in order, with the time it was read; it must not block.
// Destroy only after WaitDone returned a status (Cancel first to end it).
class WatchReader final : public grpc::ClientReadReactor<fanout::v1::WatchEvent> {
 public:
  using OnEvent = std::function<void(const fanout::v1::WatchEvent&, absl::Time)>;

  // `stub`: not owned; must outlive the stream.
  WatchReader(fanout::v1::Sidecar::Stub* stub, fanout::v1::WatchRequest request, OnEvent on_event)
      : request_(std::move(request)), on_event_(std::move(on_event)) {
    stub->async()->Watch(&context_, &request_, this);
    StartRead(&event_);
    StartCall();
  }

  void Cancel() { context_.TryCancel(); }

  // The status the stream ended with, once it has (waits up to `timeout`).
  std::optional<grpc::Status> WaitDone(absl::Duration timeout) {
    absl::MutexLock l(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&done_), timeout);
    if (!done_) return std::nullopt;
    return status_;
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    on_event_(event_, absl::Now());
    StartRead(&event_);
  }

  void OnDone(const grpc::Status& status) override {
    absl::MutexLock l(&mu_);
    status_ = status;
    done_ = true;
  }

 private:
  grpc::ClientContext context_;
  const fanout::v1::WatchRequest request_;
  const OnEvent on_event_;
  fanout::v1::WatchEvent event_;
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fanout::bench

#endif  // FANOUT_BENCH_WATCH_READER_H_
