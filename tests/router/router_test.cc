// Router over scripted Downstreams on a ManualExecutor: policies, selection
// and learning, deterministic in time.
#include "router/router.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/router/fake_downstream.h"
#include "tests/testing/manual_executor.h"
#include "tests/testing/route_responses.h"
#include "tests/testing/status_matchers.h"

namespace fanout::router {
namespace {

using ::fanout::testing::ManualExecutor;
using ::fanout::testing::BranchOf;
using ::fanout::testing::CarriedRouteResponse;
using ::fanout::testing::StatusIs;
using ::fanout::v1::Branch;
using ::fanout::v1::RouteRequest;
using ::fanout::v1::RouteResponse;
using ::testing::HasSubstr;

RouteConfig MakeRoute(std::string name, Policy policy, std::vector<std::string> backends) {
  RouteConfig route;
  route.name = std::move(name);
  route.policy = policy;
  route.method = "/test.Backend/Call";
  route.timeout = absl::Seconds(5);
  for (std::string& backend : backends) route.backends.push_back({backend, backend});
  return route;
}

RouteRequest Request(std::string route,
                     fanout::v1::Policy policy = fanout::v1::POLICY_UNSPECIFIED) {
  RouteRequest request;
  request.set_route(std::move(route));
  request.set_policy(policy);
  return request;
}

class RouterTest : public ::testing::Test {
 protected:
  struct Pending {
    std::optional<absl::StatusOr<RouteResponse>> result;
    int done_calls = 0;
  };

  void Build(std::vector<RouteConfig> routes) {
    absl::StatusOr<std::unique_ptr<Router>> router =
        Router::Create(std::move(routes), &executor_, {fakes_.Factory(), /*seed=*/42});
    ASSERT_OK(router);
    router_ = *std::move(router);
  }

  std::shared_ptr<Pending> Start(const RouteRequest& request, CancellationToken token = {},
                                 absl::Time deadline = absl::InfiniteFuture()) {
    auto pending = std::make_shared<Pending>();
    router_->Route(request, std::move(token), deadline,
                   [pending](absl::StatusOr<RouteResponse> result) {
                     ++pending->done_calls;
                     pending->result = std::move(result);
                   });
    return pending;
  }

  // Advances fake time 1 ms at a time until the call is done (at most `limit`).
  absl::StatusOr<RouteResponse> Finish(const std::shared_ptr<Pending>& pending,
                                       absl::Duration limit = absl::Seconds(30)) {
    for (absl::Duration waited; !pending->result.has_value() && waited < limit;
         waited += absl::Milliseconds(1)) {
      executor_.AdvanceTime(absl::Milliseconds(1));
    }
    EXPECT_TRUE(pending->result.has_value()) << "Route did not finish";
    EXPECT_EQ(pending->done_calls, 1);
    if (!pending->result.has_value()) return absl::InternalError("Route did not finish");
    return *pending->result;
  }

  absl::StatusOr<RouteResponse> Run(const RouteRequest& request) { return Finish(Start(request)); }

  FakeDownstream& Fake(const std::string& address) { return *fakes_.Get(address); }

  ManualExecutor executor_;
  FakeDownstreams fakes_{&executor_};
  std::unique_ptr<Router> router_;
};

TEST_F(RouterTest, CreateRejectsDuplicateRouteNames) {
  EXPECT_THAT(
      Router::Create({MakeRoute("r", Policy::kAll, {"a"}), MakeRoute("r", Policy::kAll, {"b"})},
                     &executor_, {fakes_.Factory(), 1}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate route 'r'")));
}

TEST_F(RouterTest, CreateRejectsInvalidRoute) {
  EXPECT_THAT(
      Router::Create({MakeRoute("empty", Policy::kAll, {})}, &executor_, {fakes_.Factory(), 1}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("route 'empty'")));
}

TEST_F(RouterTest, CreateSharesOneDownstreamPerAddress) {
  int made = 0;
  RouterOptions options;
  options.downstream_factory = [&](const BackendConfig& backend) {
    ++made;
    return fakes_.Factory()(backend);
  };
  ASSERT_OK(Router::Create(
      {MakeRoute("r1", Policy::kAll, {"a", "b"}), MakeRoute("r2", Policy::kAll, {"b", "c"})},
      &executor_, std::move(options)));
  EXPECT_EQ(made, 3);
}

TEST_F(RouterTest, RouteUnknownRouteIsNotFoundNamingIt) {
  Build({MakeRoute("models", Policy::kAll, {"a"})});
  std::shared_ptr<Pending> pending = Start(Request("nope"));
  ASSERT_TRUE(pending->result.has_value());  // inline
  EXPECT_THAT(*pending->result, StatusIs(absl::StatusCode::kNotFound, HasSubstr("'nope'")));
}

TEST_F(RouterTest, RouteBadPolicyValueIsInvalidArgumentNamingPolicy) {
  Build({MakeRoute("models", Policy::kAll, {"a"})});
  RouteRequest request = Request("models");
  request.set_policy(static_cast<fanout::v1::Policy>(42));
  std::shared_ptr<Pending> pending = Start(request);
  ASSERT_TRUE(pending->result.has_value());
  EXPECT_THAT(*pending->result, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("policy")));
  EXPECT_EQ(Fake("a").calls(), 0);
}

TEST_F(RouterTest, AllReportsEveryBranchAfterSlowest) {
  Build({MakeRoute("agg", Policy::kAll, {"block", "file"})});
  Fake("block").SetLatency(absl::Milliseconds(300));
  Fake("file").SetLatency(absl::Milliseconds(8));
  absl::StatusOr<RouteResponse> response = Run(Request("agg"));
  ASSERT_OK(response);
  EXPECT_EQ(response->policy(), fanout::v1::ALL);
  EXPECT_EQ(response->latency_us(), 300'000);
  ASSERT_EQ(response->branches_size(), 2);
  EXPECT_EQ(response->branches(0).backend(), "block");
  EXPECT_EQ(response->branches(0).outcome(), fanout::v1::OK);
  EXPECT_EQ(response->branches(0).payload(), "block");
  EXPECT_EQ(response->branches(0).latency_us(), 300'000);
  EXPECT_EQ(response->branches(1).latency_us(), 8'000);
  EXPECT_EQ(response->backend(), "");
}

TEST_F(RouterTest, AllFailsAtFirstFailureAndCancelsSlowSibling) {
  Build({MakeRoute("agg", Policy::kAll, {"block", "file"})});
  Fake("block").SetLatency(absl::Milliseconds(300));
  Fake("file").SetLatency(absl::Milliseconds(1));
  Fake("file").SetResult(absl::UnavailableError("file service temporarily unavailable"));
  absl::StatusOr<RouteResponse> response = Run(Request("agg"));
  EXPECT_THAT(response, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("file: file service")));
  const RouteResponse carried = CarriedRouteResponse(response.status());
  EXPECT_EQ(carried.latency_us(), 1'000);
  EXPECT_EQ(BranchOf(carried, "block").outcome(), fanout::v1::CANCELLED);
  EXPECT_EQ(BranchOf(carried, "file").outcome(), fanout::v1::ERROR);
  EXPECT_EQ(BranchOf(carried, "file").code(), static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_EQ(Fake("block").cancels(), 1);
}

TEST_F(RouterTest, FirstSuccessAnswersFromFastestAndCancelsLosers) {
  Build({MakeRoute("race", Policy::kFirstSuccess, {"cache-1", "cache-2", "database"})});
  Fake("cache-1").SetLatency(absl::Milliseconds(500));
  Fake("cache-2").SetLatency(absl::Milliseconds(200));
  Fake("database").SetLatency(absl::Milliseconds(800));
  absl::StatusOr<RouteResponse> response = Run(Request("race"));
  ASSERT_OK(response);
  EXPECT_EQ(response->backend(), "cache-2");
  EXPECT_EQ(response->payload(), "cache-2");
  EXPECT_EQ(response->latency_us(), 200'000);
  EXPECT_FALSE(response->fallback_used());
  EXPECT_EQ(BranchOf(*response, "cache-1").outcome(), fanout::v1::CANCELLED);
  EXPECT_EQ(BranchOf(*response, "database").outcome(), fanout::v1::CANCELLED);
  EXPECT_EQ(Fake("cache-1").cancels(), 1);
  EXPECT_EQ(Fake("database").cancels(), 1);
  EXPECT_EQ(Fake("cache-1").in_flight() + Fake("database").in_flight(), 0);
  absl::StatusOr<RouteReport> report = router_->Report("race");
  ASSERT_OK(report);
  EXPECT_EQ(report->backends[1].stats.wins, 1);
  EXPECT_EQ(report->backends[0].stats.races, 1);
  EXPECT_EQ(report->backends[0].stats.wins, 0);
}

TEST_F(RouterTest, RequestPolicyOverridesRoutePolicy) {
  Build({MakeRoute("race", Policy::kAll, {"slow", "fast"})});
  Fake("slow").SetLatency(absl::Milliseconds(500));
  Fake("fast").SetLatency(absl::Milliseconds(20));
  absl::StatusOr<RouteResponse> response = Run(Request("race", fanout::v1::FIRST_SUCCESS));
  ASSERT_OK(response);
  EXPECT_EQ(response->policy(), fanout::v1::FIRST_SUCCESS);
  EXPECT_EQ(response->latency_us(), 20'000);
}

TEST_F(RouterTest, FallbackAnswersFromNextAfterFailure) {
  Build({MakeRoute("fb", Policy::kFallback, {"primary", "secondary", "tertiary"})});
  Fake("primary").SetResult(absl::UnavailableError("down"));
  Fake("primary").SetLatency(absl::Milliseconds(5));
  Fake("secondary").SetLatency(absl::Milliseconds(10));
  absl::StatusOr<RouteResponse> response = Run(Request("fb"));
  ASSERT_OK(response);
  EXPECT_EQ(response->backend(), "secondary");
  EXPECT_TRUE(response->fallback_used());
  EXPECT_EQ(response->latency_us(), 15'000);
  EXPECT_EQ(BranchOf(*response, "primary").outcome(), fanout::v1::ERROR);
  EXPECT_EQ(BranchOf(*response, "tertiary").outcome(), fanout::v1::SKIPPED);
  EXPECT_EQ(Fake("tertiary").calls(), 0);
}

TEST_F(RouterTest, FallbackMovesOnAfterAttemptTimeout) {
  RouteConfig route = MakeRoute("fb", Policy::kFallback, {"stuck", "spare"});
  route.attempt_timeout = absl::Milliseconds(100);
  Build({route});
  Fake("stuck").SetLatency(absl::Hours(1));
  Fake("spare").SetLatency(absl::Milliseconds(10));
  absl::StatusOr<RouteResponse> response = Run(Request("fb"));
  ASSERT_OK(response);
  EXPECT_EQ(response->backend(), "spare");
  EXPECT_TRUE(response->fallback_used());
  EXPECT_EQ(response->latency_us(), 110'000);
  EXPECT_EQ(BranchOf(*response, "stuck").outcome(), fanout::v1::TIMEOUT);
  EXPECT_EQ(Fake("stuck").cancels(), 1);
}

TEST_F(RouterTest, HedgedWithFixedDelayStartsNextAfterIt) {
  RouteConfig route = MakeRoute("hedge", Policy::kHedged, {"primary", "secondary"});
  route.hedge_after = absl::Milliseconds(30);
  Build({route});
  Fake("primary").SetLatency(absl::Milliseconds(500));
  Fake("secondary").SetLatency(absl::Milliseconds(20));
  absl::StatusOr<RouteResponse> response = Run(Request("hedge"));
  ASSERT_OK(response);
  EXPECT_EQ(response->backend(), "secondary");
  EXPECT_FALSE(response->fallback_used());  // the primary was slow, not failed
  EXPECT_EQ(response->latency_us(), 50'000);
  EXPECT_EQ(BranchOf(*response, "primary").outcome(), fanout::v1::CANCELLED);
}

TEST_F(RouterTest, HedgedWithoutDelayUsesLiveP95OfBackend) {
  Build({MakeRoute("hedge", Policy::kHedged, {"primary", "secondary"})});
  Fake("secondary").SetLatency(absl::Milliseconds(5));
  // Cold: hedge_after_cold (50 ms).
  Fake("primary").SetLatency(absl::Seconds(1));
  absl::StatusOr<RouteResponse> cold = Run(Request("hedge"));
  ASSERT_OK(cold);
  EXPECT_EQ(cold->latency_us(), 55'000);
  // Warm the primary with 40 ms answers (fallback runs it alone).
  Fake("primary").SetLatency(absl::Milliseconds(40));
  for (int i = 0; i < BackendStats::kMinSamples; ++i) {
    ASSERT_OK(Run(Request("hedge", fanout::v1::FALLBACK)));
  }
  Fake("primary").SetLatency(absl::Seconds(1));
  absl::StatusOr<RouteResponse> warm = Run(Request("hedge"));
  ASSERT_OK(warm);
  EXPECT_EQ(warm->backend(), "secondary");
  EXPECT_EQ(warm->latency_us(), 45'000);
}

TEST_F(RouterTest, DeadlineTurnsSlowBranchesIntoTimeouts) {
  Build({MakeRoute("race", Policy::kFirstSuccess, {"slow-1", "slow-2"})});
  Fake("slow-1").SetLatency(absl::Seconds(2));
  Fake("slow-2").SetLatency(absl::Seconds(3));
  RouteRequest request = Request("race");
  request.set_timeout_ms(100);
  absl::StatusOr<RouteResponse> response = Run(request);
  EXPECT_THAT(response, StatusIs(absl::StatusCode::kDeadlineExceeded));
  const RouteResponse carried = CarriedRouteResponse(response.status());
  EXPECT_EQ(BranchOf(carried, "slow-1").outcome(), fanout::v1::TIMEOUT);
  EXPECT_EQ(BranchOf(carried, "slow-2").outcome(), fanout::v1::TIMEOUT);
  EXPECT_EQ(carried.latency_us(), 100'000);
  EXPECT_EQ(Fake("slow-1").cancels(), 1);
  EXPECT_EQ(Fake("slow-2").cancels(), 1);
}

TEST_F(RouterTest, CallerDeadlineBeatsRouteTimeout) {
  Build({MakeRoute("settled", Policy::kAllSettled, {"fast", "slow"})});
  Fake("fast").SetLatency(absl::Milliseconds(10));
  Fake("slow").SetLatency(absl::Seconds(2));
  absl::StatusOr<RouteResponse> response =
      Finish(Start(Request("settled"), {}, executor_.clock()->Now() + absl::Milliseconds(250)));
  ASSERT_OK(response);  // all_settled reports, it does not fail
  EXPECT_EQ(response->latency_us(), 250'000);
  EXPECT_EQ(BranchOf(*response, "fast").outcome(), fanout::v1::OK);
  EXPECT_EQ(BranchOf(*response, "slow").outcome(), fanout::v1::TIMEOUT);
}

TEST_F(RouterTest, ParentCancellationCancelsEveryBranch) {
  Build({MakeRoute("settled", Policy::kAllSettled, {"a", "b", "c"})});
  for (const char* name : {"a", "b", "c"}) Fake(name).SetLatency(absl::Seconds(2));
  CancellationSource caller;
  std::shared_ptr<Pending> pending = Start(Request("settled"), caller.token());
  executor_.AdvanceTime(absl::Milliseconds(10));
  EXPECT_FALSE(pending->result.has_value());
  caller.Cancel();
  ASSERT_TRUE(pending->result.has_value());
  EXPECT_THAT(*pending->result, StatusIs(absl::StatusCode::kCancelled));
  const RouteResponse carried = CarriedRouteResponse(pending->result->status());
  for (const char* name : {"a", "b", "c"}) {
    EXPECT_EQ(BranchOf(carried, name).outcome(), fanout::v1::CANCELLED) << name;
    EXPECT_EQ(Fake(name).cancels(), 1) << name;
  }
}

TEST_F(RouterTest, LeastLoadedPicksLeastInFlightCost) {
  Build({MakeRoute("gpu", Policy::kLeastLoaded, {"a", "b", "c"})});
  for (const char* name : {"a", "b", "c"}) Fake(name).SetHold(true);
  auto route_with_cost = [&](int64_t cost) {
    RouteRequest request = Request("gpu");
    request.set_cost(cost);
    return Start(request);
  };
  auto busy = [&]() {
    std::vector<std::string> names;
    for (const char* name : {"a", "b", "c"}) {
      if (Fake(name).in_flight() > 0) names.push_back(name);
    }
    return names;
  };
  std::vector<std::shared_ptr<Pending>> calls;
  calls.push_back(route_with_cost(4000));  // a heavy prompt lands somewhere
  ASSERT_EQ(busy().size(), 1u);
  const std::string heavy = busy()[0];
  calls.push_back(route_with_cost(10));  // must avoid the heavy one
  ASSERT_EQ(busy().size(), 2u);
  EXPECT_EQ(Fake(heavy).in_flight(), 1);
  calls.push_back(route_with_cost(30));  // the idle one: 0 + 30 < 10 + 30
  EXPECT_EQ(busy().size(), 3u);
  EXPECT_EQ(Fake(heavy).in_flight(), 1);
  // Scores now: heavy 4000, the others 10 and 30: the next goes to the 10.
  std::string light;
  for (const char* name : {"a", "b", "c"}) {
    if (Fake(name).costs() == std::vector<int64_t>{10}) light = name;
  }
  ASSERT_FALSE(light.empty());
  calls.push_back(route_with_cost(25));
  EXPECT_EQ(Fake(light).in_flight(), 2);
  EXPECT_EQ(Fake(heavy).in_flight(), 1);
  for (const char* name : {"a", "b", "c"}) Fake(name).Release();
  for (auto& call : calls) {
    ASSERT_OK(Finish(call));
    EXPECT_EQ(call->result->value().policy(), fanout::v1::LEAST_LOADED);
  }
}

TEST_F(RouterTest, LeastLoadedEstimatesCostFromPayloadBytes) {
  Build({MakeRoute("gpu", Policy::kLeastLoaded, {"a"})});
  RouteRequest request = Request("gpu");
  request.set_payload(std::string(400, 'x'));
  ASSERT_OK(Run(request));
  request.set_payload("xy");
  ASSERT_OK(Run(request));
  EXPECT_EQ(Fake("a").costs(), (std::vector<int64_t>{100, 1}));
}

TEST_F(RouterTest, RoundRobinRotatesAndSkipsOthers) {
  Build({MakeRoute("rr", Policy::kRoundRobin, {"a", "b", "c"})});
  std::vector<std::string> chosen;
  for (int i = 0; i < 6; ++i) {
    absl::StatusOr<RouteResponse> response = Run(Request("rr"));
    ASSERT_OK(response);
    chosen.push_back(response->backend());
    int skipped = 0;
    for (const Branch& branch : response->branches())
      skipped += branch.outcome() == fanout::v1::SKIPPED;
    EXPECT_EQ(skipped, 2);
  }
  EXPECT_EQ(chosen, (std::vector<std::string>{"a", "b", "c", "a", "b", "c"}));
}

TEST_F(RouterTest, SingleTargetFailureNamesTheBackend) {
  Build({MakeRoute("rr", Policy::kRoundRobin, {"a"})});
  Fake("a").SetResult(absl::ResourceExhaustedError("queue full"));
  EXPECT_THAT(Run(Request("rr")),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("a: queue full")));
}

TEST_F(RouterTest, EjectsFailingBackendAndReadmitsAfterSuccessfulProbe) {
  RouteConfig route = MakeRoute("fb", Policy::kFallback, {"flaky", "steady"});
  route.ejection = {.consecutive_failures = 3,
                    .base_ejection = absl::Seconds(5),
                    .max_ejection = absl::Seconds(60)};
  Build({route});
  Fake("flaky").SetResult(absl::UnavailableError("down"));
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<RouteResponse> response = Run(Request("fb"));
    ASSERT_OK(response);
    EXPECT_TRUE(response->fallback_used());
  }
  EXPECT_EQ(Fake("flaky").calls(), 3);
  absl::StatusOr<RouteResponse> ejected = Run(Request("fb"));
  ASSERT_OK(ejected);
  EXPECT_EQ(ejected->backend(), "steady");
  EXPECT_FALSE(ejected->fallback_used());
  EXPECT_EQ(BranchOf(*ejected, "flaky").outcome(), fanout::v1::SKIPPED);
  EXPECT_THAT(BranchOf(*ejected, "flaky").error(), HasSubstr("ejected"));
  EXPECT_EQ(Fake("flaky").calls(), 3);
  EXPECT_TRUE(router_->Report("fb")->backends[0].stats.ejected);

  executor_.AdvanceTime(absl::Seconds(5));
  Fake("flaky").SetResult(std::string("flaky"));
  absl::StatusOr<RouteResponse> probed = Run(Request("fb"));
  ASSERT_OK(probed);
  EXPECT_EQ(probed->backend(), "flaky");
  EXPECT_EQ(Fake("flaky").calls(), 4);
  EXPECT_FALSE(router_->Report("fb")->backends[0].stats.ejected);
}

TEST_F(RouterTest, FailedProbeKeepsBackendEjectedLonger) {
  RouteConfig route = MakeRoute("fb", Policy::kFallback, {"flaky", "steady"});
  route.ejection = {.consecutive_failures = 1,
                    .base_ejection = absl::Seconds(5),
                    .max_ejection = absl::Seconds(60)};
  Build({route});
  Fake("flaky").SetResult(absl::UnavailableError("down"));
  ASSERT_OK(Run(Request("fb")));
  executor_.AdvanceTime(absl::Seconds(5));
  ASSERT_OK(Run(Request("fb")));  // the probe fails: ejected for 10 s
  EXPECT_EQ(Fake("flaky").calls(), 2);
  executor_.AdvanceTime(absl::Seconds(5));
  ASSERT_OK(Run(Request("fb")));
  EXPECT_EQ(Fake("flaky").calls(), 2);
  executor_.AdvanceTime(absl::Seconds(5));
  ASSERT_OK(Run(Request("fb")));
  EXPECT_EQ(Fake("flaky").calls(), 3);
}

TEST_F(RouterTest, AllStillCallsEjectedBackends) {
  RouteConfig route = MakeRoute("agg", Policy::kAllSettled, {"flaky", "steady"});
  route.ejection.consecutive_failures = 1;
  Build({route});
  Fake("flaky").SetResult(absl::UnavailableError("down"));
  ASSERT_OK(Run(Request("agg")));
  ASSERT_OK(Run(Request("agg")));
  EXPECT_EQ(Fake("flaky").calls(), 2);
}

class AdaptiveRouterTest : public RouterTest {
 protected:
  void SetUp() override {
    RouteConfig route = MakeRoute("models", Policy::kAdaptive, {"opus", "haiku", "sonnet"});
    route.adaptive = {.window = 20,
                      .min_races = 10,
                      .commit_share = 0.8,
                      .explore_share = 0.05,
                      .regression_factor = 2.0,
                      .max_error_rate = 0.2};
    route.ejection.consecutive_failures = 3;
    Build({route});
    Fake("opus").SetLatency(absl::Milliseconds(50));
    Fake("haiku").SetLatency(absl::Milliseconds(10));
    Fake("sonnet").SetLatency(absl::Milliseconds(30));
  }
  int Committed() { return router_->Report("models")->adaptive_committed; }
  int OthersCalls() { return Fake("opus").calls() + Fake("sonnet").calls(); }
};

TEST_F(AdaptiveRouterTest, ConvergesToConsistentlyFastestBackend) {
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<RouteResponse> response = Run(Request("models"));
    ASSERT_OK(response);
    EXPECT_EQ(response->backend(), "haiku");
  }
  EXPECT_EQ(OthersCalls(), 20);  // every call raced so far
  EXPECT_EQ(Committed(), 1);
  const int before = OthersCalls();
  int alone = 0;
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<RouteResponse> response = Run(Request("models"));
    ASSERT_OK(response);
    EXPECT_EQ(response->backend(), "haiku");
    EXPECT_EQ(response->policy(), fanout::v1::ADAPTIVE);
    alone += BranchOf(*response, "opus").outcome() == fanout::v1::SKIPPED;
  }
  // Racing would have cost 200 extra calls; exploration is about 5 % of 100.
  EXPECT_GE(alone, 85);
  EXPECT_LE(OthersCalls() - before, 2 * (100 - alone));
  EXPECT_GT(OthersCalls() - before, 0);  // it does keep exploring
}

TEST_F(AdaptiveRouterTest, LatencyRegressionReturnsToRacingAndRelearns) {
  for (int i = 0; i < 10; ++i) ASSERT_OK(Run(Request("models")));
  ASSERT_EQ(Committed(), 1);
  Fake("haiku").SetLatency(absl::Milliseconds(100));
  for (int i = 0; i < 5 && Committed() == 1; ++i) ASSERT_OK(Run(Request("models")));
  EXPECT_EQ(Committed(), -1);
  const int before = OthersCalls();
  absl::StatusOr<RouteResponse> raced = Run(Request("models"));
  ASSERT_OK(raced);
  EXPECT_EQ(raced->backend(), "sonnet");
  EXPECT_EQ(OthersCalls() - before, 2);
  for (int i = 0; i < 12; ++i) ASSERT_OK(Run(Request("models")));
  EXPECT_EQ(Committed(), 2);
}

TEST_F(AdaptiveRouterTest, FailingCommittedBackendReturnsToRacing) {
  for (int i = 0; i < 10; ++i) ASSERT_OK(Run(Request("models")));
  ASSERT_EQ(Committed(), 1);
  Fake("haiku").SetResult(absl::UnavailableError("overloaded"));
  int failures = 0;
  for (int i = 0; i < 6 && Committed() == 1; ++i) failures += !Run(Request("models")).ok();
  EXPECT_EQ(Committed(), -1);
  EXPECT_LE(failures, 3);  // ejection ends the commitment
  absl::StatusOr<RouteResponse> raced = Run(Request("models"));
  ASSERT_OK(raced);
  EXPECT_EQ(raced->backend(), "sonnet");
}

}  // namespace
}  // namespace fanout::router
