// Rate limits for log lines that outside input can trigger at will (one per
// bad request), so that a misbehaving client cannot flood the log.
#ifndef FANOUT_COMMON_LOG_THROTTLE_H_
#define FANOUT_COMMON_LOG_THROTTLE_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace fanout {

// Lets through at most `burst` events per `window` (fixed windows), and
// counts the others. Thread-safe.
class LogThrottle {
 public:
  // `clock` is not owned and must outlive this; nullptr = the real clock.
  LogThrottle(int burst, absl::Duration window, Clock* clock = nullptr);

  // True when this event may be logged. Then *suppressed is the number of
  // events refused since the last one let through, to report with it.
  bool Admit(int64_t* suppressed);

 private:
  const int burst_;
  const absl::Duration window_;
  Clock* const clock_;
  absl::Mutex mu_;
  absl::Time window_start_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int admitted_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t suppressed_ ABSL_GUARDED_BY(mu_) = 0;
};

// Sends libprotobuf's own log lines (for example one per parsed message with
// invalid UTF-8 in a string field) to fanout's log instead of raw stderr, at
// the same severity, at most `burst` per `window`; the next line let through
// says how many were dropped. Process-wide; call it once at start-up (a
// later call replaces the limits). `clock`: nullptr = the real clock; not
// owned, must outlive the process's use of protobuf.
void RouteProtobufLogs(int burst = 5, absl::Duration window = absl::Seconds(10),
                       Clock* clock = nullptr);

}  // namespace fanout

#endif  // FANOUT_COMMON_LOG_THROTTLE_H_
