// Executors run short, non-blocking callbacks. They own the threads that
// fanout's own work runs on (gRPC owns its callback threads).
//
// Threading model: main() creates the executors and injects them; components
// schedule continuations and timers on them and never block their threads
// for I/O that has an asynchronous form.
#ifndef FANOUT_COMMON_EXECUTOR_H_
#define FANOUT_COMMON_EXECUTOR_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace fanout {

using TimerId = uint64_t;
inline constexpr TimerId kNoTimer = 0;

// Thread-safe.
class Executor {
 public:
  using Task = absl::AnyInvocable<void() &&>;

  virtual ~Executor() = default;
  Executor() = default;
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Runs `task` soon on an executor thread; never inline in the caller.
  virtual void Schedule(Task task) = 0;

  // Runs `task` on an executor thread at or after `when` on clock(). A time
  // in the past runs it soon. Returns an id for CancelTimer (never kNoTimer).
  virtual TimerId ScheduleAt(absl::Time when, Task task) = 0;

  // Removes a timer that has not started. Returns true when the timer's task
  // will not run (and has been destroyed), false when it already ran, is
  // running, or the id is unknown.
  virtual bool CancelTimer(TimerId id) = 0;

  // The clock the timers follow. Not owned by the caller; outlives this.
  virtual Clock* clock() = 0;

  TimerId ScheduleAfter(absl::Duration delay, Task task) {
    return ScheduleAt(clock()->Now() + delay, std::move(task));
  }
};

// A fixed pool of worker threads plus one timer thread, on the real clock.
// Destruction stops the timers (pending ones are dropped), runs the tasks
// already queued, and joins the threads; it must not run on a pool thread.
class ThreadPoolExecutor final : public Executor {
 public:
  static std::unique_ptr<ThreadPoolExecutor> Create(int threads, std::string name);
  ~ThreadPoolExecutor() override;

  void Schedule(Task task) override;
  TimerId ScheduleAt(absl::Time when, Task task) override;
  bool CancelTimer(TimerId id) override;
  Clock* clock() override { return Clock::Real(); }

  int thread_count() const { return static_cast<int>(workers_.size()); }

 private:
  explicit ThreadPoolExecutor(std::string name) : name_(std::move(name)) {}
  void WorkerLoop();
  void TimerLoop();

  const std::string name_;
  std::vector<std::thread> workers_;
  std::thread timer_thread_;

  absl::Mutex mu_;
  std::deque<Task> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  absl::Mutex timer_mu_;
  // Ordered by (deadline, id); the id also keys timer_index_.
  absl::btree_map<std::pair<absl::Time, TimerId>, Task> timers_ ABSL_GUARDED_BY(timer_mu_);
  absl::btree_map<TimerId, absl::Time> timer_index_ ABSL_GUARDED_BY(timer_mu_);
  TimerId next_timer_ ABSL_GUARDED_BY(timer_mu_) = 1;
  bool timers_stopping_ ABSL_GUARDED_BY(timer_mu_) = false;
};

}  // namespace fanout

#endif  // FANOUT_COMMON_EXECUTOR_H_
