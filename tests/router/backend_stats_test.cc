#include "router/backend_stats.h"

#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"

namespace fanout::router {
namespace {

class BackendStatsTest : public ::testing::Test {
 protected:
  BackendStats MakeStats(int failures = 3) {
    return BackendStats(&clock_, {.consecutive_failures = failures,
                                  .base_ejection = absl::Seconds(5),
                                  .max_ejection = absl::Seconds(12)});
  }
  // One call through selection: admitted (or probing) calls only.
  static void Call(BackendStats& stats, absl::Status status,
                   absl::Duration latency = absl::Milliseconds(1),
                   Attribution attribution = Attribution::kBackend) {
    BackendPass pass = stats.Admit();
    ASSERT_TRUE(pass.admitted());
    std::move(pass).Start(1).Finish(status, latency, attribution);
  }

  testing::FakeClock clock_;
};

TEST_F(BackendStatsTest, TracksInFlightCountAndCost) {
  BackendStats stats = MakeStats();
  BackendCall heavy = stats.Admit().Start(100);
  BackendCall light = stats.Admit().Start(7);
  EXPECT_EQ(stats.in_flight(), 2);
  EXPECT_EQ(stats.in_flight_cost(), 107);
  std::move(heavy).Finish(absl::OkStatus(), absl::Milliseconds(5), Attribution::kBackend);
  EXPECT_EQ(stats.in_flight(), 1);
  EXPECT_EQ(stats.in_flight_cost(), 7);
}

TEST_F(BackendStatsTest, DroppedCallLeavesInFlightCountAndCostBalanced) {
  BackendStats stats = MakeStats(/*failures=*/1);
  {
    BackendCall dropped = stats.Admit().Start(40);
    BackendCall moved_from = stats.Admit().Start(2);
    BackendCall owner = std::move(moved_from);
    EXPECT_EQ(stats.in_flight(), 2);
    EXPECT_EQ(stats.in_flight_cost(), 42);
  }  // never finished: a downstream that dropped its callback
  EXPECT_EQ(stats.in_flight(), 0);
  EXPECT_EQ(stats.in_flight_cost(), 0);
  const BackendSnapshot snapshot = stats.Snapshot();
  EXPECT_EQ(snapshot.calls, 2);
  EXPECT_EQ(snapshot.failures, 0);  // inconclusive, not the backend's failure
  EXPECT_FALSE(snapshot.ejected);
}

TEST_F(BackendStatsTest, CostSumsSaturateInsteadOfOverflowing) {
  BackendStats stats = MakeStats();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  BackendCall first = stats.Admit().Start(kMax / 2 + 1);
  BackendCall second = stats.Admit().Start(kMax / 2 + 1);
  BackendCall third = stats.Admit().Start(kMax);
  // Without saturation the sum wraps negative: the busiest backend would
  // look idle to least_loaded.
  EXPECT_EQ(stats.in_flight_cost(), kMax);
  std::move(first).Finish(absl::OkStatus(), absl::Milliseconds(1), Attribution::kBackend);
  EXPECT_GE(stats.in_flight_cost(), 0);
  std::move(second).Finish(absl::OkStatus(), absl::Milliseconds(1), Attribution::kBackend);
  std::move(third).Finish(absl::OkStatus(), absl::Milliseconds(1), Attribution::kBackend);
  EXPECT_EQ(stats.in_flight_cost(), 0);
  EXPECT_EQ(stats.in_flight(), 0);
}

TEST_F(BackendStatsTest, PercentilesNeedEnoughSamples) {
  BackendStats stats = MakeStats();
  for (int i = 1; i < BackendStats::kMinSamples; ++i) Call(stats, absl::OkStatus());
  EXPECT_FALSE(stats.Percentile(0.95).has_value());
  Call(stats, absl::OkStatus());
  EXPECT_TRUE(stats.Percentile(0.95).has_value());
}

TEST_F(BackendStatsTest, PercentilesFollowRecentSuccesses) {
  BackendStats stats = MakeStats();
  for (int i = 1; i <= 100; ++i) Call(stats, absl::OkStatus(), absl::Milliseconds(i));
  EXPECT_EQ(*stats.Percentile(0.95), absl::Milliseconds(95));
  EXPECT_EQ(*stats.Percentile(0.5), absl::Milliseconds(50));
  EXPECT_EQ(*stats.Percentile(0.0), absl::Milliseconds(1));
  EXPECT_EQ(*stats.Percentile(1.0), absl::Milliseconds(100));
  // Cancelled calls and failures are not latency samples.
  Call(stats, absl::CancelledError("lost the race"), absl::Seconds(10));
  Call(stats, absl::UnavailableError("down"), absl::Seconds(10));
  EXPECT_EQ(*stats.Percentile(1.0), absl::Milliseconds(100));
}

TEST_F(BackendStatsTest, EwmaMovesTowardNewSamples) {
  BackendStats stats = MakeStats();
  Call(stats, absl::OkStatus(), absl::Milliseconds(10));
  EXPECT_EQ(stats.latency_ewma(), absl::Milliseconds(10));
  Call(stats, absl::OkStatus(), absl::Milliseconds(110));
  EXPECT_EQ(stats.latency_ewma(), absl::Milliseconds(30));  // 10 + 0.2 * 100
}

TEST_F(BackendStatsTest, ConsecutiveFailuresEjectUntilProbeSucceeds) {
  BackendStats stats = MakeStats(/*failures=*/3);
  Call(stats, absl::UnavailableError("down"));
  Call(stats, absl::UnavailableError("down"));
  EXPECT_TRUE(stats.Admissible());
  Call(stats, absl::DeadlineExceededError("slow"));
  EXPECT_FALSE(stats.Admissible());
  EXPECT_TRUE(stats.Snapshot().ejected);
  clock_.Advance(absl::Seconds(5));
  EXPECT_TRUE(stats.Admissible());  // one probe may go
  BackendPass probe = stats.Admit();
  EXPECT_TRUE(probe.probe());
  EXPECT_FALSE(stats.Admissible());  // reserved at selection: nothing else
  BackendCall call = std::move(probe).Start(1);
  EXPECT_FALSE(stats.Admit().admitted());  // while it is in flight, nothing else
  std::move(call).Finish(absl::OkStatus(), absl::Milliseconds(1), Attribution::kBackend);
  EXPECT_TRUE(stats.Admissible());
  EXPECT_FALSE(stats.Snapshot().ejected);
  EXPECT_EQ(stats.Snapshot().consecutive_failures, 0);
}

TEST_F(BackendStatsTest, FailedProbeDoublesEjectionUpToMax) {
  BackendStats stats = MakeStats(/*failures=*/1);
  Call(stats, absl::UnavailableError("down"));
  clock_.Advance(absl::Seconds(5));
  Call(stats, absl::UnavailableError("still down"));  // failed probe: 10 s
  clock_.Advance(absl::Seconds(9));
  EXPECT_FALSE(stats.Admissible());
  clock_.Advance(absl::Seconds(1));
  EXPECT_TRUE(stats.Admissible());
  Call(stats, absl::UnavailableError("still down"));  // 20 s, capped at 12 s
  clock_.Advance(absl::Seconds(11));
  EXPECT_FALSE(stats.Admissible());
  clock_.Advance(absl::Seconds(1));
  EXPECT_TRUE(stats.Admissible());
}

TEST_F(BackendStatsTest, CallerErrorsAndCancellationsDoNotEject) {
  BackendStats stats = MakeStats(/*failures=*/2);
  Call(stats, absl::UnavailableError("down"));
  Call(stats, absl::InvalidArgumentError("bad request"));  // an answer: resets the run
  Call(stats, absl::UnavailableError("down"));
  Call(stats, absl::CancelledError("lost the race"));
  EXPECT_TRUE(stats.Admissible());
  EXPECT_EQ(stats.Snapshot().failures, 2);
}

TEST_F(BackendStatsTest, LocalDeadlinesNeitherFailNorEject) {
  BackendStats stats = MakeStats(/*failures=*/2);
  for (int i = 0; i < 10; ++i) {
    Call(stats, absl::DeadlineExceededError("caller's deadline"), absl::Milliseconds(5),
         Attribution::kLocal);
  }
  EXPECT_TRUE(stats.Admissible());
  EXPECT_EQ(stats.Snapshot().failures, 0);
  EXPECT_EQ(stats.Snapshot().consecutive_failures, 0);
  Call(stats, absl::DeadlineExceededError("no answer in the route's budget"));
  Call(stats, absl::DeadlineExceededError("no answer in the route's budget"));
  EXPECT_FALSE(stats.Admissible());
}

TEST_F(BackendStatsTest, CancelledProbeFreesTheProbeSlot) {
  BackendStats stats = MakeStats(/*failures=*/1);
  Call(stats, absl::UnavailableError("down"));
  clock_.Advance(absl::Seconds(5));
  BackendCall probe = stats.Admit().Start(1);
  ASSERT_TRUE(probe.probe());
  EXPECT_FALSE(stats.Admissible());
  std::move(probe).Finish(absl::CancelledError("lost the race"), absl::Milliseconds(1),
                          Attribution::kLocal);
  EXPECT_TRUE(stats.Admissible());
  EXPECT_TRUE(stats.Snapshot().ejected);
}

TEST_F(BackendStatsTest, UnusedProbePassGivesTheSlotBack) {
  BackendStats stats = MakeStats(/*failures=*/1);
  Call(stats, absl::UnavailableError("down"));
  clock_.Advance(absl::Seconds(5));
  {
    BackendPass probe = stats.Admit();
    ASSERT_TRUE(probe.probe());
    EXPECT_FALSE(stats.Admit().admitted());  // one probe at a time
  }                                          // selection picked another backend
  BackendPass next = stats.Admit();
  EXPECT_TRUE(next.probe());
}

TEST_F(BackendStatsTest, OnlyTheProbeCallReadmits) {
  BackendStats stats = MakeStats(/*failures=*/1);
  // Started while admitted; still in flight when the backend is ejected.
  BackendCall early = stats.Admit().Start(1);
  Call(stats, absl::UnavailableError("down"));
  ASSERT_TRUE(stats.Snapshot().ejected);
  clock_.Advance(absl::Seconds(5));
  BackendCall probe = stats.Admit().Start(1);
  ASSERT_TRUE(probe.probe());
  // The early call answers: not the probe, so it neither re-admits ...
  std::move(early).Finish(absl::OkStatus(), absl::Milliseconds(1), Attribution::kBackend);
  EXPECT_TRUE(stats.Snapshot().ejected);
  EXPECT_TRUE(stats.Snapshot().probe_reserved);
  // ... nor, failing, re-ejects: the probe decides.
  BackendCall unchecked = stats.Unchecked().Start(1);
  EXPECT_FALSE(unchecked.probe());
  std::move(unchecked).Finish(absl::UnavailableError("down"), absl::Milliseconds(1),
                              Attribution::kBackend);
  EXPECT_EQ(stats.Snapshot().ejected_until, clock_.Now());  // not renewed
  std::move(probe).Finish(absl::OkStatus(), absl::Milliseconds(1), Attribution::kBackend);
  EXPECT_FALSE(stats.Snapshot().ejected);
}

TEST_F(BackendStatsTest, EjectionBudgetKeepsMostBackendsInSelection) {
  EjectionBudget budget(/*backends=*/4, /*max_percent=*/50);
  EXPECT_EQ(budget.limit(), 2);
  std::vector<std::unique_ptr<BackendStats>> backends;
  for (int i = 0; i < 4; ++i) {
    backends.push_back(
        std::make_unique<BackendStats>(&clock_,
                                       EjectionConfig{.consecutive_failures = 1,
                                                      .base_ejection = absl::Seconds(5),
                                                      .max_ejection = absl::Seconds(12)},
                                       &budget));
  }
  for (auto& stats : backends) Call(*stats, absl::UnavailableError("down"));
  int ejected = 0;
  for (auto& stats : backends) ejected += stats->Snapshot().ejected;
  EXPECT_EQ(ejected, 2);
  EXPECT_EQ(budget.ejected(), 2);
  // A probe that succeeds gives its slot back; the next failing backend takes it.
  clock_.Advance(absl::Seconds(5));
  Call(*backends[0], absl::OkStatus());
  EXPECT_FALSE(backends[0]->Snapshot().ejected);
  EXPECT_EQ(budget.ejected(), 1);
  Call(*backends[3], absl::UnavailableError("down"));
  EXPECT_TRUE(backends[3]->Snapshot().ejected);
  EXPECT_EQ(budget.ejected(), 2);
}

TEST(EjectionBudgetTest, LimitRoundsDownButAllowsOne) {
  EXPECT_EQ(EjectionBudget(3, 50).limit(), 1);
  EXPECT_EQ(EjectionBudget(1, 10).limit(), 1);
  EXPECT_EQ(EjectionBudget(10, 10).limit(), 1);
  EXPECT_EQ(EjectionBudget(10, 35).limit(), 3);
  EXPECT_EQ(EjectionBudget(5, 100).limit(), 5);
  EXPECT_EQ(EjectionBudget(5, 0).limit(), 0);
  EjectionBudget none(5, 0);
  EXPECT_FALSE(none.TryTake());
}

TEST_F(BackendStatsTest, ZeroThresholdNeverEjects) {
  BackendStats stats = MakeStats(/*failures=*/0);
  for (int i = 0; i < 50; ++i) Call(stats, absl::UnavailableError("down"));
  EXPECT_TRUE(stats.Admissible());
}

}  // namespace
}  // namespace fanout::router
