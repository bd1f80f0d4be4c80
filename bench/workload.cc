#include "bench/workload.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace fanout::bench {

ZipfDistribution::ZipfDistribution(int keys, double skew) : cdf_(std::max(keys, 1)) {
  double total = 0;
  for (size_t i = 0; i < cdf_.size(); ++i) {
    total += 1.0 / std::pow(static_cast<double>(i + 1), skew);
    cdf_[i] = total;
  }
  for (double& c : cdf_) c /= total;
  cdf_.back() = 1.0;
}

int ZipfDistribution::Next(std::mt19937_64& rng) {
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  // The first index whose cumulative probability exceeds u.
  auto it = std::upper_bound(cdf_.begin(), cdf_.end(), u);
  if (it == cdf_.end()) --it;
  return static_cast<int>(it - cdf_.begin());
}

double ZipfDistribution::Probability(int i) const {
  return i == 0 ? cdf_[0] : cdf_[i] - cdf_[i - 1];
}

KeySequence::KeySequence(const std::string& prefix, int keys, double skew, uint64_t seed,
                         int length)
    : draws_(std::bit_ceil(static_cast<unsigned>(std::max(length, 1)))) {
  names_.reserve(keys);
  for (int i = 0; i < keys; ++i) names_.push_back(absl::StrCat(prefix, i));
  ZipfDistribution dist(keys, skew);
  std::mt19937_64 rng(seed);
  for (int& d : draws_) d = dist.Next(rng);
}

const std::string& KeySequence::Next() {
  const uint64_t n = next_.fetch_add(1, std::memory_order_relaxed);
  return names_[draws_[n & (draws_.size() - 1)]];
}

WeightedSequence::WeightedSequence(const std::vector<double>& weights, uint64_t seed, int length)
    : draws_(std::bit_ceil(static_cast<unsigned>(std::max(length, 1)))) {
  std::discrete_distribution<int> dist(weights.begin(), weights.end());
  std::mt19937_64 rng(seed);
  for (int& d : draws_) d = dist(rng);
}

int WeightedSequence::Next() {
  const uint64_t n = next_.fetch_add(1, std::memory_order_relaxed);
  return draws_[n & (draws_.size() - 1)];
}

PoissonSchedule::PoissonSchedule(double rate, uint64_t seed) : rng_(seed), gap_seconds_(rate) {}

int64_t PoissonSchedule::NextGapNanos() {
  return static_cast<int64_t>(std::llround(gap_seconds_(rng_) * 1e9));
}

}  // namespace fanout::bench
