// Bounded polling, for tests that wait on something another thread or
// process does (never a bare sleep).
#ifndef FANOUT_TESTS_TESTING_EVENTUALLY_H_
#define FANOUT_TESTS_TESTING_EVENTUALLY_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fanout::testing {

// Polls `done` every 5 ms until it holds (true) or `timeout` passes (false;
// generous by default, for a loaded machine).
template <typename F>
bool Eventually(F done, absl::Duration timeout = absl::Seconds(20)) {
  const absl::Time give_up = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() >= give_up) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_EVENTUALLY_H_
