#include "bench/workload.h"

#include <cmath>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace fanout::bench {
namespace {

TEST(PoissonScheduleTest, NextGapNanosMeanMatchesRate) {
  constexpr double kRate = 1000;  // calls per second: 1ms mean gap
  constexpr int kGaps = 200000;
  PoissonSchedule schedule(kRate, /*seed=*/42);
  double sum = 0, sum_sq = 0;
  for (int i = 0; i < kGaps; ++i) {
    const double gap = static_cast<double>(schedule.NextGapNanos());
    ASSERT_GE(gap, 0);
    sum += gap;
    sum_sq += gap * gap;
  }
  const double mean = sum / kGaps;
  const double stddev = std::sqrt(sum_sq / kGaps - mean * mean);
  const double achieved_rate = 1e9 / mean;
  EXPECT_NEAR(achieved_rate, kRate, kRate * 0.01);
  // Exponential gaps: the standard deviation equals the mean, unlike a
  // fixed-interval schedule's zero.
  EXPECT_NEAR(stddev / mean, 1.0, 0.02);
}

TEST(PoissonScheduleTest, NextGapNanosRepeatsForTheSameSeed) {
  PoissonSchedule a(5000, 3), b(5000, 3), c(5000, 4);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const int64_t ga = a.NextGapNanos();
    EXPECT_EQ(ga, b.NextGapNanos());
    differs |= ga != c.NextGapNanos();
  }
  EXPECT_TRUE(differs);
}

TEST(ZipfDistributionTest, ProbabilityWithZeroSkewIsUniform) {
  ZipfDistribution d(8, 0);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(d.Probability(i), 1.0 / 8, 1e-12);
}

TEST(ZipfDistributionTest, ProbabilityFollowsPowerLaw) {
  ZipfDistribution d(100, 1.2);
  EXPECT_NEAR(d.Probability(0) / d.Probability(9), std::pow(10.0, 1.2), 1e-9);
  double total = 0;
  for (int i = 0; i < 100; ++i) total += d.Probability(i);
  EXPECT_NEAR(total, 1.0, 1e-12);
}

TEST(ZipfDistributionTest, NextDrawsMatchProbabilities) {
  ZipfDistribution d(1000, 0.99);
  std::mt19937_64 rng(11);
  std::vector<int> hits(1000, 0);
  constexpr int kDraws = 400000;
  for (int i = 0; i < kDraws; ++i) {
    const int k = d.Next(rng);
    ASSERT_GE(k, 0);
    ASSERT_LT(k, 1000);
    ++hits[k];
  }
  for (int k : {0, 1, 9}) {
    const double p = d.Probability(k);
    EXPECT_NEAR(static_cast<double>(hits[k]) / kDraws, p, 0.05 * p) << "key " << k;
  }
}

TEST(KeySequenceTest, NextCoversEveryKeyWhenUniform) {
  KeySequence keys("k", 10, /*skew=*/0, /*seed=*/1, /*length=*/1000);
  EXPECT_EQ(keys.Key(7), "k7");
  std::set<std::string> seen;
  for (int i = 0; i < 1024; ++i) seen.insert(keys.Next());
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_TRUE(seen.contains("k0"));
  EXPECT_TRUE(seen.contains("k9"));
}

TEST(KeySequenceTest, NextRepeatsAfterItsLength) {
  KeySequence keys("k", 1000, 0, 1, /*length=*/64);
  std::vector<std::string> first;
  for (int i = 0; i < 64; ++i) first.push_back(keys.Next());
  for (int i = 0; i < 64; ++i) EXPECT_EQ(keys.Next(), first[i]);
}

TEST(WeightedSequenceTest, NextDrawsInProportionToWeights) {
  WeightedSequence seq({5, 0, 3, 2}, /*seed=*/7, /*length=*/1 << 14);
  std::vector<int> counts(4, 0);
  for (int i = 0; i < (1 << 14); ++i) ++counts[seq.Next()];
  EXPECT_EQ(counts[1], 0);
  EXPECT_NEAR(counts[0] / 16384.0, 0.5, 0.02);
  EXPECT_NEAR(counts[2] / 16384.0, 0.3, 0.02);
  EXPECT_NEAR(counts[3] / 16384.0, 0.2, 0.02);
}

TEST(WeightedSequenceTest, NextIsTheSameForTheSameSeed) {
  WeightedSequence a({1, 1, 1}, 3, 256);
  WeightedSequence b({1, 1, 1}, 3, 256);
  WeightedSequence c({1, 1, 1}, 4, 256);
  int differ = 0;
  for (int i = 0; i < 256; ++i) {
    const int x = a.Next();
    EXPECT_EQ(x, b.Next());
    differ += x != c.Next();
  }
  EXPECT_GT(differ, 0);
}

}  // namespace
}  // namespace fanout::bench
