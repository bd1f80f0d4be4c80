// Router end to end: real gRPC generic calls to in-process fake backends on
// 127.0.0.1 ports, with the branch timings of the fan-out patterns (300 ms
// and a fast branch; 500/200/800 ms; a failing branch). Bounds are generous
// on purpose: they separate "slowest" from "sum" and "fastest" from "next",
// with hundreds of milliseconds to spare on a loaded machine.
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/router.h"
#include "tests/testing/fake_backend.h"
#include "tests/testing/route_responses.h"
#include "tests/testing/status_matchers.h"

namespace fanout::router {
namespace {

using ::fanout::testing::FakeBackend;
using ::fanout::testing::FakeBackendCounters;
using ::fanout::testing::FakeBackendOptions;
using ::fanout::testing::BranchOf;
using ::fanout::testing::CarriedRouteResponse;
using ::fanout::testing::StatusIs;
using ::fanout::v1::Branch;
using ::fanout::v1::RouteRequest;
using ::fanout::v1::RouteResponse;
using ::testing::HasSubstr;

struct Outcome {
  absl::StatusOr<RouteResponse> result = absl::UnknownError("not finished");
  absl::Duration elapsed;
};

class RouterGrpcTest : public ::testing::Test {
 protected:
  // Downstream channels die in completion callbacks once a test has dropped
  // its router: gRPC 1.51 aborts then (see HoldGrpcCallbackQueue).
  static void SetUpTestSuite() { testing::HoldGrpcCallbackQueue(); }
  void SetUp() override {
    executor_ = ThreadPoolExecutor::Create(2, "router-test");
    backend_executor_ = ThreadPoolExecutor::Create(2, "fake-backends");
  }
  void TearDown() override {
    router_.reset();
    backends_.clear();
    backend_executor_.reset();
    executor_.reset();
  }

  // Starts a fake backend named `name` answering after `delay`.
  FakeBackend& AddBackend(const std::string& name, absl::Duration delay, double fail_prob = 0) {
    FakeBackendOptions options;
    options.name = name;
    options.delay = delay;
    options.fail_prob = fail_prob;
    absl::StatusOr<std::unique_ptr<FakeBackend>> backend =
        FakeBackend::Start(options, backend_executor_.get());
    EXPECT_OK(backend);
    backends_.push_back(*std::move(backend));
    return *backends_.back();
  }

  void Build(Policy policy, absl::Duration timeout = absl::Seconds(10),
             absl::Duration hedge_after = absl::ZeroDuration()) {
    RouteConfig route;
    route.name = "r";
    route.policy = policy;
    route.method = "/fake.Backend/Call";
    route.timeout = timeout;
    route.hedge_after = hedge_after;
    for (const auto& backend : backends_)
      route.backends.push_back({backend->address(), backend->name()});
    absl::StatusOr<std::unique_ptr<Router>> router = Router::Create({route}, executor_.get());
    ASSERT_OK(router);
    router_ = *std::move(router);
  }

  Outcome RouteAndWait(RouteRequest request, CancellationToken token = {}) {
    request.set_route("r");
    Outcome outcome;
    absl::Notification done;
    const absl::Time start = absl::Now();
    router_->Route(request, std::move(token), absl::InfiniteFuture(),
                   [&](absl::StatusOr<RouteResponse> result) {
                     outcome.elapsed = absl::Now() - start;
                     outcome.result = std::move(result);
                     done.Notify();
                   });
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
    return outcome;
  }

  static bool SawCancel(const FakeBackend& backend) {
    return backend.WaitFor([](const FakeBackendCounters& c) { return c.cancelled >= 1; });
  }

  std::unique_ptr<ThreadPoolExecutor> executor_;
  std::unique_ptr<ThreadPoolExecutor> backend_executor_;
  std::vector<std::unique_ptr<FakeBackend>> backends_;
  std::unique_ptr<Router> router_;
};

TEST_F(RouterGrpcTest, AllTakesSlowestBranchNotSum) {
  AddBackend("block", absl::Milliseconds(300));
  AddBackend("file", absl::ZeroDuration());
  Build(Policy::kAll);
  Outcome two = RouteAndWait(RouteRequest());
  ASSERT_OK(two.result);
  EXPECT_EQ(BranchOf(*two.result, "block").payload(), "block");
  EXPECT_EQ(BranchOf(*two.result, "file").payload(), "file");
  EXPECT_GE(two.elapsed, absl::Milliseconds(300));
  EXPECT_LT(two.elapsed, absl::Milliseconds(600));  // the sum would be 300 + the fast one
}

TEST_F(RouterGrpcTest, AllOfThreeReturnsNearSlowestWellBelowSum) {
  AddBackend("cache-1", absl::Milliseconds(500));
  AddBackend("cache-2", absl::Milliseconds(200));
  AddBackend("database", absl::Milliseconds(800));
  Build(Policy::kAll);
  Outcome all = RouteAndWait(RouteRequest());
  ASSERT_OK(all.result);
  for (const Branch& branch : all.result->branches()) {
    EXPECT_EQ(branch.outcome(), fanout::v1::OK) << branch.backend();
  }
  EXPECT_GE(all.elapsed, absl::Milliseconds(800));
  EXPECT_LT(all.elapsed, absl::Milliseconds(1300));  // the sum is 1500
}

TEST_F(RouterGrpcTest, FirstSuccessReturnsFastestAndBackendsSeeLosersCancelled) {
  FakeBackend& cache1 = AddBackend("cache-1", absl::Milliseconds(500));
  FakeBackend& cache2 = AddBackend("cache-2", absl::Milliseconds(200));
  FakeBackend& database = AddBackend("database", absl::Milliseconds(800));
  Build(Policy::kFirstSuccess);
  Outcome first = RouteAndWait(RouteRequest());
  ASSERT_OK(first.result);
  EXPECT_EQ(first.result->backend(), "cache-2");
  EXPECT_EQ(first.result->payload(), "cache-2");
  EXPECT_GE(first.elapsed, absl::Milliseconds(200));
  EXPECT_LT(first.elapsed, absl::Milliseconds(450));  // before the 500 ms branch
  EXPECT_EQ(BranchOf(*first.result, "cache-1").outcome(), fanout::v1::CANCELLED);
  EXPECT_EQ(BranchOf(*first.result, "database").outcome(), fanout::v1::CANCELLED);
  EXPECT_TRUE(SawCancel(cache1));
  EXPECT_TRUE(SawCancel(database));
  EXPECT_EQ(cache2.counters().ok, 1);
  EXPECT_EQ(cache1.counters().ok + database.counters().ok, 0);
}

TEST_F(RouterGrpcTest, AllFailsFastWhenBranchFailsFastWhileSiblingIsSlow) {
  FakeBackend& block = AddBackend("block", absl::Seconds(3));
  AddBackend("file", absl::ZeroDuration(), /*fail_prob=*/1.0);
  Build(Policy::kAll);
  Outcome all = RouteAndWait(RouteRequest());
  EXPECT_THAT(all.result, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("file")));
  EXPECT_LT(all.elapsed, absl::Seconds(1));
  EXPECT_EQ(BranchOf(CarriedRouteResponse(all.result.status()), "block").outcome(), fanout::v1::CANCELLED);
  EXPECT_TRUE(SawCancel(block));
}

TEST_F(RouterGrpcTest, FallbackAnswersFromNextAfterFastFailure) {
  AddBackend("primary", absl::ZeroDuration(), /*fail_prob=*/1.0);
  FakeBackend& secondary = AddBackend("secondary", absl::Milliseconds(100));
  Build(Policy::kFallback);
  Outcome fallback = RouteAndWait(RouteRequest());
  ASSERT_OK(fallback.result);
  EXPECT_EQ(fallback.result->backend(), "secondary");
  EXPECT_TRUE(fallback.result->fallback_used());
  EXPECT_EQ(BranchOf(*fallback.result, "primary").outcome(), fanout::v1::ERROR);
  EXPECT_EQ(BranchOf(*fallback.result, "primary").code(),
            static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_LT(fallback.elapsed, absl::Seconds(1));
  EXPECT_EQ(secondary.counters().ok, 1);
}

TEST_F(RouterGrpcTest, HedgedStartsNextAfterDelayAndCancelsPrimary) {
  FakeBackend& primary = AddBackend("primary", absl::Seconds(3));
  FakeBackend& secondary = AddBackend("secondary", absl::Milliseconds(50));
  Build(Policy::kHedged, absl::Seconds(10), /*hedge_after=*/absl::Milliseconds(100));
  Outcome hedged = RouteAndWait(RouteRequest());
  ASSERT_OK(hedged.result);
  EXPECT_EQ(hedged.result->backend(), "secondary");
  EXPECT_GE(hedged.elapsed, absl::Milliseconds(150));
  EXPECT_LT(hedged.elapsed, absl::Seconds(1));
  EXPECT_TRUE(SawCancel(primary));
  EXPECT_EQ(secondary.counters().calls, 1);
}

TEST_F(RouterGrpcTest, CallerCancellationReachesEveryBackend) {
  std::vector<FakeBackend*> slow;
  for (const char* name : {"a", "b", "c"}) slow.push_back(&AddBackend(name, absl::Seconds(5)));
  Build(Policy::kAllSettled);
  CancellationSource caller;
  Outcome outcome;
  absl::Notification done;
  RouteRequest request;
  request.set_route("r");
  router_->Route(request, caller.token(), absl::InfiniteFuture(),
                 [&](absl::StatusOr<RouteResponse> result) {
                   outcome.result = std::move(result);
                   done.Notify();
                 });
  for (FakeBackend* backend : slow) {
    ASSERT_TRUE(backend->WaitFor([](const FakeBackendCounters& c) { return c.in_flight == 1; }));
  }
  const absl::Time cancelled_at = absl::Now();
  caller.Cancel();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_LT(absl::Now() - cancelled_at, absl::Seconds(2));
  EXPECT_THAT(outcome.result, StatusIs(absl::StatusCode::kCancelled));
  for (FakeBackend* backend : slow) EXPECT_TRUE(SawCancel(*backend));
}

TEST_F(RouterGrpcTest, DeadlineReportsTimeoutAndBackendSeesCancellation) {
  AddBackend("fast", absl::Milliseconds(10));
  FakeBackend& slow = AddBackend("slow", absl::Seconds(5));
  Build(Policy::kAllSettled);
  RouteRequest request;
  request.set_timeout_ms(300);
  Outcome settled = RouteAndWait(request);
  ASSERT_OK(settled.result);
  EXPECT_EQ(BranchOf(*settled.result, "fast").outcome(), fanout::v1::OK);
  EXPECT_EQ(BranchOf(*settled.result, "slow").outcome(), fanout::v1::TIMEOUT);
  EXPECT_GE(settled.elapsed, absl::Milliseconds(300));
  EXPECT_LT(settled.elapsed, absl::Seconds(2));
  EXPECT_TRUE(SawCancel(slow));
}

TEST_F(RouterGrpcTest, FakeBackendStatsMethodReportsCounters) {
  FakeBackend& backend = AddBackend("a", absl::ZeroDuration());
  Build(Policy::kAll);
  ASSERT_OK(RouteAndWait(RouteRequest()).result);
  absl::StatusOr<std::shared_ptr<Downstream>> downstream = NewGrpcDownstream(backend.address());
  ASSERT_OK(downstream);
  absl::Notification done;
  absl::StatusOr<std::string> stats;
  (*downstream)
      ->Call({testing::kFakeBackendStatsMethod, nullptr, 0, absl::Now() + absl::Seconds(10), {}},
             [&](absl::StatusOr<std::string> result) {
               stats = std::move(result);
               done.Notify();
             });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_OK(stats);
  EXPECT_THAT(*stats, HasSubstr("calls=1 ok=1"));
}

TEST_F(RouterGrpcTest, CostReachesBackendAsMetadata) {
  FakeBackendOptions options;
  options.name = "gpu";
  options.delay_per_cost = absl::Milliseconds(1);
  absl::StatusOr<std::unique_ptr<FakeBackend>> gpu =
      FakeBackend::Start(options, backend_executor_.get());
  ASSERT_OK(gpu);
  backends_.push_back(*std::move(gpu));
  Build(Policy::kLeastLoaded);
  RouteRequest request;
  request.set_cost(300);  // 300 ms at 1 ms per unit
  Outcome heavy = RouteAndWait(request);
  ASSERT_OK(heavy.result);
  EXPECT_GE(heavy.elapsed, absl::Milliseconds(300));
  request.set_cost(1);
  Outcome light = RouteAndWait(request);
  ASSERT_OK(light.result);
  EXPECT_LT(light.elapsed, absl::Milliseconds(250));
}

}  // namespace
}  // namespace fanout::router
