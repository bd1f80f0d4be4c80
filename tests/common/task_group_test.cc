#include "common/task_group.h"

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/manual_executor.h"
#include "tests/testing/status_matchers.h"

namespace fanout {
namespace {

using ::fanout::testing::ManualExecutor;
using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;

// Fake asynchronous tasks on a ManualExecutor. Each finishes after a delay
// through an executor timer, or at once with Cancelled when its token is
// cancelled, and counts what happened. Single-threaded, like the executor.
class FakeTasks {
 public:
  explicit FakeTasks(ManualExecutor* executor) : executor_(executor) {}

  // Answers `result` after `delay` unless cancelled first.
  Task<std::string> After(absl::Duration delay, absl::StatusOr<std::string> result,
                          bool honors_cancel = true) {
    return [this, delay, result = std::move(result), honors_cancel](
               const TaskContext& ctx, TaskDone<std::string> done) mutable {
      ++started_;
      ++live_;
      deadlines_.push_back(ctx.deadline);
      auto call = std::make_shared<Call>();
      call->owner = this;
      call->done = std::move(done);
      call->timer = executor_->ScheduleAfter(delay, [call, result]() mutable {
        call->timer = kNoTimer;
        call->Finish(std::move(result));
      });
      call->on_cancel =
          std::make_unique<CancellationCallback>(ctx.token, [this, call, honors_cancel] {
            ++cancels_seen_;
            if (!honors_cancel) return;
            call->Finish(absl::CancelledError("cancelled"));
          });
    };
  }

  // Never answers unless cancelled.
  Task<std::string> Hang() { return After(absl::Hours(24), std::string("too late")); }

  int started() const { return started_; }
  int live() const { return live_; }
  int cancels_seen() const { return cancels_seen_; }
  const std::vector<absl::Time>& deadlines() const { return deadlines_; }

 private:
  struct Call {
    FakeTasks* owner = nullptr;
    TaskDone<std::string> done;
    TimerId timer = kNoTimer;
    std::unique_ptr<CancellationCallback> on_cancel;

    void Finish(absl::StatusOr<std::string> result) {
      if (!done) return;
      TaskDone<std::string> run = std::move(done);
      done = nullptr;
      if (timer != kNoTimer) owner->executor_->CancelTimer(timer);
      timer = kNoTimer;
      on_cancel.reset();  // may be the running callback; allowed
      --owner->live_;
      std::move(run)(std::move(result));
    }
  };

  ManualExecutor* executor_;
  int started_ = 0;
  int live_ = 0;
  int cancels_seen_ = 0;
  std::vector<absl::Time> deadlines_;
};

class TaskGroupTest : public ::testing::Test {
 protected:
  TaskContext Root() { return TaskContext{parent_.token(), absl::InfiniteFuture(), &executor_}; }
  absl::Time Now() { return executor_.clock()->Now(); }

  // Starts `group`, recording its result and how often its callback ran.
  void Start(TaskGroup<std::string>& group) {
    group.Start([this](GroupResult<std::string> result) {
      ++done_calls_;
      result_ = std::move(result);
    });
  }

  ManualExecutor executor_;
  FakeTasks tasks_{&executor_};
  CancellationSource parent_;
  std::optional<GroupResult<std::string>> result_;
  int done_calls_ = 0;
};

TEST_F(TaskGroupTest, AllReturnsAfterSlowestTaskWithEveryValue) {
  TaskGroup<std::string> group(Root(), {.policy = JoinPolicy::kAll});
  group.Add("block", tasks_.After(absl::Milliseconds(300), std::string("block-ok")));
  group.Add("file", tasks_.After(absl::Milliseconds(5), std::string("file-ok")));
  Start(group);
  executor_.AdvanceTime(absl::Milliseconds(299));
  EXPECT_EQ(done_calls_, 0);
  executor_.AdvanceTime(absl::Milliseconds(1));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_OK(result_->status);
  ASSERT_EQ(result_->tasks.size(), 2u);
  EXPECT_EQ(*result_->tasks[0].result, "block-ok");
  EXPECT_EQ(*result_->tasks[1].result, "file-ok");
  EXPECT_EQ(result_->tasks[0].latency, absl::Milliseconds(300));
  EXPECT_EQ(result_->tasks[1].latency, absl::Milliseconds(5));
  EXPECT_EQ(tasks_.live(), 0);
}

TEST_F(TaskGroupTest, AllFailsAtFirstFailureAndCancelsSiblings) {
  TaskGroup<std::string> group(Root(), {.policy = JoinPolicy::kAll});
  group.Add("block", tasks_.After(absl::Milliseconds(300), std::string("block-ok")));
  group.Add("file", tasks_.After(absl::Milliseconds(1), absl::UnavailableError("file down")));
  Start(group);
  executor_.AdvanceTime(absl::Milliseconds(1));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_THAT(result_->status,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("file: file down")));
  EXPECT_EQ(result_->tasks[0].outcome, TaskOutcome::kCancelled);
  EXPECT_EQ(result_->tasks[1].outcome, TaskOutcome::kError);
  EXPECT_EQ(tasks_.cancels_seen(), 1);
  EXPECT_EQ(tasks_.live(), 0);
  EXPECT_EQ(executor_.pending_timers(), 0u);
}

TEST_F(TaskGroupTest, AllSkipsTasksAfterAnInlineFailure) {
  TaskGroup<std::string> group(Root(), {.policy = JoinPolicy::kAll});
  group.Add("bad", [](const TaskContext&, TaskDone<std::string> done) {
    std::move(done)(absl::InvalidArgumentError("bad request"));
  });
  group.Add("never", tasks_.Hang());
  Start(group);
  ASSERT_EQ(done_calls_, 1);
  EXPECT_THAT(result_->status, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(result_->tasks[1].outcome, TaskOutcome::kSkipped);
  EXPECT_EQ(tasks_.started(), 0);
}

TEST_F(TaskGroupTest, AllSettledReportsEveryOutcome) {
  TaskGroup<std::string> group(Root(), {.policy = JoinPolicy::kAllSettled});
  group.Add("a", tasks_.After(absl::Milliseconds(10), std::string("a-ok")));
  group.Add("b", tasks_.After(absl::Milliseconds(1), absl::UnavailableError("b down")));
  group.Add("c", tasks_.After(absl::Milliseconds(50), std::string("c-ok")));
  Start(group);
  executor_.AdvanceTime(absl::Milliseconds(49));
  EXPECT_EQ(done_calls_, 0);  // a failure does not end an all-settled group
  executor_.AdvanceTime(absl::Milliseconds(1));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_OK(result_->status);
  EXPECT_EQ(result_->tasks[0].outcome, TaskOutcome::kOk);
  EXPECT_EQ(result_->tasks[1].outcome, TaskOutcome::kError);
  EXPECT_THAT(result_->tasks[1].result, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(*result_->tasks[2].result, "c-ok");
}

TEST_F(TaskGroupTest, AllSettledDeadlineTimesOutSlowTasks) {
  TaskGroup<std::string> group(
      Root(), {.policy = JoinPolicy::kAllSettled, .deadline = Now() + absl::Milliseconds(100)});
  group.Add("fast", tasks_.After(absl::Milliseconds(10), std::string("fast-ok")));
  group.Add("slow", tasks_.After(absl::Milliseconds(500), std::string("slow-ok")));
  Start(group);
  executor_.AdvanceTime(absl::Milliseconds(100));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_OK(result_->status);
  EXPECT_EQ(result_->tasks[0].outcome, TaskOutcome::kOk);
  EXPECT_EQ(result_->tasks[1].outcome, TaskOutcome::kTimeout);
  EXPECT_THAT(result_->tasks[1].result, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(tasks_.cancels_seen(), 1);
  EXPECT_EQ(tasks_.live(), 0);
}

TEST_F(TaskGroupTest, FirstSuccessReturnsFastestAndCancelsLosers) {
  TaskGroup<std::string> group(Root(), {.policy = JoinPolicy::kFirstSuccess});
  group.Add("cache-1", tasks_.After(absl::Milliseconds(500), std::string("cache-1")));
  group.Add("cache-2", tasks_.After(absl::Milliseconds(200), std::string("cache-2")));
  group.Add("database", tasks_.After(absl::Milliseconds(800), std::string("database")));
  Start(group);
  executor_.AdvanceTime(absl::Milliseconds(200));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_OK(result_->status);
  EXPECT_EQ(result_->winner, 1);
  EXPECT_EQ(*result_->tasks[1].result, "cache-2");
  EXPECT_EQ(result_->tasks[0].outcome, TaskOutcome::kCancelled);
  EXPECT_EQ(result_->tasks[2].outcome, TaskOutcome::kCancelled);
  EXPECT_EQ(tasks_.cancels_seen(), 2);
  EXPECT_EQ(tasks_.live(), 0);
  EXPECT_EQ(executor_.pending_timers(), 0u);
}

TEST_F(TaskGroupTest, FirstSuccessWaitsPastFailures) {
  TaskGroup<std::string> group(Root(), {.policy = JoinPolicy::kFirstSuccess});
  group.Add("broken", tasks_.After(absl::Milliseconds(5), absl::UnavailableError("down")));
  group.Add("slow", tasks_.After(absl::Milliseconds(50), std::string("slow-ok")));
  Start(group);
  executor_.AdvanceTime(absl::Milliseconds(49));
  EXPECT_EQ(done_calls_, 0);
  executor_.AdvanceTime(absl::Milliseconds(1));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_EQ(result_->winner, 1);
  EXPECT_EQ(result_->tasks[0].outcome, TaskOutcome::kError);
}

TEST_F(TaskGroupTest, FirstSuccessAllFailedReportsLastErrorAndEveryFailure) {
  TaskGroup<std::string> group(Root(), {.policy = JoinPolicy::kFirstSuccess});
  group.Add("a", tasks_.After(absl::Milliseconds(5), absl::UnavailableError("a down")));
  group.Add("b", tasks_.After(absl::Milliseconds(9), absl::ResourceExhaustedError("b full")));
  Start(group);
  executor_.AdvanceTime(absl::Milliseconds(9));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_EQ(result_->winner, -1);
  EXPECT_THAT(result_->status, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("a down")));
  EXPECT_THAT(result_->status.message(), HasSubstr("b full"));
}

TEST_F(TaskGroupTest, FallbackStartsNextOnlyAfterPreviousFailed) {
  TaskGroup<std::string> group(Root(), {.policy = JoinPolicy::kFallback});
  group.Add("primary", tasks_.After(absl::Milliseconds(100), absl::UnavailableError("down")));
  group.Add("secondary", tasks_.After(absl::Milliseconds(10), std::string("secondary-ok")));
  group.Add("tertiary", tasks_.After(absl::Milliseconds(1), std::string("tertiary-ok")));
  Start(group);
  EXPECT_EQ(tasks_.started(), 1);
  executor_.AdvanceTime(absl::Milliseconds(99));
  EXPECT_EQ(tasks_.started(), 1);
  executor_.AdvanceTime(absl::Milliseconds(1));
  EXPECT_EQ(tasks_.started(), 2);
  executor_.AdvanceTime(absl::Milliseconds(10));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_EQ(result_->winner, 1);
  EXPECT_EQ(*result_->tasks[1].result, "secondary-ok");
  EXPECT_EQ(result_->tasks[2].outcome, TaskOutcome::kSkipped);
  EXPECT_EQ(tasks_.started(), 2);
}

TEST_F(TaskGroupTest, FallbackMovesOnWhenTaskTimesOut) {
  TaskGroup<std::string> group(
      Root(), {.policy = JoinPolicy::kFallback, .task_timeout = absl::Milliseconds(50)});
  group.Add("stuck", tasks_.Hang());
  group.Add("spare", tasks_.After(absl::Milliseconds(10), std::string("spare-ok")));
  Start(group);
  executor_.AdvanceTime(absl::Milliseconds(50));
  EXPECT_EQ(tasks_.started(), 2);
  EXPECT_EQ(tasks_.cancels_seen(), 1);
  executor_.AdvanceTime(absl::Milliseconds(10));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_EQ(result_->winner, 1);
  EXPECT_EQ(result_->tasks[0].outcome, TaskOutcome::kTimeout);
  EXPECT_EQ(result_->tasks[0].latency, absl::Milliseconds(50));
  EXPECT_EQ(tasks_.live(), 0);
}

TEST_F(TaskGroupTest, HedgedStartsNextAfterDelayAndFirstAnswerWins) {
  TaskGroup<std::string> group(
      Root(), {.policy = JoinPolicy::kHedged, .hedge_delay = absl::Milliseconds(100)});
  group.Add("primary", tasks_.After(absl::Milliseconds(300), std::string("primary")));
  group.Add("hedge", tasks_.After(absl::Milliseconds(50), std::string("hedge")));
  group.Add("third", tasks_.After(absl::Milliseconds(1), std::string("third")));
  Start(group);
  executor_.AdvanceTime(absl::Milliseconds(99));
  EXPECT_EQ(tasks_.started(), 1);
  executor_.AdvanceTime(absl::Milliseconds(1));
  EXPECT_EQ(tasks_.started(), 2);
  executor_.AdvanceTime(absl::Milliseconds(50));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_EQ(result_->winner, 1);
  EXPECT_EQ(result_->tasks[0].outcome, TaskOutcome::kCancelled);
  EXPECT_EQ(result_->tasks[2].outcome, TaskOutcome::kSkipped);
  EXPECT_EQ(tasks_.started(), 2);
  EXPECT_EQ(tasks_.live(), 0);
  EXPECT_EQ(executor_.pending_timers(), 0u);
}

TEST_F(TaskGroupTest, HedgedDoesNotHedgeWhenFirstAnswersInTime) {
  TaskGroup<std::string> group(
      Root(), {.policy = JoinPolicy::kHedged, .hedge_delay = absl::Milliseconds(100)});
  group.Add("primary", tasks_.After(absl::Milliseconds(60), std::string("primary")));
  group.Add("hedge", tasks_.After(absl::Milliseconds(1), std::string("hedge")));
  Start(group);
  executor_.AdvanceTime(absl::Milliseconds(200));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_EQ(result_->winner, 0);
  EXPECT_EQ(tasks_.started(), 1);
  EXPECT_EQ(executor_.pending_timers(), 0u);
}

TEST_F(TaskGroupTest, HedgedTakesDelayFromCallback) {
  std::vector<int> asked;
  TaskGroup<std::string> group(
      Root(), {.policy = JoinPolicy::kHedged, .hedge_delay_fn = [&asked](int next) {
                 asked.push_back(next);
                 return absl::Milliseconds(20 * next);
               }});
  group.Add("a", tasks_.Hang());
  group.Add("b", tasks_.Hang());
  group.Add("c", tasks_.After(absl::Milliseconds(5), std::string("c")));
  Start(group);
  executor_.AdvanceTime(absl::Milliseconds(20));  // b after 20 ms
  EXPECT_EQ(tasks_.started(), 2);
  executor_.AdvanceTime(absl::Milliseconds(39));  // c 40 ms after b
  EXPECT_EQ(tasks_.started(), 2);
  executor_.AdvanceTime(absl::Milliseconds(1));
  EXPECT_EQ(tasks_.started(), 3);
  executor_.AdvanceTime(absl::Milliseconds(5));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_EQ(result_->winner, 2);
  EXPECT_EQ(asked, (std::vector<int>{1, 2}));
  EXPECT_EQ(tasks_.live(), 0);
}

TEST_F(TaskGroupTest, HedgedStartsNextAtOnceWhenRunningTaskFails) {
  TaskGroup<std::string> group(
      Root(), {.policy = JoinPolicy::kHedged, .hedge_delay = absl::Milliseconds(100)});
  group.Add("broken", tasks_.After(absl::Milliseconds(5), absl::UnavailableError("down")));
  group.Add("spare", tasks_.After(absl::Milliseconds(5), std::string("spare")));
  Start(group);
  executor_.AdvanceTime(absl::Milliseconds(10));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_EQ(result_->winner, 1);
  EXPECT_EQ(result_->tasks[1].latency, absl::Milliseconds(5));
}

TEST_F(TaskGroupTest, DeadlineCancelsRunningTasksAndFailsGroup) {
  TaskGroup<std::string> group(
      Root(), {.policy = JoinPolicy::kAll, .deadline = Now() + absl::Milliseconds(100)});
  group.Add("a", tasks_.After(absl::Milliseconds(10), std::string("a")));
  group.Add("b", tasks_.Hang());
  Start(group);
  executor_.AdvanceTime(absl::Milliseconds(99));
  EXPECT_EQ(done_calls_, 0);
  executor_.AdvanceTime(absl::Milliseconds(1));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_THAT(result_->status, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(result_->tasks[0].outcome, TaskOutcome::kOk);
  EXPECT_EQ(result_->tasks[1].outcome, TaskOutcome::kTimeout);
  EXPECT_EQ(tasks_.cancels_seen(), 1);
  EXPECT_EQ(tasks_.live(), 0);
  EXPECT_EQ(executor_.pending_timers(), 0u);
}

TEST_F(TaskGroupTest, FinishingEarlyCancelsDeadlineTimer) {
  TaskGroup<std::string> group(Root(),
                               {.policy = JoinPolicy::kAll, .deadline = Now() + absl::Seconds(10)});
  group.Add("a", tasks_.After(absl::Milliseconds(10), std::string("a")));
  Start(group);
  EXPECT_EQ(executor_.pending_timers(), 2u);  // the task's and the group's deadline
  executor_.AdvanceTime(absl::Milliseconds(10));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_EQ(executor_.pending_timers(), 0u);
}

TEST_F(TaskGroupTest, ChildDeadlineNeverExceedsParentDeadline) {
  const absl::Time start = Now();
  TaskContext parent = Root();
  parent.deadline = start + absl::Milliseconds(100);
  TaskGroup<std::string> group(parent, {.policy = JoinPolicy::kAllSettled,
                                        .deadline = start + absl::Seconds(5),
                                        .task_timeout = absl::Milliseconds(30)});
  group.Add("a", tasks_.After(absl::Milliseconds(1), std::string("a")));
  Start(group);
  TaskGroup<std::string> loose(
      parent, {.policy = JoinPolicy::kAllSettled, .deadline = start + absl::Seconds(5)});
  loose.Add("b", tasks_.After(absl::Milliseconds(1), std::string("b")));
  loose.Start([](GroupResult<std::string>) {});
  ASSERT_EQ(tasks_.deadlines().size(), 2u);
  EXPECT_EQ(tasks_.deadlines()[0], start + absl::Milliseconds(30));
  EXPECT_EQ(tasks_.deadlines()[1], start + absl::Milliseconds(100));
  executor_.AdvanceTime(absl::Milliseconds(1));
  EXPECT_EQ(done_calls_, 1);
  EXPECT_TRUE(loose.finished());
}

TEST_F(TaskGroupTest, ParentCancellationReachesEveryTask) {
  TaskGroup<std::string> group(Root(), {.policy = JoinPolicy::kAllSettled});
  group.Add("a", tasks_.Hang());
  group.Add("b", tasks_.Hang());
  Start(group);
  executor_.AdvanceTime(absl::Milliseconds(10));
  EXPECT_EQ(tasks_.live(), 2);
  parent_.Cancel();
  ASSERT_EQ(done_calls_, 1);
  EXPECT_THAT(result_->status, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(result_->tasks[0].outcome, TaskOutcome::kCancelled);
  EXPECT_EQ(result_->tasks[1].outcome, TaskOutcome::kCancelled);
  EXPECT_EQ(tasks_.cancels_seen(), 2);
  EXPECT_EQ(tasks_.live(), 0);
}

TEST_F(TaskGroupTest, CancelledParentStartsNothing) {
  parent_.Cancel();
  TaskGroup<std::string> group(Root(), {.policy = JoinPolicy::kFirstSuccess});
  group.Add("a", tasks_.Hang());
  Start(group);
  ASSERT_EQ(done_calls_, 1);
  EXPECT_THAT(result_->status, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(result_->tasks[0].outcome, TaskOutcome::kSkipped);
  EXPECT_EQ(tasks_.started(), 0);
}

TEST_F(TaskGroupTest, CancelBeforeStartStartsNothing) {
  TaskGroup<std::string> group(Root(), {.policy = JoinPolicy::kAll});
  group.Add("a", tasks_.Hang());
  group.Cancel();
  Start(group);
  ASSERT_EQ(done_calls_, 1);
  EXPECT_THAT(result_->status, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(tasks_.started(), 0);
}

TEST_F(TaskGroupTest, GroupWaitsForTaskThatAnswersAfterCancellation) {
  TaskGroup<std::string> group(Root(), {.policy = JoinPolicy::kFirstSuccess});
  group.Add("fast", tasks_.After(absl::Milliseconds(10), std::string("fast")));
  group.Add("stubborn", tasks_.After(absl::Milliseconds(50), std::string("late"),
                                     /*honors_cancel=*/false));
  Start(group);
  executor_.AdvanceTime(absl::Milliseconds(10));
  EXPECT_EQ(tasks_.cancels_seen(), 1);
  EXPECT_EQ(done_calls_, 0);  // the stubborn task has not acknowledged yet
  EXPECT_FALSE(group.finished());
  executor_.AdvanceTime(absl::Milliseconds(40));
  ASSERT_EQ(done_calls_, 1);
  EXPECT_EQ(result_->winner, 0);
  EXPECT_EQ(result_->tasks[1].outcome, TaskOutcome::kCancelled);  // "late" is ignored
  EXPECT_THAT(result_->tasks[1].result, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(result_->tasks[1].latency, absl::Milliseconds(10));
  EXPECT_EQ(tasks_.live(), 0);
}

TEST_F(TaskGroupTest, CompletionCalledTwiceCountsOnce) {
  TaskGroup<std::string> group(Root(), {.policy = JoinPolicy::kAllSettled});
  group.Add("twice", [](const TaskContext&, TaskDone<std::string> done) {
    std::move(done)(std::string("first"));
    std::move(done)(absl::InternalError("second"));  // NOLINT: deliberate misuse
  });
  Start(group);
  ASSERT_EQ(done_calls_, 1);
  EXPECT_EQ(result_->tasks[0].outcome, TaskOutcome::kOk);
  EXPECT_EQ(*result_->tasks[0].result, "first");
}

TEST_F(TaskGroupTest, DroppedCompletionReportsInternalError) {
  TaskGroup<std::string> group(Root(), {.policy = JoinPolicy::kAllSettled});
  group.Add("dropper", [](const TaskContext&, TaskDone<std::string> done) { done = nullptr; });
  Start(group);
  ASSERT_EQ(done_calls_, 1);
  EXPECT_EQ(result_->tasks[0].outcome, TaskOutcome::kError);
  EXPECT_THAT(result_->tasks[0].result, StatusIs(absl::StatusCode::kInternal));
}

TEST_F(TaskGroupTest, DestroyingRunningGroupCancelsTasksWithoutCallingDone) {
  {
    TaskGroup<std::string> group(Root(), {.policy = JoinPolicy::kAll});
    group.Add("a", tasks_.Hang());
    group.Add("b", tasks_.Hang());
    Start(group);
    EXPECT_EQ(tasks_.live(), 2);
  }
  EXPECT_EQ(tasks_.cancels_seen(), 2);
  EXPECT_EQ(tasks_.live(), 0);
  EXPECT_EQ(done_calls_, 0);
  executor_.AdvanceTime(absl::Hours(48));
  EXPECT_EQ(done_calls_, 0);
}

TEST_F(TaskGroupTest, DestroyingGroupFromItsCompletionIsSafe) {
  auto group = std::make_unique<TaskGroup<std::string>>(Root(), TaskGroupOptions{});
  group->Add("a", tasks_.After(absl::Milliseconds(1), std::string("a")));
  group->Start([&](GroupResult<std::string> result) {
    ++done_calls_;
    group.reset();
  });
  executor_.AdvanceTime(absl::Milliseconds(1));
  EXPECT_EQ(done_calls_, 1);
  EXPECT_EQ(group, nullptr);
}

TEST_F(TaskGroupTest, EmptyGroupFinishesAtStart) {
  TaskGroup<std::string> all(Root(), {.policy = JoinPolicy::kAll});
  Start(all);
  ASSERT_EQ(done_calls_, 1);
  EXPECT_OK(result_->status);
  TaskGroup<std::string> first(Root(), {.policy = JoinPolicy::kFirstSuccess});
  Start(first);
  ASSERT_EQ(done_calls_, 2);
  EXPECT_THAT(result_->status, StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(TaskGroupThreadPoolTest, JoinForTestingRunsOnRealExecutor) {
  auto pool = ThreadPoolExecutor::Create(2, "task-group-test");
  TaskGroup<int> group(TaskContext{{}, absl::InfiniteFuture(), pool.get()},
                       {.policy = JoinPolicy::kAll});
  for (int i = 0; i < 8; ++i) {
    group.Add(absl::StrCat("t", i), [i](const TaskContext& ctx, TaskDone<int> done) {
      ctx.executor->ScheduleAfter(
          absl::Milliseconds(i), [i, done = std::move(done)]() mutable { std::move(done)(i * i); });
    });
  }
  GroupResult<int> result = group.JoinForTesting();
  ASSERT_OK(result.status);
  ASSERT_EQ(result.tasks.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(*result.tasks[i].result, i * i);
}

TEST(TaskGroupThreadPoolTest, RacingCompletionsAndCancellationsFinishEveryGroupOnce) {
  auto pool = ThreadPoolExecutor::Create(2, "task-group-race");
  constexpr int kGroups = 200;
  std::atomic<int> live_tasks{0};
  std::atomic<int> done_calls{0};
  absl::BlockingCounter finished(kGroups);
  std::vector<std::unique_ptr<CancellationSource>> parents;
  std::vector<std::unique_ptr<TaskGroup<int>>> groups;
  for (int g = 0; g < kGroups; ++g) {
    parents.push_back(std::make_unique<CancellationSource>());
    const JoinPolicy policy = g % 3 == 0   ? JoinPolicy::kFirstSuccess
                              : g % 3 == 1 ? JoinPolicy::kAll
                                           : JoinPolicy::kHedged;
    groups.push_back(std::make_unique<TaskGroup<int>>(
        TaskContext{parents.back()->token(), absl::InfiniteFuture(), pool.get()},
        TaskGroupOptions{.policy = policy, .hedge_delay = absl::Microseconds(50)}));
    for (int t = 0; t < 3; ++t) {
      groups.back()->Add("t", [&live_tasks, t](const TaskContext& ctx, TaskDone<int> done) {
        live_tasks.fetch_add(1);
        // Completes from a timer or from cancellation, whichever comes first.
        struct Once {
          absl::Mutex mu;
          TaskDone<int> done ABSL_GUARDED_BY(mu);
          std::unique_ptr<CancellationCallback> on_cancel ABSL_GUARDED_BY(mu);
        };
        auto once = std::make_shared<Once>();
        {
          absl::MutexLock l(&once->mu);
          once->done = std::move(done);
        }
        auto finish = [&live_tasks, once](absl::StatusOr<int> result) {
          TaskDone<int> run;
          std::unique_ptr<CancellationCallback> registration;
          {
            absl::MutexLock l(&once->mu);
            run = std::move(once->done);
            once->done = nullptr;
            registration = std::move(once->on_cancel);
          }
          if (!run) return;
          live_tasks.fetch_sub(1);
          std::move(run)(std::move(result));
        };
        ctx.executor->ScheduleAfter(absl::Microseconds(20 * t),
                                    [finish, t]() mutable { finish(t); });
        auto registration = std::make_unique<CancellationCallback>(
            ctx.token, [finish]() mutable { finish(absl::CancelledError("cancelled")); });
        absl::MutexLock l(&once->mu);
        if (once->done) once->on_cancel = std::move(registration);
      });
    }
    groups.back()->Start([&](GroupResult<int>) {
      done_calls.fetch_add(1);
      finished.DecrementCount();
    });
    if (g % 2 == 0) parents.back()->Cancel();
  }
  finished.Wait();
  groups.clear();
  EXPECT_EQ(done_calls.load(), kGroups);
  EXPECT_EQ(live_tasks.load(), 0);
}

}  // namespace
}  // namespace fanout
