// The in-process tier (L1): a bounded, thread-safe map from composite keys
// (see entry.h) to entries, with the entries' time windows applied on read.
#ifndef FANOUT_CACHE_L1_CACHE_H_
#define FANOUT_CACHE_L1_CACHE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cache/entry.h"

namespace fanout::cache {

// Why an entry left the cache.
enum class RemovalCause {
  kSize,         // evicted to stay within the byte budget
  kExpired,      // past stale_until
  kInvalidated,  // Erase / ErasePrefix
  kReplaced,     // overwritten by Insert
};

struct L1Stats {
  uint64_t hits = 0;        // fresh or refresh-ahead lookups
  uint64_t stale_hits = 0;  // lookups that found a stale entry
  uint64_t misses = 0;
  uint64_t evicted_size = 0;
  uint64_t evicted_expired = 0;
  uint64_t invalidated = 0;
  uint64_t replaced = 0;
  uint64_t rejected_too_large = 0;  // inserts of one value over the per-entry limit
  uint64_t not_admitted = 0;        // inserts the eviction policy declined at once
  uint64_t bytes = 0;               // charged bytes now held (see ErasePrefix)
  uint64_t entries = 0;
};

// Called after an entry leaves the cache, on the thread that removed it and
// without any cache lock held. Must not call back into the same cache.
using RemovalListener =
    std::function<void(absl::string_view key, const Entry& entry, RemovalCause cause)>;

struct L1Options {
  uint64_t capacity_bytes = 256ull << 20;
  // An entry charged more than capacity_bytes * max_entry_fraction is not cached.
  double max_entry_fraction = 0.01;
  RemovalListener on_removal;  // optional
  // Independently locked shards, each with an equal share of the budget.
  // 0 lets the implementation choose; implementations may round it.
  int shards = 0;
};

// Bytes the heap takes for a request of `n` bytes: glibc's malloc on 64-bit
// Linux adds an 8-byte header, rounds to 16 bytes and hands out at least 32.
constexpr uint64_t HeapBytes(uint64_t n) { return n + 8 <= 32 ? 32 : (n + 8 + 15) / 16 * 16; }

// Heap bytes of a std::string holding `n` bytes: none up to 15 (libstdc++
// keeps those inside the string object), else a buffer of n + 1.
constexpr uint64_t StringHeapBytes(uint64_t n) { return n <= 15 ? 0 : HeapBytes(n + 1); }

// What an entry costs besides its key's and value's heap buffers, measured
// for the W-TinyLFU engine (bench/RESULTS.md, "L1 memory"): its node (policy
// links, key string, Entry; 192 heap bytes), the value's shared holder (64),
// and on average 80 bytes of index slot, frequency sketch and refused-key
// table, which grow in powers of two. The LRU engine's cost is about 50 bytes
// less; it is charged the same.
inline constexpr uint64_t kPerEntryOverhead = 192 + 64 + 80;

// Bytes an entry is charged against the budget: what it costs in memory.
inline uint64_t ChargeOf(absl::string_view key, const Entry& e) {
  return StringHeapBytes(key.size()) + StringHeapBytes(e.value.size()) + kPerEntryOverhead;
}

// Thread-safe. Reads never take a cache-wide lock.
class L1Cache {
 public:
  virtual ~L1Cache() = default;
  L1Cache() = default;
  L1Cache(const L1Cache&) = delete;
  L1Cache& operator=(const L1Cache&) = delete;

  // On a hit copies the entry into *out and returns its freshness at `now`.
  // Entries past stale_until are removed (kExpired) and reported as misses.
  virtual std::optional<Freshness> Lookup(absl::string_view key, absl::Time now, Entry* out) = 0;

  // Inserts or replaces. May evict others (kSize); may decline the entry
  // (too large, or not admitted by the policy). Returns true if cached.
  virtual bool Insert(absl::string_view key, Entry entry) = 0;

  // Removes one key. Returns true if it was present.
  virtual bool Erase(absl::string_view key) = 0;

  // Removes every key starting with `prefix`. Once it returns, no Lookup
  // finds an entry it covers; an Insert after it is unaffected. An
  // implementation may defer the removal itself: such entries stay in memory
  // (and in Stats().bytes and entries), unreachable, until later calls remove
  // them, and are reported to the listener (kInvalidated) then. Returns how
  // many matching entries it removed before returning: all of them unless
  // some were deferred.
  virtual uint64_t ErasePrefix(absl::string_view prefix) = 0;

  virtual L1Stats Stats() const = 0;
};

// A sharded LRU bounded by bytes.
std::unique_ptr<L1Cache> NewLruL1Cache(const L1Options& options);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_L1_CACHE_H_
