// A log-bucketed latency histogram in the style of HdrHistogram: constant
// memory, O(1) recording, and percentiles within a bounded relative error.
#ifndef FANOUT_BENCH_HISTOGRAM_H_
#define FANOUT_BENCH_HISTOGRAM_H_

#include <cstdint>
#include <vector>

namespace fanout::bench {

// Records non-negative integers (nanoseconds, by convention). Values below
// 2^kSubBucketBits are kept exactly; above, each power of two is split into
// 2^kSubBucketBits equal buckets, so a reported percentile is within
// kRelativeError of a recorded value of the same rank. Values above kMaxValue
// are recorded as kMaxValue. min() and max() are exact.
//
// Not thread-safe: give each recording thread its own, or lock, and Merge.
class LatencyHistogram {
 public:
  static constexpr int kSubBucketBits = 7;
  static constexpr int kMaxValueBits = 40;  // about 18 minutes in nanoseconds
  static constexpr uint64_t kMaxValue = (uint64_t{1} << kMaxValueBits) - 1;
  // Reported values are bucket midpoints: half a bucket's width at most.
  static constexpr double kRelativeError = 1.0 / (uint64_t{2} << kSubBucketBits);

  LatencyHistogram();

  void Record(uint64_t value);
  // Adds every value recorded in `other`.
  void Merge(const LatencyHistogram& other);

  uint64_t count() const { return count_; }
  // 0 when empty.
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  double mean() const;

  // The nearest-rank percentile: the smallest recorded value v such that at
  // least p% of the values are <= v, up to kRelativeError, and clamped to
  // [min(), max()]. `p` is clamped to [0, 100]; Percentile(0) is min(),
  // Percentile(100) is max(). 0 when empty.
  uint64_t Percentile(double p) const;

  // Bucket arithmetic, exposed for tests.
  static int BucketOf(uint64_t value);
  static uint64_t BucketLow(int bucket);    // smallest value in the bucket
  static uint64_t BucketWidth(int bucket);  // number of values in the bucket

 private:
  static constexpr int kSubBuckets = 1 << kSubBucketBits;
  static constexpr int kBuckets = (kMaxValueBits - kSubBucketBits + 1) * kSubBuckets;

  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  uint64_t min_ = 0;
  uint64_t max_ = 0;
  // Exact sum, for the mean (2^64 ns is 584 years of latency).
  uint64_t sum_ = 0;
};

}  // namespace fanout::bench

#endif  // FANOUT_BENCH_HISTOGRAM_H_
