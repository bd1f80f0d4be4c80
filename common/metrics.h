// What components count, and where it goes.
//
// A component (a gRPC handler, the read path, the router) asks a Metrics for
// its series once, when it is built, and keeps the pointers: counting is
// then one relaxed atomic operation on a Counter, Gauge or Histogram, with no
// lookup by name, no lock and no allocation. Only server/ knows how series
// are exposed (Prometheus text on the admin endpoint); components see this
// interface alone.
//
// Names follow Prometheus' conventions: the fanout_ prefix, base units
// (seconds, bytes), _total for counters. Labels hold fixed words and names
// from the configuration only, never a key, a namespace or a payload, so
// that the number of series does not grow with traffic.
#ifndef FANOUT_COMMON_METRICS_H_
#define FANOUT_COMMON_METRICS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fanout {

// Label name → value, in the order given.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// A count that only grows. Thread-safe, lock-free.
class Counter final {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void Increment(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down. Thread-safe, lock-free.
class Gauge final {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Add(int64_t n) { value_.fetch_add(n, std::memory_order_relaxed); }
  void Set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// Durations counted in fixed buckets, exposed in seconds. Observe scans the
// bounds from the smallest (latencies mostly land in the first few) and
// makes two relaxed atomic adds. Thread-safe, lock-free. A snapshot taken
// while observations land may count one in a bucket and not yet in the sum.
class Histogram final {
 public:
  // `bounds`: the buckets' upper bounds, increasing; a last bucket without
  // bound (+Inf) follows them.
  explicit Histogram(const std::vector<absl::Duration>& bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void Observe(absl::Duration d) { ObserveNanos(absl::ToInt64Nanoseconds(d)); }
  void ObserveNanos(int64_t nanos) {
    size_t i = 0;
    while (i < bounds_ns_.size() && nanos > bounds_ns_[i]) ++i;
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(nanos, std::memory_order_relaxed);
  }

  struct Snapshot {
    std::vector<absl::Duration> bounds;
    std::vector<uint64_t> counts;  // per bucket (not cumulative); the last is +Inf
    uint64_t count = 0;            // the sum of `counts`
    absl::Duration sum = absl::ZeroDuration();
  };
  Snapshot Read() const;

 private:
  const std::vector<int64_t> bounds_ns_;
  const std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_ns_.size() + 1
  std::atomic<int64_t> sum_ns_{0};
};

// Latency buckets from 50µs to 30s, for calls and fetches.
const std::vector<absl::Duration>& LatencyBuckets();

// Where components report what they count. A series is a name and a set of
// labels; asking again for the same ones returns the same series, so that a
// component rebuilt on a configuration reload goes on counting where its
// predecessor stopped. Series live as long as the Metrics. A name is one
// kind of series with one help text (and, for histograms, one set of
// bounds): asking for it as another kind is a programming error, answered
// with a series of the right kind that is never exposed. Thread-safe.
class Metrics {
 public:
  virtual ~Metrics() = default;
  Metrics() = default;
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  virtual Counter* GetCounter(absl::string_view name, absl::string_view help,
                              const MetricLabels& labels = {}) = 0;
  virtual Gauge* GetGauge(absl::string_view name, absl::string_view help,
                          const MetricLabels& labels = {}) = 0;
  virtual Histogram* GetHistogram(absl::string_view name, absl::string_view help,
                                  const MetricLabels& labels,
                                  const std::vector<absl::Duration>& bounds) = 0;
};

// A Metrics whose series nobody reads: for components built without one
// (tests, tools). Process-wide; never null.
Metrics* DiscardMetrics();

// Counters of one family told apart by one label whose values are a fixed
// list (status codes, outcomes), each made on first use: a series appears
// once it has counted. Increment is an atomic load and an atomic add once
// the series exists. Thread-safe. `metrics` (not owned) must outlive this.
class CounterVec {
 public:
  CounterVec(Metrics* metrics, std::string name, std::string help, MetricLabels labels,
             std::string label, std::vector<std::string> values);
  CounterVec(const CounterVec&) = delete;
  CounterVec& operator=(const CounterVec&) = delete;

  // `index` into the values given; out of range is ignored.
  void Increment(size_t index, uint64_t n = 1) {
    if (index >= values_.size()) return;
    Counter* c = made_[index].load(std::memory_order_acquire);
    if (c == nullptr) c = Make(index);
    c->Increment(n);
  }

 private:
  Counter* Make(size_t index);

  Metrics* const metrics_;
  const std::string name_;
  const std::string help_;
  const MetricLabels labels_;
  const std::string label_;
  const std::vector<std::string> values_;
  const std::unique_ptr<std::atomic<Counter*>[]> made_;
};

enum class MetricKind { kCounter, kGauge, kHistogram };

// One series as read by MetricRegistry::Read.
struct MetricSample {
  MetricLabels labels;
  double value = 0;               // counters and gauges
  Histogram::Snapshot histogram;  // histograms
};

// One name's series as read by MetricRegistry::Read.
struct MetricFamilySample {
  std::string name;
  std::string help;
  MetricKind kind = MetricKind::kCounter;
  std::vector<MetricSample> samples;  // in label order
};

// The Metrics fanoutd runs with: keeps every series it hands out and reads
// them all for an exposition. Asking for a series takes a lock (once per
// series, when components are built); counting takes none. Thread-safe.
class MetricRegistry final : public Metrics {
 public:
  MetricRegistry() = default;

  Counter* GetCounter(absl::string_view name, absl::string_view help,
                      const MetricLabels& labels = {}) override;
  Gauge* GetGauge(absl::string_view name, absl::string_view help,
                  const MetricLabels& labels = {}) override;
  Histogram* GetHistogram(absl::string_view name, absl::string_view help,
                          const MetricLabels& labels,
                          const std::vector<absl::Duration>& bounds) override;

  // Every series, by name.
  std::vector<MetricFamilySample> Read() const;

 private:
  struct Family {
    MetricKind kind;
    std::string help;
    std::vector<absl::Duration> bounds;
    std::map<MetricLabels, std::unique_ptr<Counter>> counters;
    std::map<MetricLabels, std::unique_ptr<Gauge>> gauges;
    std::map<MetricLabels, std::unique_ptr<Histogram>> histograms;
  };
  // The family `name` of `kind`, made if need be; null when the name is
  // already taken by another kind or other bounds.
  Family* FamilyLocked(absl::string_view name, absl::string_view help, MetricKind kind,
                       const std::vector<absl::Duration>& bounds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, Family, std::less<>> families_ ABSL_GUARDED_BY(mu_);
  // Series handed out for misuse (see Metrics), by name and kind: kept,
  // never read.
  std::map<std::pair<std::string, MetricKind>, Family> strays_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fanout

#endif  // FANOUT_COMMON_METRICS_H_
