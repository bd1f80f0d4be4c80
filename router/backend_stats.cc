#include "router/backend_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

namespace fanout::router {

bool IsBackendFailure(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kDataLoss:
      return true;
    default:
      return false;
  }
}

int64_t SaturatingAdd(int64_t a, int64_t b) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  return a > kMax - b ? kMax : a + b;
}

EjectionBudget::EjectionBudget(int backends, int max_percent)
    : limit_(max_percent <= 0 ? 0 : std::max(1, backends * std::min(max_percent, 100) / 100)) {}

bool EjectionBudget::TryTake() {
  int ejected = ejected_.load(std::memory_order_relaxed);
  do {
    if (ejected >= limit_) return false;
  } while (!ejected_.compare_exchange_weak(ejected, ejected + 1, std::memory_order_relaxed));
  return true;
}

void EjectionBudget::Give() { ejected_.fetch_sub(1, std::memory_order_relaxed); }

BackendCall::BackendCall(BackendCall&& other) noexcept
    : stats_(std::exchange(other.stats_, nullptr)),
      cost_(other.cost_),
      probe_(std::exchange(other.probe_, 0)) {}

BackendCall& BackendCall::operator=(BackendCall&& other) noexcept {
  if (this != &other) {
    BackendCall doomed(std::move(*this));
    stats_ = std::exchange(other.stats_, nullptr);
    cost_ = other.cost_;
    probe_ = std::exchange(other.probe_, 0);
  }
  return *this;
}

BackendCall::~BackendCall() {
  if (stats_ != nullptr) {
    stats_->OnFinish(cost_, probe_, absl::CancelledError("call dropped without an answer"),
                     absl::ZeroDuration(), Attribution::kLocal);
  }
}

void BackendCall::Finish(const absl::Status& status, absl::Duration latency,
                         Attribution attribution) && {
  BackendStats* stats = std::exchange(stats_, nullptr);
  if (stats != nullptr) stats->OnFinish(cost_, probe_, status, latency, attribution);
}

BackendPass::BackendPass(BackendPass&& other) noexcept
    : stats_(std::exchange(other.stats_, nullptr)), probe_(std::exchange(other.probe_, 0)) {}

BackendPass& BackendPass::operator=(BackendPass&& other) noexcept {
  if (this != &other) {
    BackendPass doomed(std::move(*this));
    stats_ = std::exchange(other.stats_, nullptr);
    probe_ = std::exchange(other.probe_, 0);
  }
  return *this;
}

BackendPass::~BackendPass() {
  if (stats_ != nullptr && probe_ != 0) stats_->ReleaseProbe(probe_);
}

BackendCall BackendPass::Start(int64_t cost) && {
  BackendStats* stats = std::exchange(stats_, nullptr);
  const uint64_t probe = std::exchange(probe_, 0);
  if (stats == nullptr) return BackendCall();
  cost = std::max<int64_t>(cost, 0);
  stats->OnStart(cost);
  return BackendCall(stats, cost, probe);
}

BackendStats::BackendStats(Clock* clock, EjectionConfig ejection, EjectionBudget* budget,
                           Counter* ejections)
    : clock_(clock), ejection_(ejection), budget_(budget), ejections_(ejections) {
  absl::MutexLock l(&mu_);
  samples_us_.reserve(kLatencySamples);
}

BackendPass BackendStats::Admit() {
  const absl::Time now = clock_->Now();
  absl::MutexLock l(&mu_);
  if (!ejected_) return BackendPass(this, 0);
  if (now < ejected_until_ || probe_ != 0) return BackendPass();
  probe_ = ++last_probe_;
  return BackendPass(this, probe_);
}

BackendPass BackendStats::Unchecked() { return BackendPass(this, 0); }

bool BackendStats::Admissible() const {
  const absl::Time now = clock_->Now();
  absl::MutexLock l(&mu_);
  if (!ejected_) return true;
  return now >= ejected_until_ && probe_ == 0;
}

void BackendStats::ReleaseProbe(uint64_t probe) {
  absl::MutexLock l(&mu_);
  if (probe_ == probe) probe_ = 0;
}

void BackendStats::OnStart(int64_t cost) {
  absl::MutexLock l(&mu_);
  ++in_flight_;
  in_flight_cost_ = SaturatingAdd(in_flight_cost_, cost);
}

void BackendStats::OnFinish(int64_t cost, uint64_t probe, const absl::Status& status,
                            absl::Duration latency, Attribution attribution) {
  const absl::Time now = clock_->Now();
  absl::MutexLock l(&mu_);
  --in_flight_;
  // After a saturated sum this undercounts; it never goes negative, and it
  // is exact again once nothing is in flight.
  in_flight_cost_ = in_flight_ == 0 ? 0 : std::max<int64_t>(in_flight_cost_ - cost, 0);
  ++calls_;
  // Only the call holding the current probe token decides re-admission.
  const bool is_probe = probe != 0 && probe == probe_;
  if (is_probe) probe_ = 0;  // the slot is free again, whatever the outcome
  if (attribution == Attribution::kLocal || status.code() == absl::StatusCode::kCancelled) {
    return;  // inconclusive: another call may probe
  }
  if (IsBackendFailure(status.code())) {
    ++failures_;
    ++consecutive_failures_;
    if (is_probe && ejected_) {
      EjectLocked(now, /*renew=*/true);
    } else if (!ejected_ && ejection_.consecutive_failures > 0 &&
               consecutive_failures_ >= ejection_.consecutive_failures) {
      EjectLocked(now, /*renew=*/false);
    }
    return;
  }
  // The backend answered (a caller error is an answer too).
  consecutive_failures_ = 0;
  if (is_probe && ejected_) {
    ejected_ = false;
    ejections_in_row_ = 0;
    ejected_until_ = absl::InfinitePast();
    if (budget_ != nullptr) budget_->Give();
  }
  if (!status.ok()) return;
  const double us = absl::ToDoubleMicroseconds(latency);
  ewma_us_ = has_ewma_ ? ewma_us_ + kEwmaWeight * (us - ewma_us_) : us;
  has_ewma_ = true;
  const int64_t sample = absl::ToInt64Microseconds(latency);
  if (samples_us_.size() < static_cast<size_t>(kLatencySamples)) {
    samples_us_.push_back(sample);
  } else {
    samples_us_[next_sample_] = sample;
  }
  next_sample_ = (next_sample_ + 1) % kLatencySamples;
}

void BackendStats::EjectLocked(absl::Time now, bool renew) {
  // A route keeps most of its backends: past the budget, a failing backend
  // stays in selection (and tries again at its next failure).
  if (!renew && budget_ != nullptr && !budget_->TryTake()) return;
  ejected_ = true;
  ++ejections_in_row_;
  if (ejections_ != nullptr) ejections_->Increment();
  absl::Duration period = ejection_.base_ejection;
  for (int i = 1; i < ejections_in_row_ && period < ejection_.max_ejection; ++i) period *= 2;
  ejected_until_ = now + std::min(period, ejection_.max_ejection);
}

void BackendStats::OnRace(bool won) {
  absl::MutexLock l(&mu_);
  ++races_;
  if (won) ++wins_;
}

int64_t BackendStats::in_flight() const {
  absl::MutexLock l(&mu_);
  return in_flight_;
}

int64_t BackendStats::in_flight_cost() const {
  absl::MutexLock l(&mu_);
  return in_flight_cost_;
}

absl::Duration BackendStats::latency_ewma() const {
  absl::MutexLock l(&mu_);
  return absl::Microseconds(std::llround(ewma_us_));
}

std::optional<absl::Duration> BackendStats::Percentile(double q) const {
  absl::MutexLock l(&mu_);
  return PercentileLocked(q);
}

std::optional<absl::Duration> BackendStats::PercentileLocked(double q) const {
  if (samples_us_.size() < static_cast<size_t>(kMinSamples)) return std::nullopt;
  std::vector<int64_t> sorted = samples_us_;
  // Nearest rank: the smallest sample with at least q of the samples at or below it.
  size_t k = static_cast<size_t>(std::ceil(std::clamp(q, 0.0, 1.0) * sorted.size()));
  const size_t rank = std::min(std::max<size_t>(k, 1), sorted.size()) - 1;
  std::nth_element(sorted.begin(), sorted.begin() + rank, sorted.end());
  return absl::Microseconds(sorted[rank]);
}

BackendSnapshot BackendStats::Snapshot() const {
  absl::MutexLock l(&mu_);
  BackendSnapshot s;
  s.in_flight = in_flight_;
  s.in_flight_cost = in_flight_cost_;
  s.calls = calls_;
  s.failures = failures_;
  s.races = races_;
  s.wins = wins_;
  s.consecutive_failures = consecutive_failures_;
  s.latency_ewma = absl::Microseconds(std::llround(ewma_us_));
  s.p50 = PercentileLocked(0.50).value_or(absl::ZeroDuration());
  s.p95 = PercentileLocked(0.95).value_or(absl::ZeroDuration());
  s.p99 = PercentileLocked(0.99).value_or(absl::ZeroDuration());
  s.ejected = ejected_;
  s.ejected_until = ejected_until_;
  s.probe_reserved = probe_ != 0;
  return s;
}

}  // namespace fanout::router
