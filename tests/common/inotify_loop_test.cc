#include "common/inotify_loop.h"

#include <sys/inotify.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace fanout {
namespace {

using ::fanout::testing::TempDir;
using ::fanout::testing::WriteFile;

constexpr absl::Duration kPatience = absl::Seconds(20);

// What the loop called, as "event" / "burst" / "woken", in order.
class Calls {
 public:
  void Add(std::string call) {
    absl::MutexLock l(&mu_);
    calls_.push_back(std::move(call));
  }
  // Waits until `call` was made `n` times (bounded).
  bool WaitFor(const std::string& call, int n = 1) {
    absl::MutexLock l(&mu_);
    auto enough = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return CountLocked(call) >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kPatience);
  }
  int Count(const std::string& call) {
    absl::MutexLock l(&mu_);
    return CountLocked(call);
  }

 private:
  int CountLocked(const std::string& call) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    int n = 0;
    for (const std::string& c : calls_) n += c == call;
    return n;
  }
  absl::Mutex mu_;
  std::vector<std::string> calls_ ABSL_GUARDED_BY(mu_);
};

class InotifyLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<InotifyLoop>> loop = InotifyLoop::Create("a test directory");
    ASSERT_OK(loop);
    loop_ = *std::move(loop);
    ASSERT_GE(::inotify_add_watch(loop_->fd(), dir_.path().c_str(), IN_CLOSE_WRITE), 0);
  }

  // Starts the loop; events count when `relevant`; on_burst returns
  // `again` after its first call.
  void Start(bool relevant, absl::Duration again = absl::InfiniteDuration()) {
    loop_->Start({.debounce = absl::Milliseconds(300), .max_delay = absl::Seconds(30)},
                 {.on_event =
                      [this, relevant](const struct inotify_event&) {
                        calls_.Add("event");
                        return relevant;
                      },
                  .on_burst =
                      [this, again](bool woken) {
                        calls_.Add(woken ? "woken" : "burst");
                        const bool first = calls_.Count("burst") + calls_.Count("woken") == 1;
                        return first && again != absl::InfiniteDuration() ? absl::Now() + again
                                                                          : absl::InfiniteFuture();
                      }});
  }

  TempDir dir_{"fanout_inotify_loop"};
  Calls calls_;
  std::unique_ptr<InotifyLoop> loop_;
};

TEST_F(InotifyLoopTest, ABurstOfRelevantEventsEndsInOneCall) {
  Start(/*relevant=*/true);
  for (int i = 0; i < 5; ++i) WriteFile(dir_.path() / absl::StrCat("f", i), "x");
  ASSERT_TRUE(calls_.WaitFor("event", 5));
  ASSERT_TRUE(calls_.WaitFor("burst"));
  // Everything the burst held is behind the call: a wake is the next one.
  loop_->Wake();
  ASSERT_TRUE(calls_.WaitFor("woken"));
  EXPECT_EQ(calls_.Count("burst"), 1);
}

TEST_F(InotifyLoopTest, EventsThatDoNotCountCallNothing) {
  Start(/*relevant=*/false);
  WriteFile(dir_.path() / "f", "x");
  ASSERT_TRUE(calls_.WaitFor("event"));
  loop_->Wake();
  ASSERT_TRUE(calls_.WaitFor("woken"));
  EXPECT_EQ(calls_.Count("burst"), 0);
}

TEST_F(InotifyLoopTest, TheTimeOnBurstReturnsCallsItAgainWithoutEvents) {
  Start(/*relevant=*/true, /*again=*/absl::Milliseconds(10));
  loop_->Wake();
  ASSERT_TRUE(calls_.WaitFor("woken"));
  ASSERT_TRUE(calls_.WaitFor("burst"));
  EXPECT_EQ(calls_.Count("event"), 0);
}

TEST_F(InotifyLoopTest, DestructionDuringABurstReturnsAndCallsNothingAfter) {
  Start(/*relevant=*/true);
  WriteFile(dir_.path() / "f", "x");
  ASSERT_TRUE(calls_.WaitFor("event"));
  loop_.reset();
  const int bursts = calls_.Count("burst");
  WriteFile(dir_.path() / "g", "x");
  EXPECT_EQ(calls_.Count("burst"), bursts);
}

}  // namespace
}  // namespace fanout
