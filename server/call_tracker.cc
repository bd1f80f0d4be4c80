#include "server/call_tracker.h"

#include <grpcpp/generic/async_generic_service.h>

namespace fanout::server {

class CountingContextAllocator final : public grpc::ContextAllocator {
 public:
  explicit CountingContextAllocator(CallTracker* tracker) : tracker_(tracker) {}

  grpc::CallbackServerContext* NewCallbackServerContext() override {
    tracker_->Enter();
    return new grpc::CallbackServerContext();
  }
  grpc::GenericCallbackServerContext* NewGenericCallbackServerContext() override {
    tracker_->Enter();
    return new grpc::GenericCallbackServerContext();
  }
  void Release(grpc::CallbackServerContext* context) override {
    delete context;
    tracker_->Leave();
  }
  void Release(grpc::GenericCallbackServerContext* context) override {
    delete context;
    tracker_->Leave();
  }

 private:
  CallTracker* const tracker_;
};

std::unique_ptr<grpc::ContextAllocator> CallTracker::NewContextAllocator() {
  return std::make_unique<CountingContextAllocator>(this);
}

void CallTracker::Enter() { in_flight_.fetch_add(1, std::memory_order_seq_cst); }

void CallTracker::Leave() {
  // seq_cst pairs with WaitIdle: either it sees the count reach zero, or
  // this sees it waiting and wakes it.
  if (in_flight_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
      waiting_.load(std::memory_order_seq_cst)) {
    absl::MutexLock l(&mu_);  // releasing it re-evaluates the waiter's condition
  }
}

bool CallTracker::WaitIdle(absl::Time deadline) {
  waiting_.store(true, std::memory_order_seq_cst);
  absl::MutexLock l(&mu_);
  auto idle_or_interrupted = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return interrupted_ || in_flight_.load(std::memory_order_seq_cst) == 0;
  };
  mu_.AwaitWithDeadline(absl::Condition(&idle_or_interrupted), deadline);
  return in_flight_.load(std::memory_order_seq_cst) == 0;
}

void CallTracker::Interrupt() {
  absl::MutexLock l(&mu_);
  interrupted_ = true;
}

}  // namespace fanout::server
