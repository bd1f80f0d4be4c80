// Router end to end: real gRPC generic calls to in-process fake backends on
// 127.0.0.1 ports, with the branch timings of the fan-out patterns (300 ms
// and 250 ms; 500/200/800 ms; a failing branch). Connections are
// warmed up first, and the assertions are about order and what the fake
// backends counted (who answered, who saw a cancellation), or compare one
// measured time with another; the only wall-clock bounds are lower bounds
// (a call cannot return before the branch it waits for).
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

using ::fanout::testing::BranchOf;
using ::fanout::testing::CarriedRouteResponse;
using ::fanout::testing::FakeBackend;
using ::fanout::testing::FakeBackendCounters;
using ::fanout::testing::FakeBackendOptions;
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
    delays_.push_back(delay);
    fail_probs_.push_back(fail_prob);
    return *backends_.back();
  }

  // Connects to every backend with one quick ALL_SETTLED call (no delays,
  // no failures), so that no measured call pays for a cold connection.
  // Returns each backend's counters afterwards, to subtract.
  std::vector<FakeBackendCounters> WarmUp() {
    for (auto& backend : backends_) {
      backend->SetDelay(absl::ZeroDuration());
      backend->SetFailProb(0);
    }
    RouteRequest request;
    request.set_policy(fanout::v1::ALL_SETTLED);
    Outcome warm = RouteAndWait(request);
    EXPECT_OK(warm.result);
    std::vector<FakeBackendCounters> counters;
    for (size_t i = 0; i < backends_.size(); ++i) {
      EXPECT_TRUE(backends_[i]->WaitFor(
          [](const FakeBackendCounters& c) { return c.ok == 1 && c.in_flight == 0; }));
      backends_[i]->SetDelay(delays_[i]);
      backends_[i]->SetFailProb(fail_probs_[i]);
      counters.push_back(backends_[i]->counters());
    }
    return counters;
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

  // A losing branch is cancelled at the backend, or (on a loaded machine)
  // cancelled before its call reached the backend at all.
  static bool CancelledOrNeverCalled(const FakeBackend& backend,
                                     const FakeBackendCounters& before) {
    return backend.WaitFor(
        [&](const FakeBackendCounters& c) { return c.cancelled >= 1 || c.calls == before.calls; });
  }

  std::unique_ptr<ThreadPoolExecutor> executor_;
  std::unique_ptr<ThreadPoolExecutor> backend_executor_;
  std::vector<std::unique_ptr<FakeBackend>> backends_;
  std::vector<absl::Duration> delays_;
  std::vector<double> fail_probs_;
  std::unique_ptr<Router> router_;
};

// Sum of the branch latencies the router measured: what the call would
// take if the branches ran one after another.
absl::Duration SumOfBranches(const RouteResponse& response) {
  absl::Duration sum;
  for (const Branch& branch : response.branches()) sum += absl::Microseconds(branch.latency_us());
  return sum;
}

TEST_F(RouterGrpcTest, AllTakesSlowestBranchNotSum) {
  AddBackend("block", absl::Milliseconds(300));
  AddBackend("file", absl::Milliseconds(250));
  Build(Policy::kAll);
  WarmUp();
  Outcome two = RouteAndWait(RouteRequest());
  ASSERT_OK(two.result);
  EXPECT_EQ(BranchOf(*two.result, "block").payload(), "block");
  EXPECT_EQ(BranchOf(*two.result, "file").payload(), "file");
  EXPECT_GE(two.elapsed, absl::Milliseconds(300));
  const absl::Duration block = absl::Microseconds(BranchOf(*two.result, "block").latency_us());
  const absl::Duration file = absl::Microseconds(BranchOf(*two.result, "file").latency_us());
  EXPECT_GE(block, absl::Milliseconds(300));
  EXPECT_GE(file, absl::Milliseconds(250));
  // One after the other, the call would take both branches' time.
  const absl::Duration call = absl::Microseconds(two.result->latency_us());
  EXPECT_GE(call, block);
  EXPECT_LT(call, block + file);
}

TEST_F(RouterGrpcTest, AllOfThreeReturnsNearSlowestWellBelowSum) {
  AddBackend("cache-1", absl::Milliseconds(500));
  AddBackend("cache-2", absl::Milliseconds(200));
  AddBackend("database", absl::Milliseconds(800));
  Build(Policy::kAll);
  WarmUp();
  Outcome all = RouteAndWait(RouteRequest());
  ASSERT_OK(all.result);
  for (const Branch& branch : all.result->branches()) {
    EXPECT_EQ(branch.outcome(), fanout::v1::OK) << branch.backend();
  }
  EXPECT_GE(all.elapsed, absl::Milliseconds(800));
  const absl::Duration call = absl::Microseconds(all.result->latency_us());
  EXPECT_GE(call, absl::Microseconds(BranchOf(*all.result, "database").latency_us()));
  EXPECT_LT(call, SumOfBranches(*all.result));  // the sum is 1500 ms and more
}

TEST_F(RouterGrpcTest, FirstSuccessReturnsFastestAndBackendsSeeLosersCancelled) {
  FakeBackend& cache1 = AddBackend("cache-1", absl::Milliseconds(500));
  FakeBackend& cache2 = AddBackend("cache-2", absl::Milliseconds(200));
  FakeBackend& database = AddBackend("database", absl::Milliseconds(800));
  Build(Policy::kFirstSuccess);
  const std::vector<FakeBackendCounters> before = WarmUp();
  Outcome first = RouteAndWait(RouteRequest());
  ASSERT_OK(first.result);
  EXPECT_EQ(first.result->backend(), "cache-2");
  EXPECT_EQ(first.result->payload(), "cache-2");
  EXPECT_GE(first.elapsed, absl::Milliseconds(200));
  EXPECT_EQ(BranchOf(*first.result, "cache-1").outcome(), fanout::v1::CANCELLED);
  EXPECT_EQ(BranchOf(*first.result, "database").outcome(), fanout::v1::CANCELLED);
  EXPECT_TRUE(CancelledOrNeverCalled(cache1, before[0]));
  EXPECT_TRUE(CancelledOrNeverCalled(database, before[2]));
  // The slower two never answered: the call was over before 500 ms.
  EXPECT_EQ(cache2.counters().ok - before[1].ok, 1);
  EXPECT_EQ(cache1.counters().ok - before[0].ok, 0);
  EXPECT_EQ(database.counters().ok - before[2].ok, 0);
}

TEST_F(RouterGrpcTest, AllFailsFastWhenBranchFailsFastWhileSiblingIsSlow) {
  FakeBackend& block = AddBackend("block", absl::Seconds(3));
  AddBackend("file", absl::ZeroDuration(), /*fail_prob=*/1.0);
  Build(Policy::kAll);
  const std::vector<FakeBackendCounters> before = WarmUp();
  Outcome all = RouteAndWait(RouteRequest());
  EXPECT_THAT(all.result, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("file")));
  EXPECT_EQ(BranchOf(CarriedRouteResponse(all.result.status()), "block").outcome(),
            fanout::v1::CANCELLED);
  EXPECT_TRUE(CancelledOrNeverCalled(block, before[0]));
  EXPECT_EQ(block.counters().ok - before[0].ok, 0);  // cancelled before its 3 s answer
}

TEST_F(RouterGrpcTest, FallbackAnswersFromNextAfterFastFailure) {
  FakeBackend& primary = AddBackend("primary", absl::ZeroDuration(), /*fail_prob=*/1.0);
  FakeBackend& secondary = AddBackend("secondary", absl::Milliseconds(100));
  Build(Policy::kFallback);
  const std::vector<FakeBackendCounters> before = WarmUp();
  Outcome fallback = RouteAndWait(RouteRequest());
  ASSERT_OK(fallback.result);
  EXPECT_EQ(fallback.result->backend(), "secondary");
  EXPECT_TRUE(fallback.result->fallback_used());
  EXPECT_EQ(BranchOf(*fallback.result, "primary").outcome(), fanout::v1::ERROR);
  EXPECT_EQ(BranchOf(*fallback.result, "primary").code(),
            static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_EQ(primary.counters().failed - before[0].failed, 1);
  EXPECT_EQ(secondary.counters().ok - before[1].ok, 1);
}

TEST_F(RouterGrpcTest, HedgedStartsNextAfterDelayAndCancelsPrimary) {
  FakeBackend& primary = AddBackend("primary", absl::Seconds(3));
  FakeBackend& secondary = AddBackend("secondary", absl::Milliseconds(50));
  Build(Policy::kHedged, absl::Seconds(10), /*hedge_after=*/absl::Milliseconds(100));
  const std::vector<FakeBackendCounters> before = WarmUp();
  Outcome hedged = RouteAndWait(RouteRequest());
  ASSERT_OK(hedged.result);
  EXPECT_EQ(hedged.result->backend(), "secondary");
  EXPECT_GE(hedged.elapsed, absl::Milliseconds(150));
  EXPECT_TRUE(SawCancel(primary));
  EXPECT_EQ(primary.counters().ok - before[0].ok, 0);  // cancelled before its 3 s answer
  EXPECT_EQ(secondary.counters().calls - before[1].calls, 1);
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
  caller.Cancel();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_THAT(outcome.result, StatusIs(absl::StatusCode::kCancelled));
  for (FakeBackend* backend : slow) {
    EXPECT_TRUE(SawCancel(*backend));
    EXPECT_EQ(backend->counters().ok, 0);  // none waited out its 5 s
  }
}

TEST_F(RouterGrpcTest, DeadlineReportsTimeoutAndBackendSeesCancellation) {
  AddBackend("fast", absl::Milliseconds(10));
  FakeBackend& slow = AddBackend("slow", absl::Seconds(5));
  Build(Policy::kAllSettled);
  const std::vector<FakeBackendCounters> before = WarmUp();
  RouteRequest request;
  request.set_timeout_ms(300);
  Outcome settled = RouteAndWait(request);
  ASSERT_OK(settled.result);
  EXPECT_EQ(BranchOf(*settled.result, "fast").outcome(), fanout::v1::OK);
  EXPECT_EQ(BranchOf(*settled.result, "slow").outcome(), fanout::v1::TIMEOUT);
  EXPECT_GE(settled.elapsed, absl::Milliseconds(300));
  EXPECT_TRUE(SawCancel(slow));
  EXPECT_EQ(slow.counters().ok - before[1].ok, 0);  // cut off, not waited for
}

TEST_F(RouterGrpcTest, TinyCallerTimeoutsDoNotEjectHealthyBackends) {
  FakeBackend& a = AddBackend("a", absl::Milliseconds(200));
  FakeBackend& b = AddBackend("b", absl::Milliseconds(200));
  Build(Policy::kFirstSuccess);
  WarmUp();
  RouteRequest hurried;
  hurried.set_timeout_ms(5);
  for (int i = 0; i < 8; ++i) {
    EXPECT_THAT(RouteAndWait(hurried).result, StatusIs(absl::StatusCode::kDeadlineExceeded));
  }
  absl::StatusOr<RouteReport> report = router_->Report("r");
  ASSERT_OK(report);
  for (const BackendReport& backend : report->backends) {
    EXPECT_FALSE(backend.stats.ejected) << backend.name;
    EXPECT_EQ(backend.stats.failures, 0) << backend.name;
  }
  a.SetDelay(absl::ZeroDuration());
  b.SetDelay(absl::ZeroDuration());
  Outcome patient = RouteAndWait(RouteRequest());
  ASSERT_OK(patient.result);
  for (const Branch& branch : patient.result->branches()) {
    // A branch may be SKIPPED only because the other answered first.
    EXPECT_THAT(branch.error(), ::testing::Not(HasSubstr("ejected"))) << branch.backend();
  }
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
  request.set_cost(1);
  ASSERT_OK(RouteAndWait(request).result);  // warms the connection
  request.set_cost(300);                    // 300 ms at 1 ms per unit
  Outcome heavy = RouteAndWait(request);
  ASSERT_OK(heavy.result);
  EXPECT_GE(heavy.elapsed, absl::Milliseconds(300));
  request.set_cost(1);
  Outcome light = RouteAndWait(request);
  ASSERT_OK(light.result);
  EXPECT_LT(light.elapsed, heavy.elapsed);
}

TEST_F(RouterGrpcTest, BackendRestartedOnTheSameAddressIsUsedAgainWithinSeconds) {
  FakeBackend& first = AddBackend("b", absl::ZeroDuration());
  Build(Policy::kFirstSuccess);
  WarmUp();
  const std::string address = first.address();
  backends_.clear();  // stops it: the channel loses its connection
  RouteRequest request;
  EXPECT_FALSE(RouteAndWait(request).result.ok());
  FakeBackendOptions options;
  options.name = "b";
  options.listen = address;
  absl::StatusOr<std::unique_ptr<FakeBackend>> again =
      FakeBackend::Start(options, backend_executor_.get());
  ASSERT_OK(again);
  // gRPC's default backoff would keep the channel away for up to two minutes;
  // ours retries within about a second. Bounded generously for a loaded machine.
  const absl::Time give_up = absl::Now() + absl::Seconds(15);
  absl::StatusOr<RouteResponse> result = absl::UnknownError("not tried");
  while (absl::Now() < give_up) {
    result = RouteAndWait(request).result;
    if (result.ok()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_OK(result);
  EXPECT_EQ(result->backend(), "b");
}

}  // namespace
}  // namespace fanout::router
