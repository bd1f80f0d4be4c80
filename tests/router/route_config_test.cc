#include "router/route_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace fanout::router {
namespace {

using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;

RouteConfig ValidRoute() {
  RouteConfig route;
  route.name = "models";
  route.method = "/llm.Model/Generate";
  route.backends = {{"127.0.0.1:9001", "a"}, {"127.0.0.1:9002", ""}};
  return route;
}

TEST(ParsePolicyTest, ParsesEveryConfigName) {
  const std::pair<const char*, Policy> cases[] = {
      {"all", Policy::kAll},
      {"all_settled", Policy::kAllSettled},
      {"first_success", Policy::kFirstSuccess},
      {"fallback", Policy::kFallback},
      {"hedged", Policy::kHedged},
      {"least_loaded", Policy::kLeastLoaded},
      {"round_robin", Policy::kRoundRobin},
      {"adaptive", Policy::kAdaptive},
  };
  for (const auto& [name, policy] : cases) {
    absl::StatusOr<Policy> parsed = ParsePolicy(name);
    ASSERT_OK(parsed) << name;
    EXPECT_EQ(*parsed, policy) << name;
    EXPECT_EQ(PolicyName(policy), name);
  }
}

TEST(ParsePolicyTest, UnknownNameIsInvalidArgumentNamingTheValue) {
  EXPECT_THAT(ParsePolicy("fastest"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'fastest'")));
  EXPECT_THAT(ParsePolicy("FIRST_SUCCESS"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("first_success")));
}

TEST(ValidateRouteConfigTest, AcceptsValidRouteWithDefaults) {
  EXPECT_OK(ValidateRouteConfig(ValidRoute()));
}

TEST(ValidateRouteConfigTest, RejectsMissingBackends) {
  RouteConfig route = ValidRoute();
  route.backends.clear();
  EXPECT_THAT(ValidateRouteConfig(route),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("route 'models': backends")));
}

TEST(ValidateRouteConfigTest, RejectsMalformedMethod) {
  for (const char* method : {"", "Generate", "/llm.Model", "/llm.Model/"}) {
    RouteConfig route = ValidRoute();
    route.method = method;
    EXPECT_THAT(ValidateRouteConfig(route),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("method")))
        << method;
  }
}

TEST(ValidateRouteConfigTest, RejectsDuplicateBackendNames) {
  RouteConfig route = ValidRoute();
  route.backends.push_back({"127.0.0.1:9003", "a"});
  EXPECT_THAT(ValidateRouteConfig(route),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate name 'a'")));
}

TEST(ValidateRouteConfigTest, RejectsNonPositiveTimeout) {
  RouteConfig route = ValidRoute();
  route.timeout = absl::ZeroDuration();
  EXPECT_THAT(ValidateRouteConfig(route),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("timeout")));
}

TEST(ValidateRouteConfigTest, RejectsOutOfRangeAdaptiveKnobs) {
  RouteConfig route = ValidRoute();
  route.adaptive.commit_share = 0.4;
  EXPECT_THAT(ValidateRouteConfig(route),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("adaptive")));
}

TEST(ValidateRouteConfigTest, RejectsMinRacesAboveWindowNamingTheKey) {
  RouteConfig route = ValidRoute();
  route.adaptive.window = 20;
  route.adaptive.min_races = 30;
  EXPECT_THAT(ValidateRouteConfig(route),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("route 'models': adaptive.min_races: 30 is more than "
                                 "adaptive.window (20)")));
  route.adaptive.min_races = 20;
  EXPECT_OK(ValidateRouteConfig(route));
}

TEST(ValidateRouteConfigTest, RejectsMaxEjectionPercentOutOfRange) {
  for (int percent : {-1, 101}) {
    RouteConfig route = ValidRoute();
    route.ejection.max_ejection_percent = percent;
    EXPECT_THAT(ValidateRouteConfig(route), StatusIs(absl::StatusCode::kInvalidArgument,
                                                     HasSubstr("ejection.max_ejection_percent")))
        << percent;
  }
  RouteConfig route = ValidRoute();
  route.ejection.max_ejection_percent = 0;
  EXPECT_OK(ValidateRouteConfig(route));
}

}  // namespace
}  // namespace fanout::router
