// Structured concurrency for asynchronous tasks: a TaskGroup starts tasks,
// joins them under a policy, and completes only after every task it started
// has finished or acknowledged cancellation. No task outlives its group.
//
//   TaskGroup<std::string> group(parent_ctx, {.policy = JoinPolicy::kFirstSuccess,
//                                             .deadline = deadline});
//   for (Replica* r : replicas) {
//     group.Add(r->name(), [r](const TaskContext& ctx, TaskDone<std::string> done) {
//       r->Call(ctx.token, ctx.deadline, std::move(done));   // returns at once
//     });
//   }
//   group.Start([](GroupResult<std::string> result) { ... });
//
// A task is a function that starts work and returns at once. It is given a
// TaskContext and a completion, and must call the completion exactly once,
// on any thread, possibly inline, also when cancelled (then preferably
// promptly, with absl::CancelledError). A completion dropped without being
// called counts as an Internal error, so a buggy task cannot hang its group.
// Tasks never occupy a thread while they wait.
//
// Threading: the group runs no threads. Tasks are started on the thread
// that calls Start() or that completed the task before them; timers
// (deadline, per-task timeout, hedging) fire on `executor`. The completion
// callback runs once, on whichever thread finishes the group (possibly
// inline in Start()). No callback is run while a lock is held. Thread-safe.
#ifndef FANOUT_COMMON_TASK_GROUP_H_
#define FANOUT_COMMON_TASK_GROUP_H_

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/cancellation.h"
#include "common/executor.h"

namespace fanout {

// What a task (or a group) runs under. A child's deadline never exceeds its
// parent's, and a child is cancelled when its parent is.
struct TaskContext {
  CancellationToken token;
  absl::Time deadline = absl::InfiniteFuture();
  // Not owned; must outlive every group and task using the context.
  Executor* executor = nullptr;
};

// How a group joins its tasks. Every policy cancels the tasks still running
// once the group's result is decided.
enum class JoinPolicy {
  // Every task must succeed. The first failure cancels the rest and is the
  // group's status (annotated with the task's name).
  kAll,
  // Waits for every task or the deadline; the group's status is OK (or
  // Cancelled when the group was cancelled) and each task reports its own.
  kAllSettled,
  // Starts every task; the first success wins. When all fail: the last
  // failure's code, with a message listing every failure.
  kFirstSuccess,
  // Starts one task at a time, in order; the next starts only after the
  // previous failed or exceeded `task_timeout`. The first success wins.
  kFallback,
  // Like kFallback, and also starts the next task when the running ones have
  // not answered within the hedge delay. The first success wins.
  kHedged,
};

absl::string_view JoinPolicyName(JoinPolicy policy);

// How one task ended.
enum class TaskOutcome {
  kOk,
  kError,      // failed with a status other than below
  kTimeout,    // DeadlineExceeded: the task's or the group's deadline passed
  kCancelled,  // cancelled by the group (a winner, a failure, Cancel()) or by itself
  kSkipped,    // never started
};

absl::string_view TaskOutcomeName(TaskOutcome outcome);

struct TaskGroupOptions {
  JoinPolicy policy = JoinPolicy::kAll;
  // The group's deadline; clipped to the parent context's. Expiry cancels
  // the running tasks.
  absl::Time deadline = absl::InfiniteFuture();
  // Each task's deadline is min(group deadline, its start + task_timeout).
  absl::Duration task_timeout = absl::InfiniteDuration();
  // kHedged: how long to wait for an answer before starting the next task.
  absl::Duration hedge_delay = absl::InfiniteDuration();
  // kHedged: when set, overrides hedge_delay; called with the index of the
  // task about to be armed (e.g. the live p95 of the backend that just
  // started). Called without locks held, possibly concurrently.
  absl::AnyInvocable<absl::Duration(int next_index) const> hedge_delay_fn = nullptr;
};

template <typename T>
struct TaskReport {
  std::string name;
  TaskOutcome outcome = TaskOutcome::kSkipped;
  // The value for kOk, else the status (Cancelled for kSkipped).
  absl::StatusOr<T> result = absl::CancelledError("not started");
  // From start until the group saw the task end (zero when skipped).
  absl::Duration latency = absl::ZeroDuration();
};

template <typename T>
struct GroupResult {
  absl::Status status;
  // The task whose value answers the group (first success, fallback,
  // hedged); -1 for kAll/kAllSettled and on failure.
  int winner = -1;
  // One report per task, in the order they were added.
  std::vector<TaskReport<T>> tasks;
};

template <typename T>
using TaskDone = absl::AnyInvocable<void(absl::StatusOr<T>) &&>;
template <typename T>
using Task = absl::AnyInvocable<void(const TaskContext&, TaskDone<T>) &&>;

namespace task_group_internal {
class Core;
}  // namespace task_group_internal

// Acknowledges one task's end to its group; called once (or dropped, which
// reports an Internal error). Move-only.
class TaskCompletion {
 public:
  TaskCompletion(std::shared_ptr<task_group_internal::Core> core, int index);
  TaskCompletion(TaskCompletion&& other) noexcept = default;
  TaskCompletion& operator=(TaskCompletion&& other) = delete;
  TaskCompletion(const TaskCompletion&) = delete;
  TaskCompletion& operator=(const TaskCompletion&) = delete;
  ~TaskCompletion();

  void operator()(absl::Status status) &&;

 private:
  std::shared_ptr<task_group_internal::Core> core_;
  int index_;
};

namespace task_group_internal {

using Launcher = absl::AnyInvocable<void(const TaskContext&, TaskCompletion) &&>;

struct TaskEnd {
  std::string name;
  TaskOutcome outcome = TaskOutcome::kSkipped;
  absl::Status status;
  absl::Duration latency;
};

struct CoreResult {
  absl::Status status;
  int winner = -1;
  std::vector<TaskEnd> tasks;
};

// The untyped state machine behind TaskGroup<T>; see task_group.cc.
class Core : public std::enable_shared_from_this<Core> {
 public:
  Core(const TaskContext& parent, TaskGroupOptions options);
  ~Core();
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  int Add(std::string name, Launcher launch);
  void Start(absl::AnyInvocable<void(CoreResult) &&> done);
  void Cancel();
  // Cancels, drops the completion callback if it has not run, and blocks
  // until every started task has acknowledged.
  void Shutdown();
  bool finished() const;
  void Acknowledge(int index, absl::Status status);

 private:
  struct Child;
  struct Actions;

  void Launch(int index);
  void ArmHedge();
  void OnHedgeTimer(uint64_t generation);
  void OnTaskTimeout(int index);
  void OnDeadline();
  void CancelWith(absl::Status status);
  void Run(Actions& actions);
  void SettleLocked(int index, absl::Status status, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DecideLocked(absl::Status status, int winner, TaskOutcome running_outcome,
                    absl::string_view reason, Actions& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeFinishLocked(Actions& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AllSettledLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AllFailedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const JoinPolicy policy_;
  Executor* const executor_;
  const CancellationToken parent_token_;
  const absl::Time deadline_;
  const absl::Duration task_timeout_;
  const absl::Duration hedge_delay_;
  const absl::AnyInvocable<absl::Duration(int) const> hedge_delay_fn_;

  mutable absl::Mutex mu_;
  // Sized before Start(); never resized after, so elements stay put.
  std::vector<std::unique_ptr<Child>> children_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool decided_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  int winner_ ABSL_GUARDED_BY(mu_) = -1;
  int unacknowledged_ ABSL_GUARDED_BY(mu_) = 0;
  int next_ ABSL_GUARDED_BY(mu_) = 0;  // next task to start (kFallback, kHedged)
  int last_failed_ ABSL_GUARDED_BY(mu_) = -1;
  TimerId deadline_timer_ ABSL_GUARDED_BY(mu_) = kNoTimer;
  TimerId hedge_timer_ ABSL_GUARDED_BY(mu_) = kNoTimer;
  uint64_t hedge_generation_ ABSL_GUARDED_BY(mu_) = 0;
  absl::AnyInvocable<void(CoreResult) &&> done_ ABSL_GUARDED_BY(mu_);
  // Set once in Start() before any task starts; destroyed with the core.
  std::unique_ptr<CancellationCallback> on_parent_cancel_;
};

}  // namespace task_group_internal

// Owns a set of tasks and their join. Add tasks, then Start once.
//
// Destroying a group that has started and not finished cancels it, drops
// its completion callback without calling it, and blocks until every started
// task has called its completion; so destroy it from (or after) its
// completion callback, or on a thread the tasks do not need to complete. A
// group that never started destroys its tasks without running them.
template <typename T>
class TaskGroup {
 public:
  using Done = absl::AnyInvocable<void(GroupResult<T>) &&>;

  // `parent`: the group's token follows parent.token, its deadline is
  // min(parent.deadline, options.deadline), timers run on parent.executor
  // (required; not owned, must outlive the group).
  TaskGroup(const TaskContext& parent, TaskGroupOptions options)
      : core_(std::make_shared<task_group_internal::Core>(parent, std::move(options))) {}
  ~TaskGroup() { core_->Shutdown(); }
  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;

  // Adds a task; only before Start(). `name` labels it in reports and error
  // messages. Returns its index.
  int Add(std::string name, Task<T> task) {
    auto slot = std::make_shared<std::optional<T>>();
    slots_.push_back(slot);
    return core_->Add(std::move(name), [task = std::move(task), slot](const TaskContext& ctx,
                                                                      TaskCompletion ack) mutable {
      std::move(task)(ctx, [slot, ack = std::move(ack)](absl::StatusOr<T> result) mutable {
        absl::Status status = result.status();
        // Written once, before the acknowledgement that publishes it.
        if (result.ok()) *slot = *std::move(result);
        std::move(ack)(std::move(status));
      });
    });
  }

  // Starts the tasks the policy calls for and returns; `done` runs once when
  // the group has finished.
  void Start(Done done) {
    core_->Start(
        [slots = slots_, done = std::move(done)](task_group_internal::CoreResult core) mutable {
          GroupResult<T> result;
          result.status = std::move(core.status);
          result.winner = core.winner;
          result.tasks.reserve(core.tasks.size());
          for (size_t i = 0; i < core.tasks.size(); ++i) {
            TaskReport<T>& report = result.tasks.emplace_back();
            report.name = std::move(core.tasks[i].name);
            report.outcome = core.tasks[i].outcome;
            report.latency = core.tasks[i].latency;
            if (report.outcome == TaskOutcome::kOk && slots[i]->has_value()) {
              report.result = *std::move(*slots[i]);
            } else {
              report.result = std::move(core.tasks[i].status);
            }
          }
          std::move(done)(std::move(result));
        });
  }

  // Cancels the group: running tasks are cancelled, the rest never start,
  // the status becomes Cancelled unless already decided. Any time, any thread.
  void Cancel() { core_->Cancel(); }

  bool finished() const { return core_->finished(); }

  // Start() and block until finished. For tests and tools only: never on an
  // executor or gRPC thread, and not with an executor the caller must drive.
  GroupResult<T> JoinForTesting() {
    absl::Notification finished;
    std::optional<GroupResult<T>> out;
    Start([&](GroupResult<T> result) {
      out = std::move(result);
      finished.Notify();
    });
    finished.WaitForNotification();
    return *std::move(out);
  }

 private:
  std::shared_ptr<task_group_internal::Core> core_;
  std::vector<std::shared_ptr<std::optional<T>>> slots_;
};

}  // namespace fanout

#endif  // FANOUT_COMMON_TASK_GROUP_H_
