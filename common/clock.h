// Time source. Components take a Clock* so that tests can drive time.
#ifndef FANOUT_COMMON_CLOCK_H_
#define FANOUT_COMMON_CLOCK_H_

#include "absl/time/time.h"

namespace fanout {

// Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;

  // The wall clock. Process-wide, never destroyed.
  static Clock* Real();
};

}  // namespace fanout

#endif  // FANOUT_COMMON_CLOCK_H_
