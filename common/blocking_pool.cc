#include "common/blocking_pool.h"

#include <pthread.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace fanout {

std::unique_ptr<ThreadBlockingPool> ThreadBlockingPool::Create(const Options& options) {
  const int threads = std::max(1, options.threads);
  std::unique_ptr<ThreadBlockingPool> pool(
      new ThreadBlockingPool(options.name, std::max(1, options.max_queued)));
  pool->workers_.reserve(threads);
  for (int i = 0; i < threads; ++i) {
    pool->workers_.emplace_back([p = pool.get()] { p->WorkerLoop(); });
    // Linux keeps 15 characters of a thread's name.
    ::pthread_setname_np(pool->workers_.back().native_handle(), pool->name_.substr(0, 15).c_str());
  }
  return pool;
}

ThreadBlockingPool::~ThreadBlockingPool() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  for (auto& t : workers_) t.join();
}

absl::StatusOr<BlockingJobId> ThreadBlockingPool::TrySchedule(Task task) {
  absl::MutexLock l(&mu_);
  if (stopping_) {
    return absl::UnavailableError(absl::StrCat("blocking pool \"", name_, "\" is stopping"));
  }
  if (queue_.size() >= static_cast<size_t>(max_queued_)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "blocking pool \"", name_, "\": ", queue_.size(), " tasks already wait for a thread"));
  }
  const BlockingJobId id = next_id_++;
  queue_.emplace(id, std::move(task));
  return id;
}

bool ThreadBlockingPool::Cancel(BlockingJobId id) {
  Task doomed;  // destroyed outside the lock
  absl::MutexLock l(&mu_);
  auto it = queue_.find(id);
  if (it == queue_.end()) return false;
  doomed = std::move(it->second);
  queue_.erase(it);
  return true;
}

int ThreadBlockingPool::queued() const {
  absl::MutexLock l(&mu_);
  return static_cast<int>(queue_.size());
}

int ThreadBlockingPool::running() const {
  absl::MutexLock l(&mu_);
  return running_;
}

void ThreadBlockingPool::WorkerLoop() {
  auto has_work = [this]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; };
  bool ran = false;
  for (;;) {
    Task task;
    {
      absl::MutexLock l(&mu_);
      if (ran) --running_;
      mu_.Await(absl::Condition(&has_work));
      if (queue_.empty()) return;  // stopping and drained
      auto first = queue_.begin();
      task = std::move(first->second);
      queue_.erase(first);
      ++running_;
    }
    std::move(task)();
    ran = true;
  }
}

}  // namespace fanout
