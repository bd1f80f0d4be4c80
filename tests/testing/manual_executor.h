// An executor that runs nothing until the test says so, on a FakeClock.
// Tasks run on the thread that calls RunUntilIdle/AdvanceTime, in FIFO
// order; timers fire in deadline order as time advances. Thread-safe.
#ifndef FANOUT_TESTS_TESTING_MANUAL_EXECUTOR_H_
#define FANOUT_TESTS_TESTING_MANUAL_EXECUTOR_H_

#include <deque>
#include <map>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "common/executor.h"
#include "tests/testing/fake_clock.h"

namespace fanout::testing {

class ManualExecutor final : public Executor {
 public:
  void Schedule(Task task) override {
    absl::MutexLock l(&mu_);
    queue_.push_back(std::move(task));
  }
  TimerId ScheduleAt(absl::Time when, Task task) override {
    absl::MutexLock l(&mu_);
    const TimerId id = next_id_++;
    timers_.emplace(std::make_pair(when, id), std::move(task));
    return id;
  }
  bool CancelTimer(TimerId id) override {
    Task doomed;
    absl::MutexLock l(&mu_);
    for (auto it = timers_.begin(); it != timers_.end(); ++it) {
      if (it->first.second == id) {
        doomed = std::move(it->second);
        timers_.erase(it);
        return true;
      }
    }
    return false;
  }
  Clock* clock() override { return &clock_; }
  FakeClock& fake_clock() { return clock_; }

  // Runs queued tasks (and any they queue) and timers already due. Returns
  // how many ran.
  int RunUntilIdle() {
    int ran = 0;
    for (;;) {
      Task task;
      {
        absl::MutexLock l(&mu_);
        if (queue_.empty()) {
          if (timers_.empty() || timers_.begin()->first.first > clock_.Now()) return ran;
          queue_.push_back(std::move(timers_.begin()->second));
          timers_.erase(timers_.begin());
        }
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      std::move(task)();
      ++ran;
    }
  }

  // Moves time forward by `d`, firing timers at their own deadlines in order.
  int AdvanceTime(absl::Duration d) {
    const absl::Time target = clock_.Now() + d;
    int ran = RunUntilIdle();
    for (;;) {
      absl::Time next;
      {
        absl::MutexLock l(&mu_);
        if (timers_.empty() || timers_.begin()->first.first > target) break;
        next = timers_.begin()->first.first;
      }
      if (next > clock_.Now()) clock_.Set(next);
      ran += RunUntilIdle();
    }
    clock_.Set(target);
    return ran + RunUntilIdle();
  }

  // When the earliest pending timer is due; InfiniteFuture when none is.
  absl::Time next_timer() const {
    absl::MutexLock l(&mu_);
    return timers_.empty() ? absl::InfiniteFuture() : timers_.begin()->first.first;
  }
  size_t pending_timers() const {
    absl::MutexLock l(&mu_);
    return timers_.size();
  }
  size_t queued() const {
    absl::MutexLock l(&mu_);
    return queue_.size();
  }

 private:
  FakeClock clock_;
  mutable absl::Mutex mu_;
  std::deque<Task> queue_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<absl::Time, TimerId>, Task> timers_ ABSL_GUARDED_BY(mu_);
  TimerId next_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_MANUAL_EXECUTOR_H_
