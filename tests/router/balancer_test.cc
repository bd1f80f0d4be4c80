#include "router/balancer.h"

#include <cstdint>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace fanout::router {
namespace {

size_t AlwaysZero(size_t) { return 0; }
size_t AlwaysLast(size_t n) { return n - 1; }

TEST(PickLeastLoadedTest, PicksLowestInFlightCostPlusCallCost) {
  const std::vector<LoadView> loads = {{1000, 1, {}}, {10, 1, {}}, {300, 1, {}}};
  EXPECT_EQ(PickLeastLoaded(loads, 50, AlwaysZero), 1);
  EXPECT_EQ(PickLeastLoaded(loads, 50, AlwaysLast), 1);
}

TEST(PickLeastLoadedTest, SaturatedLoadStaysTheBusiest) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  // Without saturation kMax + cost wraps negative and the busiest looks idle.
  const std::vector<LoadView> loads = {{kMax, 3, {}}, {1000, 1, {}}};
  EXPECT_EQ(PickLeastLoaded(loads, kMax / 2, AlwaysZero), 1);
  EXPECT_EQ(PickLeastLoaded(loads, 1, AlwaysZero), 1);
}

TEST(PickLeastLoadedTest, CostOutweighsCallCount) {
  // Least connections would pick 0; least cost picks 1.
  const std::vector<LoadView> loads = {{4000, 1, {}}, {30, 3, {}}};
  EXPECT_EQ(PickLeastLoaded(loads, 10, AlwaysZero), 1);
}

TEST(PickLeastLoadedTest, TieGoesToFewerCallsInFlightWhicheverIsDrawnFirst) {
  const std::vector<LoadView> loads = {{0, 3, {}}, {0, 1, {}}, {500, 0, {}}};
  EXPECT_EQ(PickLeastLoaded(loads, 5, AlwaysZero), 1);
  EXPECT_EQ(PickLeastLoaded(loads, 5, AlwaysLast), 1);
}

TEST(PickLeastLoadedTest, FullTieGoesToLowerLatency) {
  const std::vector<LoadView> loads = {{0, 0, absl::Milliseconds(80)},
                                       {0, 0, absl::Milliseconds(20)}};
  EXPECT_EQ(PickLeastLoaded(loads, 5, AlwaysZero), 1);
  EXPECT_EQ(PickLeastLoaded(loads, 5, AlwaysLast), 1);
}

TEST(PickLeastLoadedTest, DrawsOnlyAmongTiedBackends) {
  const std::vector<LoadView> loads = {{9, 0, {}}, {0, 2, {}}, {9, 0, {}}, {0, 2, {}}};
  std::vector<size_t> asked;
  const int picked = PickLeastLoaded(loads, 1, [&](size_t n) {
    asked.push_back(n);
    return size_t{0};
  });
  EXPECT_TRUE(picked == 1 || picked == 3);
  EXPECT_EQ(asked, (std::vector<size_t>{2, 1}));
}

class AdaptiveControllerTest : public ::testing::Test {
 protected:
  static constexpr double kNoExplore = 0.99;
  AdaptiveConfig Config() {
    return {.window = 10,
            .min_races = 5,
            .commit_share = 0.8,
            .explore_share = 0.1,
            .regression_factor = 2.0,
            .max_error_rate = 0.2};
  }
  static bool AllAdmissible(int) { return true; }
};

TEST_F(AdaptiveControllerTest, RacesUntilClearWinnerThenCommits) {
  AdaptiveController adaptive(Config(), 3);
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(adaptive.Next(kNoExplore, AllAdmissible).race);
    adaptive.OnRace(1, absl::Milliseconds(10));
  }
  EXPECT_EQ(adaptive.committed(), -1);  // fewer than min_races
  adaptive.OnRace(1, absl::Milliseconds(10));
  EXPECT_EQ(adaptive.committed(), 1);
  const AdaptiveController::Decision decision = adaptive.Next(kNoExplore, AllAdmissible);
  EXPECT_FALSE(decision.race);
  EXPECT_EQ(decision.backend, 1);
  EXPECT_TRUE(adaptive.Next(0.05, AllAdmissible).race);  // the exploration share
}

TEST_F(AdaptiveControllerTest, NoCommitmentWithoutMajority) {
  AdaptiveController adaptive(Config(), 2);
  for (int i = 0; i < 10; ++i) adaptive.OnRace(i % 3 == 0 ? 0 : 1, absl::Milliseconds(10));
  EXPECT_EQ(adaptive.committed(), -1);  // 1 won 6 of 10 < 80 %
}

TEST_F(AdaptiveControllerTest, LatencyRegressionReturnsToRacing) {
  AdaptiveController adaptive(Config(), 2);
  for (int i = 0; i < 5; ++i) adaptive.OnRace(0, absl::Milliseconds(10));
  ASSERT_EQ(adaptive.committed(), 0);
  adaptive.OnCommittedCall(0, true, absl::Milliseconds(19));
  EXPECT_EQ(adaptive.committed(), 0);
  adaptive.OnCommittedCall(0, true, absl::Milliseconds(21));
  EXPECT_EQ(adaptive.committed(), -1);
  EXPECT_TRUE(adaptive.Next(kNoExplore, AllAdmissible).race);
}

TEST_F(AdaptiveControllerTest, ErrorRateReturnsToRacing) {
  AdaptiveController adaptive(Config(), 2);
  for (int i = 0; i < 5; ++i) adaptive.OnRace(0, absl::Milliseconds(10));
  ASSERT_EQ(adaptive.committed(), 0);
  for (int i = 0; i < 7; ++i) adaptive.OnCommittedCall(0, true, absl::Milliseconds(10));
  adaptive.OnCommittedCall(0, false, absl::Milliseconds(10));
  adaptive.OnCommittedCall(0, false, absl::Milliseconds(10));
  EXPECT_EQ(adaptive.committed(), 0);
  adaptive.OnCommittedCall(0, false, absl::Milliseconds(10));  // 3 of 10 > 20 %
  EXPECT_EQ(adaptive.committed(), -1);
}

TEST_F(AdaptiveControllerTest, InadmissibleCommittedBackendReturnsToRacing) {
  AdaptiveController adaptive(Config(), 2);
  for (int i = 0; i < 5; ++i) adaptive.OnRace(0, absl::Milliseconds(10));
  ASSERT_EQ(adaptive.committed(), 0);
  EXPECT_TRUE(adaptive.Next(kNoExplore, [](int backend) { return backend != 0; }).race);
  EXPECT_EQ(adaptive.committed(), -1);
}

TEST_F(AdaptiveControllerTest, LosingExplorationRacesEndsCommitment) {
  AdaptiveController adaptive(Config(), 2);
  for (int i = 0; i < 10; ++i) adaptive.OnRace(0, absl::Milliseconds(10));
  ASSERT_EQ(adaptive.committed(), 0);
  adaptive.OnRace(1, absl::Milliseconds(5));
  adaptive.OnRace(1, absl::Milliseconds(5));
  EXPECT_EQ(adaptive.committed(), 0);  // 8 of 10
  adaptive.OnRace(1, absl::Milliseconds(5));
  EXPECT_EQ(adaptive.committed(), -1);
}

}  // namespace
}  // namespace fanout::router
