// Replays a trace through a cache of `capacity` unit-size entries and counts
// hits. Every access to a key not resident is a miss followed by an insert
// (which the policy may decline). Each function is O(trace) or
// O(trace log capacity) and single-threaded.
#ifndef FANOUT_BENCH_SIM_SIMULATE_H_
#define FANOUT_BENCH_SIM_SIMULATE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/types/span.h"
#include "cache/l1/wtinylfu_policy.h"

namespace fanout::sim {

struct SimResult {
  uint64_t accesses = 0;
  uint64_t hits = 0;
  double hit_ratio() const {
    return accesses == 0 ? 0 : static_cast<double>(hits) / static_cast<double>(accesses);
  }
};

// Least recently used.
SimResult SimulateLru(absl::Span<const uint64_t> trace, uint64_t capacity);

// Bélády's clairvoyant optimum: on overflow drops the resident key (the new
// one included, i.e. it may decline) whose next use is furthest away.
SimResult SimulateOpt(absl::Span<const uint64_t> trace, uint64_t capacity);

// Least frequently used with perfect knowledge: counts every access of the
// trace so far, resident or not; on overflow drops the key (the new one
// included) with the lowest count, the least recently used among equals.
SimResult SimulateLfu(absl::Span<const uint64_t> trace, uint64_t capacity);

// The cache's own policy (cache::WTinyLfuPolicy) with unit weights;
// options.capacity is replaced by `capacity`. With shards > 1 the keys are
// split by hash over that many policies of capacity / shards each, sharing
// one WindowSizer (unless options.sizer is given), as the L1 cache does.
// Keys are hashed with a fixed function of `hash_seed`, so a run repeats
// exactly; the cache seeds its hash per process instead.
//
// If `probe` is set it is called after every `probe_every` accesses (and
// after the last) with the counts so far and the first shard's policy, to
// follow the adaptive window over time.
using SimProbe = std::function<void(const SimResult& so_far, const cache::WTinyLfuPolicy& policy)>;
SimResult SimulateWTinyLfu(absl::Span<const uint64_t> trace, uint64_t capacity,
                           cache::WTinyLfuPolicyOptions options = {}, int shards = 1,
                           uint64_t hash_seed = 0, const SimProbe& probe = nullptr,
                           uint64_t probe_every = 0);

}  // namespace fanout::sim

#endif  // FANOUT_BENCH_SIM_SIMULATE_H_
