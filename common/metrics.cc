#include "common/metrics.h"

#include <algorithm>

#include "common/log.h"

namespace fanout {
namespace {

std::vector<int64_t> ToNanos(const std::vector<absl::Duration>& bounds) {
  std::vector<int64_t> out;
  out.reserve(bounds.size());
  for (absl::Duration b : bounds) out.push_back(absl::ToInt64Nanoseconds(b));
  return out;
}

const char* KindName(MetricKind kind) {
  switch (kind) {
    case MetricKind::kCounter:
      return "counter";
    case MetricKind::kGauge:
      return "gauge";
    case MetricKind::kHistogram:
      return "histogram";
  }
  return "metric";
}

template <typename T, typename... Args>
T* SeriesOf(std::map<MetricLabels, std::unique_ptr<T>>& series, const MetricLabels& labels,
            Args&&... args) {
  std::unique_ptr<T>& s = series[labels];
  if (s == nullptr) s = std::make_unique<T>(std::forward<Args>(args)...);
  return s.get();
}

}  // namespace

Histogram::Histogram(const std::vector<absl::Duration>& bounds)
    : bounds_ns_(ToNanos(bounds)),
      counts_(std::make_unique<std::atomic<uint64_t>[]>(bounds.size() + 1)) {}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.bounds.reserve(bounds_ns_.size());
  for (int64_t b : bounds_ns_) s.bounds.push_back(absl::Nanoseconds(b));
  s.counts.resize(bounds_ns_.size() + 1);
  for (size_t i = 0; i < s.counts.size(); ++i) {
    s.counts[i] = counts_[i].load(std::memory_order_relaxed);
    s.count += s.counts[i];
  }
  s.sum = absl::Nanoseconds(sum_ns_.load(std::memory_order_relaxed));
  return s;
}

const std::vector<absl::Duration>& LatencyBuckets() {
  static const std::vector<absl::Duration>* const kBuckets = new std::vector<absl::Duration>{
      absl::Microseconds(50),  absl::Microseconds(100), absl::Microseconds(250),
      absl::Microseconds(500), absl::Milliseconds(1),   absl::Milliseconds(2.5),
      absl::Milliseconds(5),   absl::Milliseconds(10),  absl::Milliseconds(25),
      absl::Milliseconds(50),  absl::Milliseconds(100), absl::Milliseconds(250),
      absl::Milliseconds(500), absl::Seconds(1),        absl::Seconds(2.5),
      absl::Seconds(5),        absl::Seconds(10),       absl::Seconds(30)};
  return *kBuckets;
}

Metrics* DiscardMetrics() {
  static MetricRegistry* const discard = new MetricRegistry();
  return discard;
}

CounterVec::CounterVec(Metrics* metrics, std::string name, std::string help, MetricLabels labels,
                       std::string label, std::vector<std::string> values)
    : metrics_(metrics),
      name_(std::move(name)),
      help_(std::move(help)),
      labels_(std::move(labels)),
      label_(std::move(label)),
      values_(std::move(values)),
      made_(std::make_unique<std::atomic<Counter*>[]>(values_.size())) {}

Counter* CounterVec::Make(size_t index) {
  MetricLabels labels = labels_;
  labels.emplace_back(label_, values_[index]);
  // The Metrics hands out the same series for the same labels, so threads
  // racing here store the same pointer.
  Counter* c = metrics_->GetCounter(name_, help_, labels);
  made_[index].store(c, std::memory_order_release);
  return c;
}

MetricRegistry::Family* MetricRegistry::FamilyLocked(absl::string_view name, absl::string_view help,
                                                     MetricKind kind,
                                                     const std::vector<absl::Duration>& bounds) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    Family f;
    f.kind = kind;
    f.help = std::string(help);
    f.bounds = bounds;
    return &families_.emplace(std::string(name), std::move(f)).first->second;
  }
  Family& f = it->second;
  if (f.kind == kind && (kind != MetricKind::kHistogram || f.bounds == bounds)) return &f;
  auto [stray, made] = strays_.try_emplace({std::string(name), kind});
  if (made) {
    stray->second.kind = kind;
    FANOUT_LOG(ERROR) << "metrics: " << name << " is a " << KindName(f.kind)
                      << (f.kind == kind ? " with other buckets" : "") << ", asked for as a "
                      << KindName(kind) << "; this series is not exposed";
  }
  return nullptr;
}

Counter* MetricRegistry::GetCounter(absl::string_view name, absl::string_view help,
                                    const MetricLabels& labels) {
  absl::MutexLock l(&mu_);
  Family* f = FamilyLocked(name, help, MetricKind::kCounter, {});
  if (f == nullptr) f = &strays_[{std::string(name), MetricKind::kCounter}];
  return SeriesOf(f->counters, labels);
}

Gauge* MetricRegistry::GetGauge(absl::string_view name, absl::string_view help,
                                const MetricLabels& labels) {
  absl::MutexLock l(&mu_);
  Family* f = FamilyLocked(name, help, MetricKind::kGauge, {});
  if (f == nullptr) f = &strays_[{std::string(name), MetricKind::kGauge}];
  return SeriesOf(f->gauges, labels);
}

Histogram* MetricRegistry::GetHistogram(absl::string_view name, absl::string_view help,
                                        const MetricLabels& labels,
                                        const std::vector<absl::Duration>& bounds) {
  absl::MutexLock l(&mu_);
  Family* f = FamilyLocked(name, help, MetricKind::kHistogram, bounds);
  if (f == nullptr) f = &strays_[{std::string(name), MetricKind::kHistogram}];
  return SeriesOf(f->histograms, labels, bounds);
}

std::vector<MetricFamilySample> MetricRegistry::Read() const {
  std::vector<MetricFamilySample> out;
  absl::MutexLock l(&mu_);
  out.reserve(families_.size());
  for (const auto& [name, f] : families_) {
    MetricFamilySample family;
    family.name = name;
    family.help = f.help;
    family.kind = f.kind;
    for (const auto& [labels, c] : f.counters) {
      family.samples.push_back({labels, static_cast<double>(c->value()), {}});
    }
    for (const auto& [labels, g] : f.gauges) {
      family.samples.push_back({labels, static_cast<double>(g->value()), {}});
    }
    for (const auto& [labels, h] : f.histograms) {
      family.samples.push_back({labels, 0, h->Read()});
    }
    out.push_back(std::move(family));
  }
  return out;
}

}  // namespace fanout
