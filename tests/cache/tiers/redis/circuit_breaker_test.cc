#include "cache/tiers/redis/circuit_breaker.h"

#include "gtest/gtest.h"

namespace fanout::cache {
namespace {

using State = CircuitBreaker::State;
using Transition = CircuitBreaker::Transition;

CircuitBreakerOptions Options() {
  CircuitBreakerOptions o;
  o.failure_threshold = 3;
  o.close_after_successes = 2;
  o.probe_min = absl::Milliseconds(50);
  o.probe_max = absl::Milliseconds(400);
  return o;
}

TEST(CircuitBreakerTest, OpensAfterThresholdFailuresInARow) {
  CircuitBreaker b(Options());
  EXPECT_EQ(b.RecordFailure(), Transition::kNone);
  EXPECT_EQ(b.RecordFailure(), Transition::kNone);
  EXPECT_TRUE(b.Allows());
  EXPECT_EQ(b.RecordFailure(), Transition::kOpened);
  EXPECT_FALSE(b.Allows());
  EXPECT_EQ(b.state(), State::kOpen);
  EXPECT_EQ(b.opens(), 1u);
}

TEST(CircuitBreakerTest, SuccessResetsTheFailureCount) {
  CircuitBreaker b(Options());
  b.RecordFailure();
  b.RecordFailure();
  b.RecordSuccess();
  b.RecordFailure();
  b.RecordFailure();
  EXPECT_EQ(b.state(), State::kClosed);
}

TEST(CircuitBreakerTest, OnlyAProbeLeavesOpen) {
  CircuitBreaker b(Options());
  for (int i = 0; i < 3; ++i) b.RecordFailure();
  EXPECT_EQ(b.RecordSuccess(), Transition::kNone);  // a late answer
  EXPECT_EQ(b.state(), State::kOpen);
  EXPECT_EQ(b.RecordProbe(false), Transition::kNone);
  EXPECT_EQ(b.state(), State::kOpen);
  EXPECT_EQ(b.RecordProbe(true), Transition::kHalfOpened);
  EXPECT_TRUE(b.Allows());
}

TEST(CircuitBreakerTest, HalfOpenClosesAfterSuccessesAndReopensOnAnyFailure) {
  CircuitBreaker b(Options());
  for (int i = 0; i < 3; ++i) b.RecordFailure();
  b.RecordProbe(true);
  EXPECT_EQ(b.RecordFailure(), Transition::kOpened);
  EXPECT_EQ(b.opens(), 2u);
  b.RecordProbe(true);
  EXPECT_EQ(b.RecordSuccess(), Transition::kNone);
  EXPECT_EQ(b.RecordSuccess(), Transition::kClosed);
  EXPECT_EQ(b.state(), State::kClosed);
  // Closed again: the threshold counts from zero.
  b.RecordFailure();
  b.RecordFailure();
  EXPECT_EQ(b.state(), State::kClosed);
}

TEST(CircuitBreakerTest, ProbeDelayDoublesToTheMaxAndResetsWhenClosed) {
  CircuitBreaker b(Options());
  for (int i = 0; i < 3; ++i) b.RecordFailure();
  EXPECT_EQ(b.ProbeDelay(), absl::Milliseconds(50));
  EXPECT_EQ(b.ProbeDelay(), absl::Milliseconds(100));
  EXPECT_EQ(b.ProbeDelay(), absl::Milliseconds(200));
  EXPECT_EQ(b.ProbeDelay(), absl::Milliseconds(400));
  EXPECT_EQ(b.ProbeDelay(), absl::Milliseconds(400));
  b.RecordProbe(true);
  b.RecordSuccess();
  b.RecordSuccess();
  for (int i = 0; i < 3; ++i) b.RecordFailure();
  EXPECT_EQ(b.ProbeDelay(), absl::Milliseconds(50));
}

}  // namespace
}  // namespace fanout::cache
