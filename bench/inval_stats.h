// Exact percentiles of a few thousand delays, as the invalidation benches
// (bench/run_inval.sh) print them: one JSON member per measure.
#ifndef FANOUT_BENCH_INVAL_STATS_H_
#define FANOUT_BENCH_INVAL_STATS_H_

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace fanout::bench {

struct DelaySummary {
  size_t n = 0;
  double p50 = 0, p99 = 0, max = 0;
};

// Nearest-rank p50 and p99 (rounded to the closest rank) and the max of `v`.
inline DelaySummary Summarize(std::vector<double> v) {
  DelaySummary s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
  };
  s.p50 = at(0.50);
  s.p99 = at(0.99);
  s.max = v.back();
  return s;
}

// `"name": {"n": .., "p50_ms": .., "p99_ms": .., "max_ms": ..}` of `v` (in ms).
inline std::string DelayJson(const std::string& name, const std::vector<double>& v) {
  const DelaySummary s = Summarize(v);
  return absl::StrCat("\"", name, "\": {\"n\": ", s.n, ", \"p50_ms\": ", s.p50,
                      ", \"p99_ms\": ", s.p99, ", \"max_ms\": ", s.max, "}");
}

}  // namespace fanout::bench

#endif  // FANOUT_BENCH_INVAL_STATS_H_
