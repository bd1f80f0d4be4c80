#include "bench/histogram.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace fanout::bench {
namespace {

// The exact nearest-rank percentile of `sorted`.
uint64_t ExactPercentile(const std::vector<uint64_t>& sorted, double p) {
  const size_t rank = std::max<size_t>(
      1, static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size()) / 100.0 - 1e-9)));
  return sorted[std::min(rank, sorted.size()) - 1];
}

TEST(LatencyHistogramTest, BucketsAreContiguousAndEachValueMapsToItsBucket) {
  const int last = LatencyHistogram::BucketOf(LatencyHistogram::kMaxValue);
  for (int i = 0; i < last; ++i) {
    const uint64_t low = LatencyHistogram::BucketLow(i);
    const uint64_t width = LatencyHistogram::BucketWidth(i);
    ASSERT_EQ(low + width, LatencyHistogram::BucketLow(i + 1)) << "bucket " << i;
    ASSERT_EQ(LatencyHistogram::BucketOf(low), i);
    ASSERT_EQ(LatencyHistogram::BucketOf(low + width - 1), i);
    // Width bounds the relative error.
    ASSERT_LE(static_cast<double>(width) / 2,
              std::max(1.0, static_cast<double>(low) * LatencyHistogram::kRelativeError));
  }
}

TEST(LatencyHistogramTest, PercentileOfSmallValuesIsExact) {
  LatencyHistogram h;
  for (uint64_t v = 100; v >= 1; --v) h.Record(v);
  EXPECT_EQ(h.count(), 100u);
  EXPECT_EQ(h.Percentile(0), 1u);
  EXPECT_EQ(h.Percentile(1), 1u);
  EXPECT_EQ(h.Percentile(50), 50u);
  EXPECT_EQ(h.Percentile(90), 90u);
  EXPECT_EQ(h.Percentile(99), 99u);
  EXPECT_EQ(h.Percentile(99.5), 100u);
  EXPECT_EQ(h.Percentile(100), 100u);
  EXPECT_EQ(h.min(), 1u);
  EXPECT_EQ(h.max(), 100u);
  EXPECT_DOUBLE_EQ(h.mean(), 50.5);
}

TEST(LatencyHistogramTest, PercentileUsesNearestRankOnThousandValues) {
  LatencyHistogram h;
  std::vector<uint64_t> values;
  for (uint64_t i = 1; i <= 1000; ++i) values.push_back(i * 1000);  // 1us .. 1ms
  for (uint64_t v : values) h.Record(v);
  for (double p : {50.0, 90.0, 99.0, 99.9}) {
    const double exact = static_cast<double>(ExactPercentile(values, p));
    EXPECT_NEAR(static_cast<double>(h.Percentile(p)), exact,
                exact * LatencyHistogram::kRelativeError)
        << "p" << p;
  }
  // 99.9% of 1000 is rank 999, not 1000, despite 99.9's rounding.
  EXPECT_LT(h.Percentile(99.9), 999'000u + 999'000u / 256 + 1);
  EXPECT_GT(h.Percentile(99.9), 999'000u - 999'000u / 256 - 1);
  EXPECT_EQ(h.Percentile(100), 1'000'000u);
}

TEST(LatencyHistogramTest, PercentileStaysWithinRelativeErrorOnSpreadData) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> log_value(std::log(1e3), std::log(1e10));
  LatencyHistogram h;
  std::vector<uint64_t> values;
  for (int i = 0; i < 100000; ++i) {
    const uint64_t v = static_cast<uint64_t>(std::exp(log_value(rng)));
    values.push_back(v);
    h.Record(v);
  }
  std::sort(values.begin(), values.end());
  for (double p : {0.1, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99}) {
    const double exact = static_cast<double>(ExactPercentile(values, p));
    EXPECT_NEAR(static_cast<double>(h.Percentile(p)), exact,
                exact * LatencyHistogram::kRelativeError + 0.5)
        << "p" << p;
  }
}

TEST(LatencyHistogramTest, EmptyHistogramReportsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.Percentile(50), 0u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.mean(), 0.0);
}

TEST(LatencyHistogramTest, MergeEqualsRecordingEverythingInOne) {
  LatencyHistogram a, b, all;
  for (uint64_t v = 1; v <= 5000; ++v) {
    (v % 3 == 0 ? a : b).Record(v * 37);
    all.Record(v * 37);
  }
  a.Merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  EXPECT_DOUBLE_EQ(a.mean(), all.mean());
  for (double p : {1.0, 50.0, 99.0, 99.9}) EXPECT_EQ(a.Percentile(p), all.Percentile(p));
}

TEST(LatencyHistogramTest, RecordClampsValuesAboveMax) {
  LatencyHistogram h;
  h.Record(std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(h.max(), LatencyHistogram::kMaxValue);
  EXPECT_EQ(h.Percentile(50), LatencyHistogram::kMaxValue);
}

}  // namespace
}  // namespace fanout::bench
