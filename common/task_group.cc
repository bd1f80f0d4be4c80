#include "common/task_group.h"

#include <algorithm>
#include <cassert>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fanout {

absl::string_view JoinPolicyName(JoinPolicy policy) {
  switch (policy) {
    case JoinPolicy::kAll:
      return "all";
    case JoinPolicy::kAllSettled:
      return "all_settled";
    case JoinPolicy::kFirstSuccess:
      return "first_success";
    case JoinPolicy::kFallback:
      return "fallback";
    case JoinPolicy::kHedged:
      return "hedged";
  }
  return "unknown";
}

absl::string_view TaskOutcomeName(TaskOutcome outcome) {
  switch (outcome) {
    case TaskOutcome::kOk:
      return "ok";
    case TaskOutcome::kError:
      return "error";
    case TaskOutcome::kTimeout:
      return "timeout";
    case TaskOutcome::kCancelled:
      return "cancelled";
    case TaskOutcome::kSkipped:
      return "skipped";
  }
  return "unknown";
}

TaskCompletion::TaskCompletion(std::shared_ptr<task_group_internal::Core> core, int index)
    : core_(std::move(core)), index_(index) {}

TaskCompletion::~TaskCompletion() {
  if (core_ != nullptr) {
    core_->Acknowledge(index_,
                       absl::InternalError("task dropped its completion without calling it"));
  }
}

void TaskCompletion::operator()(absl::Status status) && {
  std::shared_ptr<task_group_internal::Core> core = std::move(core_);
  if (core != nullptr) core->Acknowledge(index_, std::move(status));
}

namespace task_group_internal {
namespace {

TaskOutcome OutcomeOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return TaskOutcome::kOk;
    case absl::StatusCode::kDeadlineExceeded:
      return TaskOutcome::kTimeout;
    case absl::StatusCode::kCancelled:
      return TaskOutcome::kCancelled;
    default:
      return TaskOutcome::kError;
  }
}

bool StartsOneAtATime(JoinPolicy policy) {
  return policy == JoinPolicy::kFallback || policy == JoinPolicy::kHedged;
}

}  // namespace

struct Core::Child {
  std::string name;
  Launcher launch;
  CancellationSource source;
  bool started = false;
  bool settled = false;       // the group has counted this task's end
  bool acknowledged = false;  // the task has called its completion
  TaskOutcome outcome = TaskOutcome::kSkipped;
  absl::Status status = absl::CancelledError("not started");
  absl::Time start_time;
  absl::Duration latency = absl::ZeroDuration();
  TimerId timer = kNoTimer;
};

// Work decided under mu_ and done after releasing it, so that no callback,
// cancellation or task start runs with the lock held.
struct Core::Actions {
  std::vector<TimerId> cancel_timers;
  std::vector<CancellationSource*> cancel_sources;
  std::vector<int> launch;
  std::vector<Launcher> discard;
  absl::AnyInvocable<void(CoreResult) &&> done;
  CoreResult result;
};

Core::Core(const TaskContext& parent, TaskGroupOptions options)
    : policy_(options.policy),
      executor_(parent.executor),
      parent_token_(parent.token),
      deadline_(std::min(parent.deadline, options.deadline)),
      task_timeout_(options.task_timeout),
      hedge_delay_(options.hedge_delay),
      hedge_delay_fn_(std::move(options.hedge_delay_fn)) {
  assert(executor_ != nullptr);
}

Core::~Core() = default;

int Core::Add(std::string name, Launcher launch) {
  absl::MutexLock l(&mu_);
  assert(!started_);
  auto child = std::make_unique<Child>();
  child->name = std::move(name);
  child->launch = std::move(launch);
  children_.push_back(std::move(child));
  return static_cast<int>(children_.size()) - 1;
}

void Core::Start(absl::AnyInvocable<void(CoreResult) &&> done) {
  // `done` may destroy the owning TaskGroup; keep the core alive until return.
  std::shared_ptr<Core> self = shared_from_this();
  std::weak_ptr<Core> weak = self;
  Actions actions;
  {
    absl::MutexLock l(&mu_);
    assert(!started_);
    started_ = true;
    done_ = std::move(done);
    if (!decided_ && children_.empty()) {
      const bool empty_ok = policy_ == JoinPolicy::kAll || policy_ == JoinPolicy::kAllSettled;
      DecideLocked(
          empty_ok ? absl::OkStatus() : absl::InvalidArgumentError("task group has no tasks"), -1,
          TaskOutcome::kCancelled, "", actions);
    }
    if (!decided_ && executor_->clock()->Now() >= deadline_) {
      DecideLocked(policy_ == JoinPolicy::kAllSettled
                       ? absl::OkStatus()
                       : absl::DeadlineExceededError("deadline passed before the group started"),
                   -1, TaskOutcome::kTimeout, "deadline passed", actions);
    }
    if (!decided_ && deadline_ != absl::InfiniteFuture()) {
      deadline_timer_ = executor_->ScheduleAt(deadline_, [weak] {
        if (auto core = weak.lock()) core->OnDeadline();
      });
    }
    if (!decided_) {
      if (StartsOneAtATime(policy_)) {
        actions.launch.push_back(0);
      } else {
        for (int i = 0; i < static_cast<int>(children_.size()); ++i) actions.launch.push_back(i);
      }
    }
    MaybeFinishLocked(actions);
  }
  // Registered before any task starts; runs inline when already cancelled.
  on_parent_cancel_ = std::make_unique<CancellationCallback>(parent_token_, [weak] {
    if (auto core = weak.lock()) core->CancelWith(absl::CancelledError("cancelled by the parent"));
  });
  Run(actions);
}

void Core::Cancel() { CancelWith(absl::CancelledError("task group cancelled")); }

void Core::CancelWith(absl::Status status) {
  std::shared_ptr<Core> self = shared_from_this();
  Actions actions;
  {
    absl::MutexLock l(&mu_);
    if (!decided_) {
      DecideLocked(std::move(status), -1, TaskOutcome::kCancelled, "group cancelled", actions);
    }
    MaybeFinishLocked(actions);
  }
  Run(actions);
}

void Core::Shutdown() {
  absl::AnyInvocable<void(CoreResult) &&> dropped;
  {
    absl::MutexLock l(&mu_);
    if (!finished_) dropped = std::move(done_);
  }
  dropped = nullptr;
  Cancel();
  absl::MutexLock l(&mu_);
  auto quiet = [this]()
                   ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !started_ || unacknowledged_ == 0; };
  mu_.Await(absl::Condition(&quiet));
}

bool Core::finished() const {
  absl::MutexLock l(&mu_);
  return finished_;
}

void Core::Acknowledge(int index, absl::Status status) {
  Actions actions;
  {
    absl::MutexLock l(&mu_);
    Child& child = *children_[index];
    if (!child.started || child.acknowledged) return;  // a second call is ignored
    child.acknowledged = true;
    --unacknowledged_;
    // A task that ends after the group stopped counting it (cancelled, timed
    // out) only acknowledges; its result is dropped.
    if (!child.settled) SettleLocked(index, std::move(status), actions);
    MaybeFinishLocked(actions);
  }
  Run(actions);
}

void Core::Launch(int index) {
  Launcher launch;
  TaskContext ctx;
  {
    absl::MutexLock l(&mu_);
    Child& child = *children_[index];
    if (decided_ || child.started) return;
    child.started = true;
    ++unacknowledged_;
    const absl::Time now = executor_->clock()->Now();
    child.start_time = now;
    ctx.deadline = std::min(deadline_, now + task_timeout_);
    ctx.token = child.source.token();
    ctx.executor = executor_;
    if (ctx.deadline < deadline_) {
      std::weak_ptr<Core> weak = weak_from_this();
      child.timer = executor_->ScheduleAt(ctx.deadline, [weak, index] {
        if (auto core = weak.lock()) core->OnTaskTimeout(index);
      });
    }
    if (StartsOneAtATime(policy_)) next_ = std::max(next_, index + 1);
    launch = std::move(child.launch);
  }
  std::move(launch)(ctx, TaskCompletion(shared_from_this(), index));
}

void Core::ArmHedge() {
  int next;
  {
    absl::MutexLock l(&mu_);
    if (decided_ || next_ >= static_cast<int>(children_.size())) return;
    next = next_;
  }
  // User code: called without the lock.
  const absl::Duration delay = hedge_delay_fn_ ? hedge_delay_fn_(next) : hedge_delay_;
  absl::MutexLock l(&mu_);
  if (decided_ || next_ != next) return;  // raced with another start
  if (hedge_timer_ != kNoTimer) executor_->CancelTimer(hedge_timer_);
  hedge_timer_ = kNoTimer;
  const uint64_t generation = ++hedge_generation_;
  if (delay == absl::InfiniteDuration()) return;
  std::weak_ptr<Core> weak = weak_from_this();
  hedge_timer_ =
      executor_->ScheduleAfter(std::max(delay, absl::ZeroDuration()), [weak, generation] {
        if (auto core = weak.lock()) core->OnHedgeTimer(generation);
      });
}

void Core::OnHedgeTimer(uint64_t generation) {
  Actions actions;
  {
    absl::MutexLock l(&mu_);
    if (generation != hedge_generation_) return;
    hedge_timer_ = kNoTimer;
    if (decided_ || next_ >= static_cast<int>(children_.size())) return;
    actions.launch.push_back(next_);
  }
  Run(actions);
}

void Core::OnTaskTimeout(int index) {
  Actions actions;
  {
    absl::MutexLock l(&mu_);
    Child& child = *children_[index];
    child.timer = kNoTimer;  // it fired
    if (child.settled) return;
    actions.cancel_sources.push_back(&child.source);
    SettleLocked(index,
                 absl::DeadlineExceededError(absl::StrCat(child.name, ": no answer within ",
                                                          absl::FormatDuration(task_timeout_))),
                 actions);
    MaybeFinishLocked(actions);
  }
  Run(actions);
}

void Core::OnDeadline() {
  Actions actions;
  {
    absl::MutexLock l(&mu_);
    deadline_timer_ = kNoTimer;
    if (!decided_) {
      DecideLocked(policy_ == JoinPolicy::kAllSettled
                       ? absl::OkStatus()
                       : absl::DeadlineExceededError("deadline exceeded"),
                   -1, TaskOutcome::kTimeout, "deadline exceeded", actions);
    }
    MaybeFinishLocked(actions);
  }
  Run(actions);
}

void Core::SettleLocked(int index, absl::Status status, Actions& actions) {
  Child& child = *children_[index];
  child.settled = true;
  child.outcome = OutcomeOf(status);
  child.status = std::move(status);
  child.latency = executor_->clock()->Now() - child.start_time;
  if (child.timer != kNoTimer) {
    actions.cancel_timers.push_back(child.timer);
    child.timer = kNoTimer;
  }
  if (decided_) return;
  const bool ok = child.outcome == TaskOutcome::kOk;
  if (!ok) last_failed_ = index;
  switch (policy_) {
    case JoinPolicy::kAll:
      if (!ok) {
        DecideLocked(absl::Status(child.status.code(),
                                  absl::StrCat(child.name, ": ", child.status.message())),
                     -1, TaskOutcome::kCancelled, absl::StrCat(child.name, " failed"), actions);
      } else if (AllSettledLocked()) {
        DecideLocked(absl::OkStatus(), -1, TaskOutcome::kCancelled, "", actions);
      }
      return;
    case JoinPolicy::kAllSettled:
      if (AllSettledLocked())
        DecideLocked(absl::OkStatus(), -1, TaskOutcome::kCancelled, "", actions);
      return;
    case JoinPolicy::kFirstSuccess:
    case JoinPolicy::kFallback:
    case JoinPolicy::kHedged:
      if (ok) {
        DecideLocked(absl::OkStatus(), index, TaskOutcome::kCancelled,
                     absl::StrCat(child.name, " answered first"), actions);
      } else if (StartsOneAtATime(policy_) && next_ < static_cast<int>(children_.size())) {
        actions.launch.push_back(next_);
      } else if (AllSettledLocked()) {
        DecideLocked(AllFailedLocked(), -1, TaskOutcome::kCancelled, "", actions);
      }
      return;
  }
}

void Core::DecideLocked(absl::Status status, int winner, TaskOutcome running_outcome,
                        absl::string_view reason, Actions& actions) {
  decided_ = true;
  status_ = std::move(status);
  winner_ = winner;
  const absl::Time now = executor_->clock()->Now();
  for (auto& child : children_) {
    if (!child->started || child->settled) continue;
    child->settled = true;
    child->outcome = running_outcome;
    child->status = running_outcome == TaskOutcome::kTimeout
                        ? absl::DeadlineExceededError(absl::StrCat(child->name, ": ", reason))
                        : absl::CancelledError(absl::StrCat(child->name, ": ", reason));
    child->latency = now - child->start_time;
    actions.cancel_sources.push_back(&child->source);
    if (child->timer != kNoTimer) {
      actions.cancel_timers.push_back(child->timer);
      child->timer = kNoTimer;
    }
  }
  for (TimerId* timer : {&deadline_timer_, &hedge_timer_}) {
    if (*timer != kNoTimer) actions.cancel_timers.push_back(*timer);
    *timer = kNoTimer;
  }
  ++hedge_generation_;
}

void Core::MaybeFinishLocked(Actions& actions) {
  if (!started_ || !decided_ || finished_ || unacknowledged_ > 0) return;
  finished_ = true;
  actions.done = std::move(done_);
  actions.result.status = status_;
  actions.result.winner = winner_;
  for (auto& child : children_) {
    actions.result.tasks.push_back({child->name, child->outcome, child->status, child->latency});
    if (child->launch) actions.discard.push_back(std::move(child->launch));
  }
}

bool Core::AllSettledLocked() const {
  for (const auto& child : children_) {
    if (!child->settled) return false;
  }
  return true;
}

absl::Status Core::AllFailedLocked() const {
  std::string message = absl::StrCat("all ", children_.size(), " tasks failed");
  for (const auto& child : children_) {
    absl::StrAppend(&message, "; ", child->name, ": ", child->status.ToString());
  }
  const absl::StatusCode code =
      last_failed_ >= 0 ? children_[last_failed_]->status.code() : absl::StatusCode::kUnknown;
  return absl::Status(code, message);
}

void Core::Run(Actions& actions) {
  for (TimerId timer : actions.cancel_timers) executor_->CancelTimer(timer);
  // Cancellation callbacks may complete tasks inline, re-entering the core.
  for (CancellationSource* source : actions.cancel_sources) source->Cancel();
  for (int index : actions.launch) {
    Launch(index);
    if (policy_ == JoinPolicy::kHedged) ArmHedge();
  }
  actions.discard.clear();
  if (actions.done) std::move(actions.done)(std::move(actions.result));
}

}  // namespace task_group_internal
}  // namespace fanout
