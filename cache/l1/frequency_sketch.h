// A count-min sketch of 4-bit counters: the popularity estimate that the
// W-TinyLFU policy (wtinylfu_policy.h) admits entries by.
#ifndef FANOUT_CACHE_L1_FREQUENCY_SKETCH_H_
#define FANOUT_CACHE_L1_FREQUENCY_SKETCH_H_

#include <cstdint>
#include <vector>

namespace fanout::cache {

// Estimates how often each key hash was seen recently. Each key maps to four
// 4-bit counters (saturating at 15) in one 64-byte block, so an update or a
// query touches one cache line. Estimates never undercount between agings.
//
// Aging: after sample_size() increments that changed a counter, every counter
// is halved, so the estimate follows recent popularity, not all-time counts.
// The sample size is ten times the number of entries the table is sized for.
//
// Memory: 8 bytes per entry sized for (rounded up to a power of two), at
// least 8 KiB. Not thread-safe.
class FrequencySketch {
 public:
  // Sized for about `expected_entries` distinct keys (at least one).
  explicit FrequencySketch(uint64_t expected_entries);

  FrequencySketch(const FrequencySketch&) = delete;
  FrequencySketch& operator=(const FrequencySketch&) = delete;

  // Grows the table if `entries` exceeds what it is sized for. Growing keeps
  // every key's estimate: each new block starts as a copy of the block that
  // served its keys before. O(new size); a no-op otherwise.
  void EnsureCapacity(uint64_t entries);

  // Counts one occurrence of `hash`; may trigger an aging pass (O(size)).
  void Increment(uint64_t hash);

  // The estimated recent count of `hash`, 0..15.
  int Frequency(uint64_t hash) const;

  // Aging passes so far.
  uint64_t agings() const { return agings_; }
  // Increments between two agings.
  uint64_t sample_size() const { return sample_size_; }
  // Entries the table is sized for.
  uint64_t capacity() const { return capacity_; }

 private:
  void Reset();

  std::vector<uint64_t> table_;  // blocks of 8 words of 16 counters each
  uint64_t block_mask_ = 0;
  uint64_t capacity_ = 0;
  uint64_t sample_size_ = 0;
  uint64_t additions_ = 0;  // increments since the last aging, adjusted by it
  uint64_t agings_ = 0;
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_L1_FREQUENCY_SKETCH_H_
