#include "cache/l1/frequency_sketch.h"

#include <algorithm>
#include <bit>

namespace fanout::cache {
namespace {

constexpr uint64_t kWordsPerBlock = 8;  // 64 bytes
// The table's floor (8 KiB): however few entries a sketch is sized for, its
// keys spread over 128 blocks, so that a one-off key rarely finds all four of
// its counters raised by others' (which would tie it with a key seen twice).
constexpr uint64_t kMinWords = 1024;
constexpr uint64_t kResetMask = 0x7777777777777777ull;
constexpr uint64_t kOneMask = 0x1111111111111111ull;

// A bijective 64-bit mixer (the SplitMix64 finalizer): callers' hashes may
// share bits (e.g. every key of one cache shard has the same top bits).
inline uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// The word and 4-bit slot of the i-th counter of a key.
struct Slot {
  uint64_t word;
  int shift;
};

inline Slot SlotOf(uint64_t block_base, uint64_t counter_hash, int i) {
  const uint64_t h = counter_hash >> (i * 8);
  return Slot{block_base + (h & 1) + static_cast<uint64_t>(i) * 2,
              static_cast<int>(((h >> 1) & 15) * 4)};
}

}  // namespace

FrequencySketch::FrequencySketch(uint64_t expected_entries) {
  EnsureCapacity(std::max<uint64_t>(expected_entries, 1));
}

void FrequencySketch::EnsureCapacity(uint64_t entries) {
  if (entries <= capacity_) return;
  capacity_ = std::bit_ceil(entries);
  sample_size_ = 10 * capacity_;
  const uint64_t words = std::max(capacity_, kMinWords);
  if (words <= table_.size()) return;
  std::vector<uint64_t> table(words);
  if (!table_.empty()) {
    // The block index is the low bits of the mixed hash, so a key's new block
    // j held its counters at old block j & old_mask.
    for (uint64_t w = 0; w < words; ++w) {
      const uint64_t block = w / kWordsPerBlock;
      table[w] = table_[(block & block_mask_) * kWordsPerBlock + w % kWordsPerBlock];
    }
  }
  table_ = std::move(table);
  block_mask_ = words / kWordsPerBlock - 1;
}

void FrequencySketch::Increment(uint64_t hash) {
  const uint64_t h = Mix(hash);
  const uint64_t base = (h & block_mask_) * kWordsPerBlock;
  const uint64_t counter_hash = Mix(h);
  bool added = false;
  for (int i = 0; i < 4; ++i) {
    const Slot s = SlotOf(base, counter_hash, i);
    const uint64_t mask = uint64_t{15} << s.shift;
    if ((table_[s.word] & mask) != mask) {
      table_[s.word] += uint64_t{1} << s.shift;
      added = true;
    }
  }
  if (added && ++additions_ >= sample_size_) Reset();
}

int FrequencySketch::Frequency(uint64_t hash) const {
  const uint64_t h = Mix(hash);
  const uint64_t base = (h & block_mask_) * kWordsPerBlock;
  const uint64_t counter_hash = Mix(h);
  int frequency = 15;
  for (int i = 0; i < 4; ++i) {
    const Slot s = SlotOf(base, counter_hash, i);
    frequency = std::min(frequency, static_cast<int>((table_[s.word] >> s.shift) & 15));
  }
  return frequency;
}

void FrequencySketch::Reset() {
  ++agings_;
  uint64_t odd = 0;
  for (uint64_t& word : table_) {
    odd += std::popcount(word & kOneMask);
    word = (word >> 1) & kResetMask;
  }
  // Halving loses the odd counters' half units; a key has four counters.
  const uint64_t half = additions_ >> 1;
  additions_ = half > (odd >> 2) ? half - (odd >> 2) : 0;
}

}  // namespace fanout::cache
