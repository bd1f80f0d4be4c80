// Parsing of human-written quantities in configuration: durations ("300ms",
// "2s", "1h30m") and byte sizes ("512", "64KiB", "256MiB", "1GiB", "10MB").
#ifndef FANOUT_COMMON_UNITS_H_
#define FANOUT_COMMON_UNITS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fanout {

// Non-negative durations with units (ns, us, ms, s, m, h); "0" is zero.
// InvalidArgument otherwise.
absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text);

// Non-negative byte counts: a plain integer, or one with B, KB/MB/GB (powers
// of 1000) or KiB/MiB/GiB (powers of 1024). InvalidArgument otherwise.
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);

}  // namespace fanout

#endif  // FANOUT_COMMON_UNITS_H_
