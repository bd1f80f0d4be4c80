#include "cache/tiers/redis/circuit_breaker.h"

#include <algorithm>

namespace fanout::cache {

CircuitBreaker::Transition CircuitBreaker::Open() {
  state_.store(State::kOpen, std::memory_order_release);
  consecutive_failures_ = 0;
  half_open_successes_ = 0;
  ++opens_;
  return Transition::kOpened;
}

CircuitBreaker::Transition CircuitBreaker::RecordSuccess() {
  switch (state()) {
    case State::kClosed:
      consecutive_failures_ = 0;
      return Transition::kNone;
    case State::kHalfOpen:
      if (++half_open_successes_ < options_.close_after_successes) return Transition::kNone;
      state_.store(State::kClosed, std::memory_order_release);
      consecutive_failures_ = 0;
      next_probe_ = absl::ZeroDuration();
      return Transition::kClosed;
    case State::kOpen:
      // A late answer to a call made before the breaker opened: only probes
      // close it.
      return Transition::kNone;
  }
  return Transition::kNone;
}

CircuitBreaker::Transition CircuitBreaker::RecordFailure() {
  switch (state()) {
    case State::kClosed:
      if (++consecutive_failures_ < options_.failure_threshold) return Transition::kNone;
      return Open();
    case State::kHalfOpen:
      return Open();
    case State::kOpen:
      return Transition::kNone;
  }
  return Transition::kNone;
}

CircuitBreaker::Transition CircuitBreaker::RecordProbe(bool ok) {
  if (state() != State::kOpen || !ok) return Transition::kNone;
  half_open_successes_ = 0;
  state_.store(State::kHalfOpen, std::memory_order_release);
  return Transition::kHalfOpened;
}

absl::Duration CircuitBreaker::ProbeDelay() {
  const absl::Duration d = std::clamp(next_probe_, options_.probe_min, options_.probe_max);
  next_probe_ = std::min(d * 2, options_.probe_max);
  return d;
}

const char* CircuitStateName(CircuitBreaker::State state) {
  switch (state) {
    case CircuitBreaker::State::kClosed:
      return "closed";
    case CircuitBreaker::State::kOpen:
      return "open";
    case CircuitBreaker::State::kHalfOpen:
      return "half-open";
  }
  return "?";
}

}  // namespace fanout::cache
