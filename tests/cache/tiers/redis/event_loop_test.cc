#include "cache/tiers/redis/event_loop.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace fanout::cache {
namespace {

std::unique_ptr<EventLoop> StartLoop() {
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Start("test-loop");
  EXPECT_TRUE(loop.ok()) << loop.status();
  return loop.ok() ? *std::move(loop) : nullptr;
}

// Runs `fn` on the loop thread and waits for it.
template <typename F>
void OnLoop(EventLoop& loop, F fn) {
  absl::Notification done;
  loop.Post([&] {
    fn();
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

TEST(EventLoopTest, PostRunsTasksOnTheLoopThreadInOrder) {
  auto loop = StartLoop();
  absl::Mutex mu;
  std::vector<int> order;
  std::atomic<bool> on_loop{true};
  absl::Notification done;
  for (int i = 0; i < 100; ++i) {
    loop->Post([&, i] {
      if (!loop->InLoopThread()) on_loop = false;
      absl::MutexLock l(&mu);
      order.push_back(i);
      if (i == 99) done.Notify();
    });
  }
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(on_loop);
  EXPECT_FALSE(loop->InLoopThread());
  absl::MutexLock l(&mu);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
}

TEST(EventLoopTest, TimersFireInDueOrderAndCancelledOnesNever) {
  auto loop = StartLoop();
  absl::Mutex mu;
  std::vector<int> fired;
  absl::Notification last;
  OnLoop(*loop, [&] {
    loop->AddTimer(absl::Milliseconds(30), [&] {
      absl::MutexLock l(&mu);
      fired.push_back(3);
      last.Notify();
    });
    loop->AddTimer(absl::Milliseconds(10), [&] {
      absl::MutexLock l(&mu);
      fired.push_back(1);
    });
    const EventLoop::TimerId cancelled = loop->AddTimer(absl::Milliseconds(20), [&] {
      absl::MutexLock l(&mu);
      fired.push_back(2);
    });
    loop->CancelTimer(cancelled);
    loop->CancelTimer(EventLoop::kNoTimer);
  });
  ASSERT_TRUE(last.WaitForNotificationWithTimeout(absl::Seconds(10)));
  absl::MutexLock l(&mu);
  EXPECT_EQ(fired, (std::vector<int>{1, 3}));
}

TEST(EventLoopTest, TimerNeverFiresEarly) {
  auto loop = StartLoop();
  absl::Notification done;
  absl::Duration waited;
  OnLoop(*loop, [&] {
    const absl::Duration start = EventLoop::MonotonicNow();
    loop->AddTimer(absl::Milliseconds(15), [&, start] {
      waited = EventLoop::MonotonicNow() - start;
      done.Notify();
    });
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_GE(waited, absl::Milliseconds(15));
}

TEST(EventLoopTest, WatchReportsReadinessOnlyWhenAsked) {
  auto loop = StartLoop();
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::atomic<int> reads{0};
  absl::Notification readable;
  EventLoop::WatchId id = 0;
  OnLoop(*loop, [&] {
    id = loop->WatchFd(fds[0], [&](uint32_t events) {
      if (events & EPOLLIN) {
        char c;
        (void)!::read(fds[0], &c, 1);
        if (reads.fetch_add(1) == 0) readable.Notify();
      }
    });
  });
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  // No interest yet: nothing is reported.
  OnLoop(*loop, [] {});
  OnLoop(*loop, [] {});
  EXPECT_EQ(reads.load(), 0);
  OnLoop(*loop, [&] { loop->SetInterest(id, /*read=*/true, /*write=*/false); });
  ASSERT_TRUE(readable.WaitForNotificationWithTimeout(absl::Seconds(10)));
  OnLoop(*loop, [&] { loop->Unwatch(id); });
  ASSERT_EQ(::write(fds[1], "y", 1), 1);
  OnLoop(*loop, [] {});
  OnLoop(*loop, [] {});
  EXPECT_EQ(reads.load(), 1);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(EventLoopTest, DestructionRunsPendingTimersAndPostedTasks) {
  auto loop = StartLoop();
  EventLoop* l = loop.get();
  std::atomic<int> ran{0};
  OnLoop(*loop, [&] {
    l->AddTimer(absl::Hours(1), [&] {
      ran.fetch_add(1);
      l->Post([&] { ran.fetch_add(10); });  // posted while stopping: runs too
    });
  });
  loop.reset();
  EXPECT_EQ(ran.load(), 11);
}

}  // namespace
}  // namespace fanout::cache
