// Access traces for the hit-ratio simulator: reading and writing them, and
// generating seeded synthetic ones. A trace is the sequence of keys accessed.
#ifndef FANOUT_BENCH_SIM_TRACE_H_
#define FANOUT_BENCH_SIM_TRACE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fanout::sim {

using Trace = std::vector<uint64_t>;

enum class TraceFormat {
  kText,   // one unsigned decimal key per line; blank lines are skipped
  kU32Be,  // 4-byte big-endian unsigned keys, back to back
};

// "text" or "u32be"; InvalidArgument otherwise.
absl::StatusOr<TraceFormat> ParseTraceFormat(absl::string_view name);

// InvalidArgument on a line that is not an unsigned integer.
absl::StatusOr<Trace> ParseTextTrace(absl::string_view text);

// InvalidArgument if the size is not a multiple of 4.
absl::StatusOr<Trace> ParseU32BeTrace(absl::string_view bytes);

// Reads a trace file; a name ending in ".xz" is read through `xz -dc`.
// NotFound if the file cannot be opened, Internal if xz fails.
absl::StatusOr<Trace> ReadTrace(const std::string& path, TraceFormat format);

// Writes a trace uncompressed. kU32Be needs keys below 2^32
// (InvalidArgument otherwise).
absl::Status WriteTrace(const std::string& path, TraceFormat format, const Trace& trace);

// A synthetic workload. Keys are 0..keys-1 unless noted.
struct SyntheticSpec {
  enum class Kind {
    kZipf,       // independent draws, P(rank r) ~ 1/r^alpha
    kLoop,       // 0, 1, ..., keys-1, 0, 1, ... : a loop larger than the cache
    kScanZipf,   // Zipf, interrupted every scan_period draws by a scan of
                 // scan_length keys never seen before or after
    kShiftZipf,  // a rotating hot set: Zipf over `keys` keys, whose identities
                 // change every phase_length draws; each phase keeps
                 // (1 - shift_fraction) of the ranks' keys and gives the
                 // rest keys never used before (in a seeded random order, so
                 // popularity is not tied to key order)
    kRecency,    // the LRU stack model: a key never seen before with
                 // probability new_fraction, else the key at stack depth d of
                 // the keys used so far (0 = the last one), d drawn from a
                 // geometric distribution of mean mean_depth; recency is
                 // everything, frequency nothing
    kMix,        // one stream mixing the two: with probability mix_fraction a
                 // recency draw (as kRecency, over its own keys), else a Zipf
                 // draw over `keys` keys
  };
  Kind kind = Kind::kZipf;
  double alpha = 1.0;
  uint64_t length = 1'000'000;
  uint64_t keys = 100'000;
  uint64_t seed = 1;
  uint64_t scan_period = 10'000;
  uint64_t scan_length = 5'000;
  uint64_t phase_length = 100'000;  // kShiftZipf
  double shift_fraction = 1.0;      // kShiftZipf: share of ranks given new keys
  double new_fraction = 0.3;        // kRecency, kMix
  double mean_depth = 60;           // kRecency, kMix
  double mix_fraction = 0.5;        // kMix: share of recency draws
};

// Parses "zipf:ALPHA", "loop", "scan-zipf[:ALPHA]", "shift-zipf[:ALPHA]",
// "recency" or "mix[:ALPHA]" into the kind and alpha of *spec, leaving the
// other fields. InvalidArgument otherwise.
absl::Status ParseSyntheticKind(absl::string_view text, SyntheticSpec* spec);

// InvalidArgument naming the field if a parameter of spec.kind is out of
// range (keys of 0 or over 100 million, a phase_length of 0, a fraction
// outside [0, 1], a mean_depth below 0).
absl::Status ValidateSyntheticSpec(const SyntheticSpec& spec);

// Deterministic for a given spec (same seed, same trace on every platform).
// `spec` must pass ValidateSyntheticSpec.
Trace GenerateTrace(const SyntheticSpec& spec);

}  // namespace fanout::sim

#endif  // FANOUT_BENCH_SIM_TRACE_H_
