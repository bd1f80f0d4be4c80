// Router over scripted Downstreams on a ManualExecutor: policies, selection
// and learning, deterministic in time.
#include "router/router.h"

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
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

  BackendSnapshot Stats(const std::string& route, int backend) {
    absl::StatusOr<RouteReport> report = router_->Report(route);
    EXPECT_OK(report);
    if (!report.ok() || backend >= static_cast<int>(report->backends.size())) return {};
    return report->backends[backend].stats;
  }
  int Ejected(const std::string& route) {
    absl::StatusOr<RouteReport> report = router_->Report(route);
    EXPECT_OK(report);
    int ejected = 0;
    if (!report.ok()) return ejected;
    for (const BackendReport& backend : report->backends) ejected += backend.stats.ejected;
    return ejected;
  }

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

TEST_F(RouterTest, RouteUnknownLongRouteNameIsEchoedCut) {
  Build({MakeRoute("models", Policy::kAll, {"a"})});
  std::shared_ptr<Pending> pending = Start(Request(std::string(8192, 'n')));
  ASSERT_TRUE(pending->result.has_value());
  const absl::Status& status = pending->result->status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_LE(status.message().size(), kMaxEchoedInputBytes + 32);
  EXPECT_THAT(std::string(status.message()), HasSubstr("nnnn\xE2\x80\xA6' not found"));
}

TEST_F(RouterTest, RouteCostAboveCapIsInvalidArgumentNamingCost) {
  Build({MakeRoute("gpu", Policy::kLeastLoaded, {"a", "b"})});
  for (int64_t cost : {kMaxRouteCost + 1, std::numeric_limits<int64_t>::max(), int64_t{-1}}) {
    RouteRequest request = Request("gpu");
    request.set_cost(cost);
    std::shared_ptr<Pending> pending = Start(request);
    ASSERT_TRUE(pending->result.has_value());
    EXPECT_THAT(*pending->result, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cost")))
        << cost;
  }
  EXPECT_EQ(Fake("a").calls() + Fake("b").calls(), 0);
  RouteRequest largest = Request("gpu");
  largest.set_cost(kMaxRouteCost);
  ASSERT_OK(Run(largest));
  EXPECT_EQ(Stats("gpu", 0).in_flight_cost + Stats("gpu", 1).in_flight_cost, 0);
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

TEST_F(RouterTest, TinyCallerTimeoutsDoNotEjectHealthyBackends) {
  RouteConfig route = MakeRoute("race", Policy::kFirstSuccess, {"a", "b", "c"});
  route.ejection.consecutive_failures = 2;
  Build({route});
  for (const char* name : {"a", "b", "c"}) Fake(name).SetLatency(absl::Milliseconds(50));
  RouteRequest hurried = Request("race");
  hurried.set_timeout_ms(5);
  for (int i = 0; i < 5; ++i) {
    EXPECT_THAT(Run(hurried), StatusIs(absl::StatusCode::kDeadlineExceeded));
  }
  // The caller's own deadline, shorter than the route's timeout, likewise.
  for (int i = 0; i < 5; ++i) {
    EXPECT_THAT(
        Finish(Start(Request("race"), {}, executor_.clock()->Now() + absl::Milliseconds(5))),
        StatusIs(absl::StatusCode::kDeadlineExceeded));
  }
  EXPECT_EQ(Ejected("race"), 0);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Stats("race", i).failures, 0) << i;
    EXPECT_EQ(Stats("race", i).consecutive_failures, 0) << i;
    EXPECT_EQ(Stats("race", i).races, 0) << i;  // the caller ended them: no race learned
  }
  absl::StatusOr<RouteResponse> patient = Run(Request("race"));
  ASSERT_OK(patient);
  for (const Branch& branch : patient->branches()) {
    EXPECT_NE(branch.outcome(), fanout::v1::SKIPPED) << branch.backend();
  }
}

TEST_F(RouterTest, NoAnswerWithinTheRoutesOwnBudgetStillEjects) {
  RouteConfig route = MakeRoute("fb", Policy::kFallback, {"hung", "spare"});
  route.attempt_timeout = absl::Milliseconds(100);
  route.ejection.consecutive_failures = 2;
  Build({route});
  Fake("hung").SetLatency(absl::Hours(1));
  // A caller in a hurry (less than one attempt's budget) teaches nothing ...
  RouteRequest hurried = Request("fb");
  hurried.set_timeout_ms(50);
  EXPECT_THAT(Run(hurried), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(Stats("fb", 0).failures, 0);
  // ... a full attempt without an answer is the backend's failure.
  ASSERT_OK(Run(Request("fb")));
  ASSERT_OK(Run(Request("fb")));
  EXPECT_EQ(Stats("fb", 0).failures, 2);
  EXPECT_TRUE(Stats("fb", 0).ejected);
  absl::StatusOr<RouteResponse> skipped = Run(Request("fb"));
  ASSERT_OK(skipped);
  EXPECT_EQ(BranchOf(*skipped, "hung").outcome(), fanout::v1::SKIPPED);
  EXPECT_EQ(Fake("hung").calls(), 3);
}

TEST_F(RouterTest, EjectionNeverTakesMoreThanMaxEjectionPercent) {
  RouteConfig route = MakeRoute("race", Policy::kFirstSuccess, {"a", "b", "c", "d"});
  route.ejection.consecutive_failures = 1;
  route.ejection.max_ejection_percent = 50;
  Build({route});
  for (const char* name : {"a", "b", "c", "d"}) {
    Fake(name).SetResult(absl::UnavailableError("down"));
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(Run(Request("race")), StatusIs(absl::StatusCode::kUnavailable));
  }
  EXPECT_EQ(Ejected("race"), 2);
  absl::StatusOr<RouteResponse> last = Run(Request("race"));
  const RouteResponse carried = CarriedRouteResponse(last.status());
  int called = 0;
  for (const Branch& branch : carried.branches()) {
    called += branch.outcome() != fanout::v1::SKIPPED;
  }
  EXPECT_EQ(called, 2);
}

TEST_F(RouterTest, ConcurrentCallsReserveOneProbe) {
  RouteConfig route = MakeRoute("fb", Policy::kFallback, {"primary", "flaky"});
  route.ejection = {.consecutive_failures = 1,
                    .base_ejection = absl::Seconds(5),
                    .max_ejection = absl::Seconds(60)};
  Build({route});
  Fake("flaky").SetResult(absl::UnavailableError("down"));
  ASSERT_OK(Run(Request("fb", fanout::v1::ALL_SETTLED)));  // flaky fails once: ejected
  ASSERT_TRUE(Stats("fb", 1).ejected);
  executor_.AdvanceTime(absl::Seconds(5));
  Fake("flaky").SetResult(std::string("flaky"));
  // Every call plans while the primary holds them; they reach flaky only
  // after the primary fails, long after selection.
  Fake("primary").SetHold(true);
  Fake("primary").SetResult(absl::UnavailableError("busy"));
  std::vector<std::shared_ptr<Pending>> calls;
  for (int i = 0; i < 5; ++i) calls.push_back(Start(Request("fb")));
  EXPECT_TRUE(Stats("fb", 1).probe_reserved);
  Fake("primary").Release();
  int answered_by_flaky = 0;
  for (auto& call : calls) {
    absl::StatusOr<RouteResponse> response = Finish(call);
    if (response.ok()) {
      EXPECT_EQ(response->backend(), "flaky");
      ++answered_by_flaky;
    } else {
      EXPECT_EQ(BranchOf(CarriedRouteResponse(response.status()), "flaky").outcome(),
                fanout::v1::SKIPPED);
    }
  }
  EXPECT_EQ(answered_by_flaky, 1);
  EXPECT_EQ(Fake("flaky").calls(), 2);  // the settled call and one probe
  EXPECT_FALSE(Stats("fb", 1).ejected);
  EXPECT_FALSE(Stats("fb", 1).probe_reserved);
}

TEST_F(RouterTest, ProbeNotSelectedIsGivenBackAtOnce) {
  RouteConfig route = MakeRoute("rr", Policy::kRoundRobin, {"a", "b"});
  route.timeout = absl::Minutes(1);
  route.ejection.consecutive_failures = 1;
  Build({route});
  Fake("a").SetResult(absl::UnavailableError("down"));
  ASSERT_OK(Run(Request("rr", fanout::v1::ALL_SETTLED)));
  ASSERT_TRUE(Stats("rr", 0).ejected);
  Fake("a").SetResult(std::string("a"));
  Fake("b").SetHold(true);
  std::shared_ptr<Pending> first = Start(Request("rr"));  // turn 0 of [b]
  executor_.AdvanceTime(absl::Seconds(5));
  // Turn 1 of [a (probe), b] is b's: a's probe slot must not stay with this
  // call while it waits on b.
  std::shared_ptr<Pending> second = Start(Request("rr"));
  EXPECT_EQ(Fake("b").in_flight(), 2);
  EXPECT_FALSE(Stats("rr", 0).probe_reserved);
  absl::StatusOr<RouteResponse> probe = Run(Request("rr"));  // turn 2: a's probe
  ASSERT_OK(probe);
  EXPECT_EQ(probe->backend(), "a");
  EXPECT_FALSE(Stats("rr", 0).ejected);
  Fake("b").Release();
  ASSERT_OK(Finish(first));
  ASSERT_OK(Finish(second));
}

TEST_F(RouterTest, RoundRobinRotatesOverAdmittedBackendsOnly) {
  RouteConfig route = MakeRoute("rr", Policy::kRoundRobin, {"a", "b", "c"});
  route.ejection.consecutive_failures = 1;
  Build({route});
  Fake("b").SetResult(absl::UnavailableError("down"));
  ASSERT_OK(Run(Request("rr")));                                              // a
  EXPECT_THAT(Run(Request("rr")), StatusIs(absl::StatusCode::kUnavailable));  // b, ejected
  ASSERT_TRUE(Stats("rr", 1).ejected);
  const int a_before = Fake("a").calls();
  const int c_before = Fake("c").calls();
  for (int i = 0; i < 6; ++i) ASSERT_OK(Run(Request("rr")));
  // b's turns are shared out, not handed to its successor.
  EXPECT_EQ(Fake("a").calls() - a_before, 3);
  EXPECT_EQ(Fake("c").calls() - c_before, 3);
}

TEST_F(RouterTest, FallbackWithoutAttemptTimeoutMovesPastHungPrimary) {
  RouteConfig route = MakeRoute("fb", Policy::kFallback, {"stuck", "spare"});
  route.timeout = absl::Seconds(1);
  Build({route});
  Fake("stuck").SetLatency(absl::Hours(1));
  Fake("spare").SetLatency(absl::Milliseconds(10));
  absl::StatusOr<RouteResponse> response = Run(Request("fb"));
  ASSERT_OK(response);  // without a default attempt timeout: DEADLINE_EXCEEDED at 1 s
  EXPECT_EQ(response->backend(), "spare");
  EXPECT_TRUE(response->fallback_used());
  EXPECT_EQ(response->latency_us(), 510'000);  // half the budget each, then 10 ms
  EXPECT_EQ(BranchOf(*response, "stuck").outcome(), fanout::v1::TIMEOUT);
  EXPECT_EQ(Fake("stuck").cancels(), 1);
  // A caller's shorter budget is shared the same way.
  RouteRequest hurried = Request("fb");
  hurried.set_timeout_ms(200);
  absl::StatusOr<RouteResponse> quick = Run(hurried);
  ASSERT_OK(quick);
  EXPECT_EQ(quick->latency_us(), 110'000);
  // Only the route's own share counts against the backend.
  EXPECT_EQ(Stats("fb", 0).failures, 1);
}

// A downstream that never calls back: it keeps each callback until told to
// drop it unrun.
class DroppingDownstream final : public Downstream {
 public:
  void Call(const DownstreamCall& call, Done done) override {
    absl::MutexLock l(&mu_);
    held_.push_back(std::move(done));
  }
  void DropAll() {
    std::vector<Done> doomed;
    {
      absl::MutexLock l(&mu_);
      doomed.swap(held_);
    }
  }

 private:
  absl::Mutex mu_;
  std::vector<Done> held_ ABSL_GUARDED_BY(mu_);
};

TEST_F(RouterTest, DroppedDownstreamCallbackKeepsStatsBalanced) {
  auto dropping = std::make_shared<DroppingDownstream>();
  RouterOptions options;
  options.downstream_factory = [dropping](const BackendConfig&) {
    return absl::StatusOr<std::shared_ptr<Downstream>>(dropping);
  };
  options.seed = 1;
  RouteConfig route = MakeRoute("gpu", Policy::kLeastLoaded, {"a"});
  route.ejection.consecutive_failures = 1;
  absl::StatusOr<std::unique_ptr<Router>> router =
      Router::Create({route}, &executor_, std::move(options));
  ASSERT_OK(router);
  router_ = *std::move(router);
  RouteRequest request = Request("gpu");
  request.set_cost(500);
  std::shared_ptr<Pending> first = Start(request);
  std::shared_ptr<Pending> second = Start(request);
  EXPECT_EQ(Stats("gpu", 0).in_flight, 2);
  EXPECT_EQ(Stats("gpu", 0).in_flight_cost, 1000);
  dropping->DropAll();
  ASSERT_TRUE(first->result.has_value());
  EXPECT_THAT(*first->result, StatusIs(absl::StatusCode::kInternal));
  ASSERT_TRUE(second->result.has_value());
  const BackendSnapshot stats = Stats("gpu", 0);
  EXPECT_EQ(stats.in_flight, 0);
  EXPECT_EQ(stats.in_flight_cost, 0);
  EXPECT_EQ(stats.failures, 0);  // a downstream bug, not the backend's failure
  EXPECT_FALSE(stats.ejected);
}

TEST_F(RouterTest, SuccessOmitsWinnerPayloadFromBranchesUnlessAsked) {
  Build({MakeRoute("race", Policy::kFirstSuccess, {"a", "b"}),
         MakeRoute("agg", Policy::kAll, {"a", "b"})});
  Fake("a").SetResult(std::string(4096, 'a'));
  Fake("b").SetLatency(absl::Milliseconds(50));
  absl::StatusOr<RouteResponse> lean = Run(Request("race"));
  ASSERT_OK(lean);
  EXPECT_EQ(lean->payload(), std::string(4096, 'a'));
  EXPECT_EQ(BranchOf(*lean, "a").outcome(), fanout::v1::OK);
  EXPECT_EQ(BranchOf(*lean, "a").payload(), "");
  RouteRequest asked = Request("race");
  asked.set_branch_payloads(true);
  absl::StatusOr<RouteResponse> full = Run(asked);
  ASSERT_OK(full);
  EXPECT_EQ(full->payload(), std::string(4096, 'a'));
  EXPECT_EQ(BranchOf(*full, "a").payload(), std::string(4096, 'a'));
  // ALL answers with the branches: their payloads are always there.
  absl::StatusOr<RouteResponse> all = Run(Request("agg"));
  ASSERT_OK(all);
  EXPECT_EQ(BranchOf(*all, "a").payload(), std::string(4096, 'a'));
  EXPECT_EQ(BranchOf(*all, "b").payload(), "b");
}

TEST_F(RouterTest, FailureDetailsCarryNoPayloadsAndStayBounded) {
  Build({MakeRoute("agg", Policy::kAll, {"big-1", "big-2", "broken"})});
  Fake("big-1").SetResult(std::string(8192, 'x'));
  Fake("big-2").SetResult(std::string(8192, 'y'));
  Fake("broken").SetLatency(absl::Milliseconds(20));
  Fake("broken").SetResult(absl::UnavailableError(std::string(10000, 'e')));
  RouteRequest asked = Request("agg");
  asked.set_branch_payloads(true);  // never in error details
  absl::StatusOr<RouteResponse> response = Run(asked);
  ASSERT_THAT(response, StatusIs(absl::StatusCode::kUnavailable));
  const absl::Status& status = response.status();
  EXPECT_LE(status.message().size(), kMaxRouteStatusMessageBytes);
  EXPECT_THAT(std::string(status.message()), HasSubstr("broken: eeee"));
  const auto details = status.GetPayload(kRouteResponseTypeUrl);
  ASSERT_TRUE(details.has_value());
  EXPECT_LE(details->size(), kMaxRouteErrorDetailsBytes);
  const RouteResponse carried = CarriedRouteResponse(status);
  ASSERT_EQ(carried.branches_size(), 3);
  EXPECT_EQ(BranchOf(carried, "big-1").outcome(), fanout::v1::OK);
  EXPECT_EQ(BranchOf(carried, "big-1").payload(), "");
  EXPECT_EQ(BranchOf(carried, "big-2").payload(), "");
  EXPECT_EQ(BranchOf(carried, "broken").code(), static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_EQ(BranchOf(carried, "broken").latency_us(), 20'000);
  EXPECT_LE(BranchOf(carried, "broken").error().size(), kMaxBranchErrorBytes);
  EXPECT_THAT(BranchOf(carried, "broken").error(), HasSubstr("eeee"));
}

TEST_F(RouterTest, ManyLongFailuresFitTheDetailsWithEveryBranch) {
  std::vector<std::string> names;
  for (int i = 0; i < 24; ++i) names.push_back(absl::StrCat("replica-", i));
  Build({MakeRoute("race", Policy::kFirstSuccess, names)});
  for (int i = 0; i < 24; ++i) {
    Fake(names[i]).SetLatency(absl::Milliseconds(1 + i));
    // Not valid UTF-8 either: a proto3 string field must be, or the caller
    // cannot decode the details.
    Fake(names[i]).SetResult(absl::UnavailableError(
        absl::StrCat(names[i], " overloaded \xFF\xFE ", std::string(3000, 'z'))));
  }
  absl::StatusOr<RouteResponse> response = Run(Request("race"));
  ASSERT_THAT(response, StatusIs(absl::StatusCode::kUnavailable));
  const absl::Status& status = response.status();
  EXPECT_LE(status.message().size(), kMaxRouteStatusMessageBytes);
  EXPECT_THAT(std::string(status.message()), HasSubstr("all 24 backends failed"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("; replica-0: UNAVAILABLE: repli"));
  ASSERT_LE(status.GetPayload(kRouteResponseTypeUrl)->size(), kMaxRouteErrorDetailsBytes);
  const RouteResponse carried = CarriedRouteResponse(status);
  ASSERT_EQ(carried.branches_size(), 24);
  for (const Branch& branch : carried.branches()) {
    EXPECT_EQ(branch.outcome(), fanout::v1::ERROR) << branch.backend();
    EXPECT_EQ(branch.code(), static_cast<int>(absl::StatusCode::kUnavailable));
    EXPECT_GT(branch.latency_us(), 0);
    EXPECT_THAT(branch.error(), HasSubstr(branch.backend()));
    EXPECT_THAT(branch.error(), ::testing::Not(HasSubstr("\xFF")));
  }
}

TEST_F(RouterTest, InvalidUtf8BackendErrorKeepsResponseDecodable) {
  Build({MakeRoute("race", Policy::kFirstSuccess, {"garbled", "fine"})});
  Fake("garbled").SetResult(absl::UnavailableError("bad \xFF\xFE bytes"));
  Fake("fine").SetLatency(absl::Milliseconds(10));
  absl::StatusOr<RouteResponse> response = Run(Request("race"));
  ASSERT_OK(response);
  EXPECT_EQ(BranchOf(*response, "garbled").error(), "bad ?? bytes");
  // A proto3 string field with invalid UTF-8 does not parse: the caller
  // would get an error instead of the answer.
  RouteResponse parsed;
  EXPECT_TRUE(parsed.ParseFromString(response->SerializeAsString()));
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

TEST_F(AdaptiveRouterTest, CallerCancelledRacesAreNotLearned) {
  for (int i = 0; i < 9; ++i) ASSERT_OK(Run(Request("models")));
  ASSERT_EQ(Committed(), -1);
  for (int i = 0; i < 5; ++i) {
    CancellationSource caller;
    std::shared_ptr<Pending> pending = Start(Request("models"), caller.token());
    executor_.AdvanceTime(absl::Milliseconds(5));
    caller.Cancel();
    ASSERT_TRUE(pending->result.has_value());
    EXPECT_THAT(*pending->result, StatusIs(absl::StatusCode::kCancelled));
  }
  // Learned as "nobody won", the five would keep haiku under commit_share.
  ASSERT_OK(Run(Request("models")));
  EXPECT_EQ(Committed(), 1);
  EXPECT_EQ(Stats("models", 1).races, 10);
  EXPECT_EQ(Stats("models", 1).wins, 10);
}

TEST_F(AdaptiveRouterTest, CallerDeadlinesDoNotUncommitOrEject) {
  for (int i = 0; i < 10; ++i) ASSERT_OK(Run(Request("models")));
  ASSERT_EQ(Committed(), 1);
  RouteRequest hurried = Request("models");
  hurried.set_timeout_ms(5);  // haiku takes 10 ms
  for (int i = 0; i < 15; ++i) {
    EXPECT_THAT(Run(hurried), StatusIs(absl::StatusCode::kDeadlineExceeded));
  }
  EXPECT_EQ(Committed(), 1);
  EXPECT_FALSE(Stats("models", 1).ejected);
  EXPECT_EQ(Stats("models", 1).failures, 0);
  absl::StatusOr<RouteResponse> patient = Run(Request("models"));
  ASSERT_OK(patient);
  EXPECT_EQ(patient->backend(), "haiku");
}

}  // namespace
}  // namespace fanout::router
