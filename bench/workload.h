// The random parts of a load: which keys are read, and when calls arrive.
// Both are deterministic for a given seed.
#ifndef FANOUT_BENCH_WORKLOAD_H_
#define FANOUT_BENCH_WORKLOAD_H_

#include <atomic>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace fanout::bench {

// Draws key indexes in [0, keys) with Zipf popularity: index i is drawn with
// probability proportional to 1 / (i + 1)^skew (skew 0 = uniform).
// Not thread-safe.
class ZipfDistribution {
 public:
  ZipfDistribution(int keys, double skew);
  int Next(std::mt19937_64& rng);
  // The probability of index i, for tests.
  double Probability(int i) const;

 private:
  std::vector<double> cdf_;  // cdf_[i] = P(index <= i)
};

// A precomputed cycle of keys drawn from a ZipfDistribution, handed out
// lock-free: the generator's own cost stays out of the measurement.
// Thread-safe.
class KeySequence {
 public:
  // Keys are prefix + index. `length` draws are precomputed (rounded up to a
  // power of two); the sequence then repeats.
  KeySequence(const std::string& prefix, int keys, double skew, uint64_t seed,
              int length = 1 << 16);
  const std::string& Next();
  const std::string& Key(int index) const { return names_[index]; }

 private:
  std::vector<std::string> names_;
  std::vector<int> draws_;
  std::atomic<uint64_t> next_{0};
};

// A precomputed cycle of indexes drawn in proportion to `weights`, handed
// out lock-free like KeySequence: call k gets the k-th draw, so two runs
// with the same seed see the same sequence in the same order of sends.
// Thread-safe.
class WeightedSequence {
 public:
  // `weights` not empty, each >= 0, some > 0. `length` draws are
  // precomputed (rounded up to a power of two); the sequence then repeats.
  WeightedSequence(const std::vector<double>& weights, uint64_t seed, int length = 1 << 16);
  // An index into `weights`.
  int Next();

 private:
  std::vector<int> draws_;
  std::atomic<uint64_t> next_{0};
};

// Arrival times of a Poisson process: exponentially distributed gaps with
// mean 1/rate. Not thread-safe.
class PoissonSchedule {
 public:
  // `rate` in calls per second, > 0.
  PoissonSchedule(double rate, uint64_t seed);
  // The gap to the next arrival, in nanoseconds (>= 0).
  int64_t NextGapNanos();

 private:
  std::mt19937_64 rng_;
  std::exponential_distribution<double> gap_seconds_;
};

}  // namespace fanout::bench

#endif  // FANOUT_BENCH_WORKLOAD_H_
