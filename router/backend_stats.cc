#include "router/backend_stats.h"

#include <algorithm>
#include <cmath>

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

BackendStats::BackendStats(Clock* clock, EjectionConfig ejection)
    : clock_(clock), ejection_(ejection) {
  absl::MutexLock l(&mu_);
  samples_us_.reserve(kLatencySamples);
}

bool BackendStats::Admissible() const {
  const absl::Time now = clock_->Now();
  absl::MutexLock l(&mu_);
  if (!ejected_) return true;
  return now >= ejected_until_ && !probe_in_flight_;
}

void BackendStats::OnStart(int64_t cost) {
  const absl::Time now = clock_->Now();
  absl::MutexLock l(&mu_);
  ++in_flight_;
  in_flight_cost_ += cost;
  if (ejected_ && now >= ejected_until_) probe_in_flight_ = true;
}

void BackendStats::OnFinish(int64_t cost, const absl::Status& status, absl::Duration latency) {
  const absl::Time now = clock_->Now();
  absl::MutexLock l(&mu_);
  --in_flight_;
  in_flight_cost_ -= cost;
  ++calls_;
  const bool probe = ejected_ && probe_in_flight_;
  if (status.code() == absl::StatusCode::kCancelled) {
    if (probe) probe_in_flight_ = false;  // let another call probe
    return;
  }
  if (IsBackendFailure(status.code())) {
    ++failures_;
    ++consecutive_failures_;
    if (probe) {
      probe_in_flight_ = false;
      EjectLocked(now);
    } else if (!ejected_ && ejection_.consecutive_failures > 0 &&
               consecutive_failures_ >= ejection_.consecutive_failures) {
      EjectLocked(now);
    }
    return;
  }
  // The backend answered (a caller error is an answer too).
  consecutive_failures_ = 0;
  if (probe) {
    ejected_ = false;
    probe_in_flight_ = false;
    ejections_in_row_ = 0;
    ejected_until_ = absl::InfinitePast();
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

void BackendStats::EjectLocked(absl::Time now) {
  ejected_ = true;
  ++ejections_in_row_;
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
  return s;
}

}  // namespace fanout::router
