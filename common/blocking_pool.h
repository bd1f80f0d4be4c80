// Blocking pools run work that blocks its thread in a system call (reading a
// file, which may sit on a slow or hung disk) on threads of their own, apart
// from the executors' short callbacks and timers: a slow disk then delays
// only the work waiting for it, never a hedge delay or a deadline timer.
//
// Threading model: main() creates the pools and injects them, like the
// executors; components queue blocking work here and answer from an
// executor.
#ifndef FANOUT_COMMON_BLOCKING_POOL_H_
#define FANOUT_COMMON_BLOCKING_POOL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace fanout {

using BlockingJobId = uint64_t;

// A bounded queue of blocking tasks. At most max_queued() tasks wait for a
// thread; past that TrySchedule refuses at once, so callers fail fast
// instead of queueing without limit behind a stalled device. A task still
// queued can be withdrawn (Cancel), e.g. when its caller's deadline passed.
// Thread-safe.
class BlockingPool {
 public:
  using Task = absl::AnyInvocable<void() &&>;

  virtual ~BlockingPool() = default;
  BlockingPool() = default;
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  // Queues `task` to run on a pool thread, never inline, in FIFO order.
  // Returns an id for Cancel (never 0). ResourceExhausted when max_queued()
  // tasks are already waiting; Unavailable once the pool is stopping. On
  // error `task` is destroyed without running.
  virtual absl::StatusOr<BlockingJobId> TrySchedule(Task task) = 0;

  // Withdraws a queued task. True when it will not run (it has been
  // destroyed), false when it has started, has run, or the id is unknown.
  virtual bool Cancel(BlockingJobId id) = 0;

  // The queue bound.
  virtual int max_queued() const = 0;
};

// A fixed set of threads. Destruction stops accepting tasks, runs those
// already queued, and joins the threads; it must not run on a pool thread.
class ThreadBlockingPool final : public BlockingPool {
 public:
  struct Options {
    int threads = 4;
    int max_queued = 1024;
    std::string name = "blocking";  // thread names (at most 15 characters are kept)
  };
  // threads and max_queued below 1 are taken as 1.
  static std::unique_ptr<ThreadBlockingPool> Create(const Options& options);
  ~ThreadBlockingPool() override;

  absl::StatusOr<BlockingJobId> TrySchedule(Task task) override;
  bool Cancel(BlockingJobId id) override;
  int max_queued() const override { return max_queued_; }

  int thread_count() const { return static_cast<int>(workers_.size()); }
  // Tasks waiting for a thread / running now.
  int queued() const;
  int running() const;

 private:
  ThreadBlockingPool(std::string name, int max_queued)
      : name_(std::move(name)), max_queued_(max_queued) {}
  void WorkerLoop();

  const std::string name_;
  const int max_queued_;
  std::vector<std::thread> workers_;

  mutable absl::Mutex mu_;
  // Ordered by id, so the first entry is the oldest task.
  absl::btree_map<BlockingJobId, Task> queue_ ABSL_GUARDED_BY(mu_);
  BlockingJobId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fanout

#endif  // FANOUT_COMMON_BLOCKING_POOL_H_
