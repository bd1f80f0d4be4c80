// When to stop using a dependency that keeps failing, and when to try it
// again.
//
//   closed --(failure_threshold failures in a row)--> open
//   open   --(a probe succeeds)--------------------> half-open
//   half-open --(close_after_successes successes)--> closed
//   half-open --(any failure)-----------------------> open
//
// While open, callers are refused at once and the owner probes in the
// background, ProbeDelay() apart: probe_min doubling up to probe_max, so a
// dependency that comes back is used again within probe_max (plus the
// probe's own round trip).
//
// Thread-safety: Allows() and state() may be called from any thread; the
// Record* and ProbeDelay methods from one thread at a time (the owner's I/O
// thread).
#ifndef FANOUT_CACHE_TIERS_REDIS_CIRCUIT_BREAKER_H_
#define FANOUT_CACHE_TIERS_REDIS_CIRCUIT_BREAKER_H_

#include <atomic>
#include <cstdint>

#include "absl/time/time.h"

namespace fanout::cache {

struct CircuitBreakerOptions {
  int failure_threshold = 3;
  int close_after_successes = 3;
  absl::Duration probe_min = absl::Milliseconds(50);
  absl::Duration probe_max = absl::Seconds(1);
};

class CircuitBreaker {
 public:
  enum class State { kClosed, kOpen, kHalfOpen };
  // What a Record* call changed.
  enum class Transition { kNone, kOpened, kHalfOpened, kClosed };

  explicit CircuitBreaker(CircuitBreakerOptions options) : options_(options) {}

  // Whether calls may go through (closed or half-open).
  bool Allows() const { return state() != State::kOpen; }
  State state() const { return state_.load(std::memory_order_acquire); }

  // A call (not a probe) answered in time.
  Transition RecordSuccess();
  // A call failed for a reason that says the dependency is unwell (no
  // answer in time, connection lost or refused, "loading"/"busy").
  Transition RecordFailure();
  // A background probe's outcome, while open.
  Transition RecordProbe(bool ok);

  // How long to wait before the next probe; each call while open doubles
  // the next one, up to probe_max. Reset when the breaker closes.
  absl::Duration ProbeDelay();

  uint64_t opens() const { return opens_; }

 private:
  Transition Open();

  const CircuitBreakerOptions options_;
  std::atomic<State> state_{State::kClosed};
  int consecutive_failures_ = 0;
  int half_open_successes_ = 0;
  absl::Duration next_probe_ = absl::ZeroDuration();
  uint64_t opens_ = 0;
};

const char* CircuitStateName(CircuitBreaker::State state);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_TIERS_REDIS_CIRCUIT_BREAKER_H_
