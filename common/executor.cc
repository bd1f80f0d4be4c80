#include "common/executor.h"

#include <utility>

#include "absl/time/clock.h"

namespace fanout {

std::unique_ptr<ThreadPoolExecutor> ThreadPoolExecutor::Create(int threads, std::string name) {
  if (threads < 1) threads = 1;
  std::unique_ptr<ThreadPoolExecutor> pool(new ThreadPoolExecutor(std::move(name)));
  pool->workers_.reserve(threads);
  for (int i = 0; i < threads; ++i) {
    pool->workers_.emplace_back([p = pool.get()] { p->WorkerLoop(); });
  }
  pool->timer_thread_ = std::thread([p = pool.get()] { p->TimerLoop(); });
  return pool;
}

ThreadPoolExecutor::~ThreadPoolExecutor() {
  {
    absl::MutexLock l(&timer_mu_);
    timers_stopping_ = true;
  }
  timer_thread_.join();
  {
    absl::MutexLock l(&timer_mu_);
    timers_.clear();
    timer_index_.clear();
  }
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  for (auto& t : workers_) t.join();
}

void ThreadPoolExecutor::Schedule(Task task) {
  absl::MutexLock l(&mu_);
  queue_.push_back(std::move(task));
}

void ThreadPoolExecutor::WorkerLoop() {
  auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queue_.empty() || stopping_;
  };
  for (;;) {
    Task task;
    {
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(&has_work));
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    std::move(task)();
  }
}

TimerId ThreadPoolExecutor::ScheduleAt(absl::Time when, Task task) {
  absl::MutexLock l(&timer_mu_);
  const TimerId id = next_timer_++;
  timers_.emplace(std::make_pair(when, id), std::move(task));
  timer_index_.emplace(id, when);
  return id;
}

bool ThreadPoolExecutor::CancelTimer(TimerId id) {
  Task doomed;  // destroyed outside the lock
  absl::MutexLock l(&timer_mu_);
  auto it = timer_index_.find(id);
  if (it == timer_index_.end()) return false;
  auto node = timers_.find({it->second, id});
  doomed = std::move(node->second);
  timers_.erase(node);
  timer_index_.erase(it);
  return true;
}

void ThreadPoolExecutor::TimerLoop() {
  for (;;) {
    std::vector<Task> due;
    {
      absl::MutexLock l(&timer_mu_);
      if (timers_stopping_) return;
      const absl::Time now = absl::Now();
      while (!timers_.empty() && timers_.begin()->first.first <= now) {
        auto node = timers_.begin();
        timer_index_.erase(node->first.second);
        due.push_back(std::move(node->second));
        timers_.erase(node);
      }
      if (due.empty()) {
        // Sleep until the earliest timer, a new timer or stop; a new earlier
        // timer wakes us through the condition on timers_.begin().
        const absl::Time wake =
            timers_.empty() ? now + absl::Milliseconds(50) : timers_.begin()->first.first;
        const auto first = timers_.empty() ? std::make_pair(absl::InfiniteFuture(), TimerId{0})
                                           : timers_.begin()->first;
        auto changed = [this, first]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(timer_mu_) {
          return timers_stopping_ || (!timers_.empty() && timers_.begin()->first < first);
        };
        timer_mu_.AwaitWithDeadline(absl::Condition(&changed), wake);
        continue;
      }
    }
    for (auto& task : due) Schedule(std::move(task));
  }
}

}  // namespace fanout
