#include "common/blocking_pool.h"

#include <atomic>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace fanout {
namespace {

using ::fanout::testing::StatusIs;

// Occupies every thread of `pool` until `release` is notified; returns once
// they all run.
void BlockAllThreads(ThreadBlockingPool& pool, absl::Notification& release) {
  absl::BlockingCounter started(pool.thread_count());
  for (int i = 0; i < pool.thread_count(); ++i) {
    ASSERT_OK(pool.TrySchedule([&] {
      started.DecrementCount();
      release.WaitForNotification();
    }));
  }
  started.Wait();
}

TEST(ThreadBlockingPoolTest, TryScheduleRunsEveryTask) {
  auto pool = ThreadBlockingPool::Create({.threads = 2, .max_queued = 1000, .name = "test"});
  constexpr int kTasks = 500;
  std::atomic<int> ran{0};
  absl::BlockingCounter done(kTasks);
  for (int i = 0; i < kTasks; ++i) {
    ASSERT_OK(pool->TrySchedule([&] {
      ran.fetch_add(1);
      done.DecrementCount();
    }));
  }
  done.Wait();
  EXPECT_EQ(ran.load(), kTasks);
}

TEST(ThreadBlockingPoolTest, TryScheduleRefusesPastTheQueueBound) {
  auto pool = ThreadBlockingPool::Create({.threads = 1, .max_queued = 2, .name = "test"});
  absl::Notification release;
  BlockAllThreads(*pool, release);
  std::atomic<int> ran{0};
  ASSERT_OK(pool->TrySchedule([&] { ran.fetch_add(1); }));
  ASSERT_OK(pool->TrySchedule([&] { ran.fetch_add(1); }));
  EXPECT_EQ(pool->queued(), 2);
  EXPECT_EQ(pool->running(), 1);
  EXPECT_THAT(pool->TrySchedule([&] { ran.fetch_add(100); }),
              StatusIs(absl::StatusCode::kResourceExhausted, ::testing::HasSubstr("test")));
  release.Notify();
  pool.reset();  // runs what is queued
  EXPECT_EQ(ran.load(), 2);
}

TEST(ThreadBlockingPoolTest, CancelWithdrawsAQueuedTaskAndFreesItsSlot) {
  auto pool = ThreadBlockingPool::Create({.threads = 1, .max_queued = 1, .name = "test"});
  absl::Notification release;
  BlockAllThreads(*pool, release);
  std::atomic<int> ran{0};
  absl::StatusOr<BlockingJobId> queued = pool->TrySchedule([&] { ran.fetch_add(100); });
  ASSERT_OK(queued);
  EXPECT_TRUE(pool->Cancel(*queued));
  EXPECT_FALSE(pool->Cancel(*queued));
  EXPECT_EQ(pool->queued(), 0);
  ASSERT_OK(pool->TrySchedule([&] { ran.fetch_add(1); }));  // the slot is free again
  release.Notify();
  pool.reset();
  EXPECT_EQ(ran.load(), 1);
}

TEST(ThreadBlockingPoolTest, CancelOfARunningTaskReturnsFalse) {
  auto pool = ThreadBlockingPool::Create({.threads = 1, .max_queued = 1, .name = "test"});
  absl::Notification started, release;
  absl::StatusOr<BlockingJobId> id = pool->TrySchedule([&] {
    started.Notify();
    release.WaitForNotification();
  });
  ASSERT_OK(id);
  started.WaitForNotification();
  EXPECT_FALSE(pool->Cancel(*id));
  release.Notify();
}

TEST(ThreadBlockingPoolTest, DestructionRunsQueuedTasks) {
  std::atomic<int> ran{0};
  {
    auto pool = ThreadBlockingPool::Create({.threads = 1, .max_queued = 100, .name = "test"});
    for (int i = 0; i < 50; ++i) ASSERT_OK(pool->TrySchedule([&] { ran.fetch_add(1); }));
  }
  EXPECT_EQ(ran.load(), 50);
}

TEST(ThreadBlockingPoolTest, CreateKeepsAtLeastOneThreadAndOneSlot) {
  auto pool = ThreadBlockingPool::Create({.threads = 0, .max_queued = 0, .name = "test"});
  EXPECT_EQ(pool->thread_count(), 1);
  EXPECT_EQ(pool->max_queued(), 1);
  absl::Notification ran;
  ASSERT_OK(pool->TrySchedule([&] { ran.Notify(); }));
  ran.WaitForNotification();
}

}  // namespace
}  // namespace fanout
