#include "bench/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace fanout::bench {

LatencyHistogram::LatencyHistogram() : counts_(kBuckets, 0) {}

int LatencyHistogram::BucketOf(uint64_t value) {
  value = std::min(value, kMaxValue);
  if (value < kSubBuckets) return static_cast<int>(value);
  const int top_bit = 63 - std::countl_zero(value);  // >= kSubBucketBits
  const int shift = top_bit - kSubBucketBits;
  // (value >> shift) is in [kSubBuckets, 2 * kSubBuckets).
  return (shift + 1) * kSubBuckets + static_cast<int>((value >> shift) - kSubBuckets);
}

uint64_t LatencyHistogram::BucketLow(int bucket) {
  if (bucket < kSubBuckets) return static_cast<uint64_t>(bucket);
  const int shift = bucket / kSubBuckets - 1;
  const uint64_t sub = static_cast<uint64_t>(bucket % kSubBuckets);
  return (kSubBuckets + sub) << shift;
}

uint64_t LatencyHistogram::BucketWidth(int bucket) {
  if (bucket < kSubBuckets) return 1;
  return uint64_t{1} << (bucket / kSubBuckets - 1);
}

void LatencyHistogram::Record(uint64_t value) {
  value = std::min(value, kMaxValue);
  ++counts_[BucketOf(value)];
  if (count_ == 0 || value < min_) min_ = value;
  if (value > max_) max_ = value;
  ++count_;
  sum_ += value;
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  if (other.count_ == 0) return;
  for (int i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
  if (count_ == 0 || other.min_ < min_) min_ = other.min_;
  max_ = std::max(max_, other.max_);
  count_ += other.count_;
  sum_ += other.sum_;
}

double LatencyHistogram::mean() const {
  return count_ == 0 ? 0.0 : static_cast<double>(sum_) / static_cast<double>(count_);
}

uint64_t LatencyHistogram::Percentile(double p) const {
  if (count_ == 0) return 0;
  p = std::clamp(p, 0.0, 100.0);
  // Nearest rank, 1-based. The epsilon keeps 99.9% of 1000 at rank 999
  // despite 99.9 having no exact binary form.
  const double exact_rank = p * static_cast<double>(count_) / 100.0;
  const uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(exact_rank - 1e-9)));
  if (rank >= count_) return max_;
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      const uint64_t mid = BucketLow(i) + (BucketWidth(i) - 1) / 2;
      return std::clamp(mid, min_, max_);
    }
  }
  return max_;
}

}  // namespace fanout::bench
