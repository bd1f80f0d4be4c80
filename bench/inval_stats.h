// Exact percentiles of a few thousand delays, as the invalidation benches
// (bench/run_inval.sh) print them: one JSON member per measure.
#ifndef FANOUT_BENCH_INVAL_STATS_H_
#define FANOUT_BENCH_INVAL_STATS_H_

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

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

// `text` as a JSON string, quotes included.
inline std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// Failed calls counted by code and message, for the benches' JSON. Not
// thread-safe.
class ErrorCounts {
 public:
  void Add(const absl::Status& status) {
    ++counts_[absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message())];
  }
  int total() const {
    int n = 0;
    for (const auto& [text, count] : counts_) n += count;
    return n;
  }
  // `{"CODE: message": count, ...}`.
  std::string Json() const {
    std::string out = "{";
    for (const auto& [text, count] : counts_) {
      absl::StrAppend(&out, out.size() > 1 ? ", " : "", JsonString(text), ": ", count);
    }
    return out + "}";
  }

 private:
  std::map<std::string, int> counts_;
};

}  // namespace fanout::bench

#endif  // FANOUT_BENCH_INVAL_STATS_H_
