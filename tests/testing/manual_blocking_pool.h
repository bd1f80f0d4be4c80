// A blocking pool that runs nothing until the test says so: tasks run on the
// thread that calls RunAll/RunNext, in FIFO order, with the same queue bound
// and Cancel as the real pool. Thread-safe.
#ifndef FANOUT_TESTS_TESTING_MANUAL_BLOCKING_POOL_H_
#define FANOUT_TESTS_TESTING_MANUAL_BLOCKING_POOL_H_

#include <map>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "common/blocking_pool.h"

namespace fanout::testing {

class ManualBlockingPool final : public BlockingPool {
 public:
  explicit ManualBlockingPool(int max_queued = 1024) : max_queued_(max_queued) {}

  absl::StatusOr<BlockingJobId> TrySchedule(Task task) override {
    absl::MutexLock l(&mu_);
    if (queue_.size() >= static_cast<size_t>(max_queued_)) {
      return absl::ResourceExhaustedError("manual blocking pool: queue full");
    }
    const BlockingJobId id = next_id_++;
    queue_.emplace(id, std::move(task));
    return id;
  }
  bool Cancel(BlockingJobId id) override {
    Task doomed;
    absl::MutexLock l(&mu_);
    auto it = queue_.find(id);
    if (it == queue_.end()) return false;
    doomed = std::move(it->second);
    queue_.erase(it);
    return true;
  }
  int max_queued() const override { return max_queued_; }

  // Runs the oldest queued task; false when none was queued.
  bool RunNext() {
    Task task;
    {
      absl::MutexLock l(&mu_);
      if (queue_.empty()) return false;
      task = std::move(queue_.begin()->second);
      queue_.erase(queue_.begin());
    }
    std::move(task)();
    return true;
  }
  // Runs queued tasks (and any they queue) until none is left; returns how many ran.
  int RunAll() {
    int ran = 0;
    while (RunNext()) ++ran;
    return ran;
  }
  size_t queued() const {
    absl::MutexLock l(&mu_);
    return queue_.size();
  }

 private:
  const int max_queued_;
  mutable absl::Mutex mu_;
  std::map<BlockingJobId, Task> queue_ ABSL_GUARDED_BY(mu_);
  BlockingJobId next_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_MANUAL_BLOCKING_POOL_H_
