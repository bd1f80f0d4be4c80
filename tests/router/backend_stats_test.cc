#include "router/backend_stats.h"

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
  static void Call(BackendStats& stats, absl::Status status,
                   absl::Duration latency = absl::Milliseconds(1)) {
    stats.OnStart(1);
    stats.OnFinish(1, status, latency);
  }

  testing::FakeClock clock_;
};

TEST_F(BackendStatsTest, TracksInFlightCountAndCost) {
  BackendStats stats = MakeStats();
  stats.OnStart(100);
  stats.OnStart(7);
  EXPECT_EQ(stats.in_flight(), 2);
  EXPECT_EQ(stats.in_flight_cost(), 107);
  stats.OnFinish(100, absl::OkStatus(), absl::Milliseconds(5));
  EXPECT_EQ(stats.in_flight(), 1);
  EXPECT_EQ(stats.in_flight_cost(), 7);
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
  stats.OnStart(1);
  EXPECT_FALSE(stats.Admissible());  // while it is in flight, nothing else
  stats.OnFinish(1, absl::OkStatus(), absl::Milliseconds(1));
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

TEST_F(BackendStatsTest, CancelledProbeFreesTheProbeSlot) {
  BackendStats stats = MakeStats(/*failures=*/1);
  Call(stats, absl::UnavailableError("down"));
  clock_.Advance(absl::Seconds(5));
  stats.OnStart(1);
  EXPECT_FALSE(stats.Admissible());
  stats.OnFinish(1, absl::CancelledError("lost the race"), absl::Milliseconds(1));
  EXPECT_TRUE(stats.Admissible());
  EXPECT_TRUE(stats.Snapshot().ejected);
}

TEST_F(BackendStatsTest, ZeroThresholdNeverEjects) {
  BackendStats stats = MakeStats(/*failures=*/0);
  for (int i = 0; i < 50; ++i) Call(stats, absl::UnavailableError("down"));
  EXPECT_TRUE(stats.Admissible());
}

}  // namespace
}  // namespace fanout::router
