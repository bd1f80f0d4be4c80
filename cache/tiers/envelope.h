// The stored form of an entry in the shared and persistent tiers (Redis L2,
// RocksDB L3): a small versioned binary envelope that keeps the entry's
// times, so age and freshness stay truthful across pods and restarts.
//
// Format 1, little-endian:
//   u8   format (1)
//   u8   flags (bit 0: superseded by an invalidation)
//   i64  version
//   i64  fetched_at, fresh_until, expires_at, stale_until  (Unix µs; INT64_MIN
//        and INT64_MAX stand for the infinite past and future)
//   i64  fill_time (µs)
//   u32  value length
//   ...  value bytes
// A reader refuses any other format byte, a short or over-long buffer, and
// times out of order: what it cannot decode is a miss, never a crash.
#ifndef FANOUT_CACHE_TIERS_ENVELOPE_H_
#define FANOUT_CACHE_TIERS_ENVELOPE_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cache/entry.h"

namespace fanout::cache {

inline constexpr uint8_t kEnvelopeFormat = 1;
// Bytes an envelope adds to its value.
inline constexpr size_t kEnvelopeOverhead = 2 + 6 * 8 + 4;

struct Envelope {
  Entry entry;
  // Invalidated, kept only for stale answers during outages (EraseMode::kSupersede).
  bool superseded = false;
};

std::string EncodeEnvelope(const Entry& entry, bool superseded = false);

// DataLoss naming what is wrong when `bytes` is not a format-1 envelope.
absl::StatusOr<Envelope> DecodeEnvelope(absl::string_view bytes);

// The entry as EraseMode::kSupersede leaves it at `now`: never fresh again,
// still servable as stale until stale_until.
Entry Supersede(Entry entry, absl::Time now);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_TIERS_ENVELOPE_H_
