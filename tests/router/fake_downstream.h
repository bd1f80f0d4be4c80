// Scripted Downstreams for Router unit tests on a ManualExecutor: each
// answers after its latency through an executor timer (or is held until
// Release), and at once with Cancelled when its token is cancelled. They
// count what they saw. Thread-safe.
#ifndef FANOUT_TESTS_ROUTER_FAKE_DOWNSTREAM_H_
#define FANOUT_TESTS_ROUTER_FAKE_DOWNSTREAM_H_

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/cancellation.h"
#include "common/executor.h"
#include "router/downstream.h"

namespace fanout::router {

class FakeDownstream final : public Downstream {
 public:
  FakeDownstream(Executor* executor, std::string reply)
      : executor_(executor), result_(std::move(reply)) {}

  void SetLatency(absl::Duration latency) {
    absl::MutexLock l(&mu_);
    latency_ = latency;
  }
  void SetResult(absl::StatusOr<std::string> result) {
    absl::MutexLock l(&mu_);
    result_ = std::move(result);
  }
  // Held calls wait for Release() instead of a timer.
  void SetHold(bool hold) {
    absl::MutexLock l(&mu_);
    hold_ = hold;
  }

  void Call(const DownstreamCall& call, Done done) override {
    auto pending = std::make_shared<Pending>();
    pending->owner = this;
    pending->done = std::move(done);
    absl::Duration latency;
    bool hold;
    absl::StatusOr<std::string> result;
    {
      absl::MutexLock l(&mu_);
      ++calls_;
      ++in_flight_;
      costs_.push_back(call.cost);
      latency = latency_;
      hold = hold_;
      result = result_;
      if (hold) held_.push_back(pending);
    }
    if (!hold) {
      TimerId timer = executor_->ScheduleAfter(
          latency, [pending, result]() mutable { pending->Finish(std::move(result)); });
      absl::MutexLock l(&pending->mu);
      pending->timer = timer;
    }
    auto registration = std::make_unique<CancellationCallback>(call.token, [this, pending] {
      {
        absl::MutexLock l(&mu_);
        ++cancels_;
      }
      pending->Finish(absl::CancelledError("cancelled"));
    });
    absl::MutexLock l(&pending->mu);
    if (pending->finished) return;  // `registration` unsubscribes here
    pending->on_cancel = std::move(registration);
  }

  // Completes every held call with the current result.
  void Release() {
    std::vector<std::shared_ptr<Pending>> held;
    absl::StatusOr<std::string> result;
    {
      absl::MutexLock l(&mu_);
      held.swap(held_);
      result = result_;
    }
    for (auto& pending : held) pending->Finish(result);
  }

  int calls() const {
    absl::MutexLock l(&mu_);
    return calls_;
  }
  int cancels() const {
    absl::MutexLock l(&mu_);
    return cancels_;
  }
  int in_flight() const {
    absl::MutexLock l(&mu_);
    return in_flight_;
  }
  std::vector<int64_t> costs() const {
    absl::MutexLock l(&mu_);
    return costs_;
  }

 private:
  struct Pending {
    FakeDownstream* owner = nullptr;
    absl::Mutex mu;
    bool finished ABSL_GUARDED_BY(mu) = false;
    TimerId timer ABSL_GUARDED_BY(mu) = kNoTimer;
    std::unique_ptr<CancellationCallback> on_cancel ABSL_GUARDED_BY(mu);
    Done done;  // taken by the first Finish

    void Finish(absl::StatusOr<std::string> result) {
      TimerId pending_timer;
      std::unique_ptr<CancellationCallback> registration;
      Done run;
      {
        absl::MutexLock l(&mu);
        if (finished) return;
        finished = true;
        pending_timer = std::exchange(timer, kNoTimer);
        registration = std::move(on_cancel);
        run = std::move(done);
      }
      if (pending_timer != kNoTimer) owner->executor_->CancelTimer(pending_timer);
      {
        absl::MutexLock l(&owner->mu_);
        --owner->in_flight_;
      }
      registration.reset();  // may be the running callback; allowed
      std::move(run)(std::move(result));
    }
  };

  Executor* const executor_;
  mutable absl::Mutex mu_;
  absl::Duration latency_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  absl::StatusOr<std::string> result_ ABSL_GUARDED_BY(mu_);
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::shared_ptr<Pending>> held_ ABSL_GUARDED_BY(mu_);
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  int cancels_ ABSL_GUARDED_BY(mu_) = 0;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int64_t> costs_ ABSL_GUARDED_BY(mu_);
};

// One FakeDownstream per address, made on demand; replies with the address.
class FakeDownstreams {
 public:
  explicit FakeDownstreams(Executor* executor) : executor_(executor) {}

  DownstreamFactory Factory() {
    return [this](const BackendConfig& backend) -> absl::StatusOr<std::shared_ptr<Downstream>> {
      return std::shared_ptr<Downstream>(Get(backend.address));
    };
  }

  std::shared_ptr<FakeDownstream> Get(const std::string& address) {
    absl::MutexLock l(&mu_);
    auto& fake = fakes_[address];
    if (fake == nullptr) fake = std::make_shared<FakeDownstream>(executor_, address);
    return fake;
  }

 private:
  Executor* const executor_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<FakeDownstream>> fakes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fanout::router

#endif  // FANOUT_TESTS_ROUTER_FAKE_DOWNSTREAM_H_
