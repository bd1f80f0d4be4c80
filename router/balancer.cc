#include "router/balancer.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "router/backend_stats.h"

namespace fanout::router {
namespace {

// Fewest committed calls before their error rate counts.
constexpr int kMinErrorSamples = 10;

}  // namespace

int PickLeastLoaded(absl::Span<const LoadView> loads, int64_t cost,
                    absl::FunctionRef<size_t(size_t)> uniform) {
  int64_t best = std::numeric_limits<int64_t>::max();
  std::vector<int> tied;
  for (size_t i = 0; i < loads.size(); ++i) {
    // Saturating: a backend at the top of the range must not look idle.
    const int64_t score =
        SaturatingAdd(std::max<int64_t>(loads[i].in_flight_cost, 0), std::max<int64_t>(cost, 0));
    if (score < best) {
      best = score;
      tied.clear();
    }
    if (score == best) tied.push_back(static_cast<int>(i));
  }
  if (tied.size() == 1) return tied[0];
  const size_t first = uniform(tied.size());
  size_t second = uniform(tied.size() - 1);
  if (second >= first) ++second;  // distinct from `first`
  const LoadView& a = loads[tied[first]];
  const LoadView& b = loads[tied[second]];
  if (b.in_flight != a.in_flight) return b.in_flight < a.in_flight ? tied[second] : tied[first];
  return b.latency_ewma < a.latency_ewma ? tied[second] : tied[first];
}

AdaptiveController::AdaptiveController(AdaptiveConfig config, int backends)
    : config_(config), backends_(backends) {}

AdaptiveController::Decision AdaptiveController::Next(double explore,
                                                      absl::FunctionRef<bool(int)> admissible) {
  int committed;
  {
    absl::MutexLock l(&mu_);
    committed = committed_;
  }
  if (committed < 0) return Decision{};
  // Called without the lock: it reads another component's state.
  const bool usable = admissible(committed);
  absl::MutexLock l(&mu_);
  if (committed_ != committed) return Decision{};
  if (!usable) {
    UncommitLocked();
    return Decision{};
  }
  if (explore < config_.explore_share) return Decision{};
  return Decision{false, committed_};
}

bool AdaptiveController::OnRace(int winner, absl::Duration winner_ewma) {
  absl::MutexLock l(&mu_);
  winners_.push_back(winner);
  if (static_cast<int>(winners_.size()) > config_.window) winners_.pop_front();
  ++races_seen_;
  std::vector<int> wins(backends_, 0);
  for (int w : winners_) {
    if (w >= 0 && w < backends_) ++wins[w];
  }
  const double needed = config_.commit_share * static_cast<double>(winners_.size());
  if (committed_ >= 0) {
    // Exploration races keep checking that the commitment is still deserved.
    if (wins[committed_] < needed) UncommitLocked();
    return false;
  }
  if (races_seen_ < config_.min_races) return false;
  const int top = static_cast<int>(std::max_element(wins.begin(), wins.end()) - wins.begin());
  if (wins[top] == 0 || wins[top] < needed) return false;
  committed_ = top;
  baseline_ewma_ = top == winner ? winner_ewma : absl::ZeroDuration();
  committed_results_.clear();
  committed_failures_ = 0;
  return true;
}

void AdaptiveController::OnCommittedCall(int backend, bool ok, absl::Duration ewma) {
  absl::MutexLock l(&mu_);
  if (backend != committed_) return;
  committed_results_.push_back(!ok);
  if (!ok) ++committed_failures_;
  if (static_cast<int>(committed_results_.size()) > config_.window) {
    if (committed_results_.front()) --committed_failures_;
    committed_results_.pop_front();
  }
  if (ok && baseline_ewma_ == absl::ZeroDuration()) baseline_ewma_ = ewma;
  const double samples = static_cast<double>(committed_results_.size());
  if (samples >= kMinErrorSamples && committed_failures_ > config_.max_error_rate * samples) {
    UncommitLocked();
  } else if (ok && baseline_ewma_ > absl::ZeroDuration() &&
             ewma > baseline_ewma_ * config_.regression_factor) {
    UncommitLocked();
  }
}

int AdaptiveController::committed() const {
  absl::MutexLock l(&mu_);
  return committed_;
}

void AdaptiveController::UncommitLocked() {
  committed_ = -1;
  winners_.clear();
  races_seen_ = 0;
  committed_results_.clear();
  committed_failures_ = 0;
  baseline_ewma_ = absl::ZeroDuration();
}

}  // namespace fanout::router
