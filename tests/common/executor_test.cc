#include "common/executor.h"

#include <atomic>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/testing/manual_executor.h"

namespace fanout {
namespace {

TEST(ThreadPoolExecutorTest, ScheduleRunsEveryTask) {
  auto pool = ThreadPoolExecutor::Create(2, "test");
  constexpr int kTasks = 1000;
  std::atomic<int> ran{0};
  absl::BlockingCounter done(kTasks);
  for (int i = 0; i < kTasks; ++i) {
    pool->Schedule([&] {
      ran.fetch_add(1);
      done.DecrementCount();
    });
  }
  done.Wait();
  EXPECT_EQ(ran.load(), kTasks);
}

TEST(ThreadPoolExecutorTest, TimersFireInDeadlineOrder) {
  auto pool = ThreadPoolExecutor::Create(1, "test");
  absl::Mutex mu;
  std::vector<int> order;
  absl::BlockingCounter done(3);
  const absl::Time now = absl::Now();
  for (int i : {3, 1, 2}) {
    pool->ScheduleAt(now + absl::Milliseconds(20 * i), [&, i] {
      absl::MutexLock l(&mu);
      order.push_back(i);
      done.DecrementCount();
    });
  }
  done.Wait();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(ThreadPoolExecutorTest, CancelTimerPreventsRun) {
  auto pool = ThreadPoolExecutor::Create(1, "test");
  std::atomic<bool> ran{false};
  TimerId id = pool->ScheduleAfter(absl::Seconds(30), [&] { ran = true; });
  EXPECT_TRUE(pool->CancelTimer(id));
  EXPECT_FALSE(pool->CancelTimer(id));
  absl::Notification fired;
  pool->ScheduleAfter(absl::Milliseconds(1), [&] { fired.Notify(); });
  fired.WaitForNotification();
  EXPECT_FALSE(ran.load());
}

TEST(ThreadPoolExecutorTest, DestructionRunsQueuedTasks) {
  std::atomic<int> ran{0};
  {
    auto pool = ThreadPoolExecutor::Create(1, "test");
    for (int i = 0; i < 100; ++i) pool->Schedule([&] { ran.fetch_add(1); });
  }
  EXPECT_EQ(ran.load(), 100);
}

TEST(ManualExecutorTest, AdvanceTimeFiresDueTimersOnly) {
  testing::ManualExecutor ex;
  std::vector<int> fired;
  ex.ScheduleAfter(absl::Seconds(1), [&] { fired.push_back(1); });
  ex.ScheduleAfter(absl::Seconds(3), [&] { fired.push_back(3); });
  ex.AdvanceTime(absl::Seconds(2));
  EXPECT_EQ(fired, (std::vector<int>{1}));
  ex.AdvanceTime(absl::Seconds(1));
  EXPECT_EQ(fired, (std::vector<int>{1, 3}));
}

}  // namespace
}  // namespace fanout
