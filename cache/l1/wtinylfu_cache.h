// The W-TinyLFU L1 engine: an L1Cache (l1_cache.h) that admits and evicts by
// recent frequency (wtinylfu_policy.h), resisting scans and one-off keys that
// would flush an LRU.
//
// Threading model: the key space is split by hash into independently locked
// shards (L1Options::shards rounded up to a power of two; by default 16,
// halved while a shard would get less than 64 KiB). Each shard has its own
// absl::Mutex, index, policy, byte budget (capacity_bytes / shards) and
// statistics; there is no cache-wide lock. Every operation locks one shard,
// except ErasePrefix and Stats, which visit the shards one at a time. No
// thread is started. Removal listeners run on the calling thread after the
// shard lock is released, and entries are freed outside the lock.
//
// Sharding costs some hit ratio against one global policy (each shard
// admits and evicts alone, within its own budget); with 16 shards and a
// budget of hundreds of entries or more the difference is within a point
// (the "x16 shards" column of bench/RESULTS.md), and it keeps the read path
// to one mutex that other keys' readers rarely contend for. The shards share
// one WindowSizer (wtinylfu_policy.h), so the window's share of the budget is
// decided from the whole cache's lookups; a shard reports to it (a mutex)
// once every few hundred of its lookups.
//
// Bounds: a Lookup or Insert is O(1) amortized; an Insert may evict many
// small entries to make room for a large one. A periodic aging pass of the
// frequency sketch costs O(entries in the shard) once every ~20 x entries
// lookups.
//
// Prefix invalidation does not scan the cache on the caller's thread. Each
// shard keeps the prefixes whose removal is not finished (at most 8) and an
// epoch; an entry inserted or checked before a pending prefix's epoch and
// matching it is hidden from Lookup, Insert and Erase at once, and removed
// when found. ErasePrefix registers the prefix with every shard (a short
// lock hold each: that alone meets its contract), then checks at most 1024
// entries per shard, 256 per lock hold; the rest are checked 8 at a time by
// later Lookups and Inserts of the shard. Its return value counts only the
// entries removed before it returns: exact while every shard holds at most
// 1024 entries, a lower bound otherwise (the rest show in
// L1Stats::invalidated as they go). Until then Stats() still counts them. A
// Lookup of a shard with prefixes pending compares its entry with them
// (none once it has been checked) and checks 8 more entries; with none
// pending it pays one comparison. A burst of more than 8 prefixes before a
// shard's walk ends makes ErasePrefix walk that shard itself, a lock hold of
// 256 entries at a time (and after 64 such holds, to the end in one).
//
// Admission: a key's popularity is the number of Lookups of it (hits and
// misses), recently; Inserts do not count. A new entry always enters the
// window; an entry larger than the window goes straight to the admission
// test, and if it loses, Insert returns false and counts it in
// L1Stats::not_admitted without calling the removal listener (it was never
// visible). Every other removal is reported with its cause.
//
// Expiry is lazy: an entry past stale_until is removed by the Lookup that
// finds it (or by size eviction), never by a background sweep.
#ifndef FANOUT_CACHE_L1_WTINYLFU_CACHE_H_
#define FANOUT_CACHE_L1_WTINYLFU_CACHE_H_

#include <memory>

#include "cache/l1_cache.h"

namespace fanout::cache {

// options.capacity_bytes must be positive. Thread-safe.
std::unique_ptr<L1Cache> NewWTinyLfuCache(const L1Options& options);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_L1_WTINYLFU_CACHE_H_
