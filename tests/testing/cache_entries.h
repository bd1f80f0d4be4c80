// Cache entries with known time windows, for L1 and read-path tests.
#ifndef FANOUT_TESTS_TESTING_CACHE_ENTRIES_H_
#define FANOUT_TESTS_TESTING_CACHE_ENTRIES_H_

#include <string>

#include "absl/time/time.h"
#include "cache/entry.h"

namespace fanout::testing {

inline const absl::Time kEntryEpoch = absl::FromUnixSeconds(1'700'000'000);

// Fetched at kEntryEpoch: fresh for `fresh`, expires at 2×, stale until 4×.
inline cache::Entry MakeEntry(std::string value, absl::Duration fresh = absl::Seconds(10)) {
  cache::Entry e;
  e.value = std::move(value);
  e.fetched_at = kEntryEpoch;
  e.fresh_until = kEntryEpoch + fresh;
  e.expires_at = kEntryEpoch + 2 * fresh;
  e.stale_until = kEntryEpoch + 4 * fresh;
  return e;
}

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_CACHE_ENTRIES_H_
