// Behaviour specific to the W-TinyLFU engine; the common L1Cache contract is
// in l1_cache_contract_test.cc.
#include "cache/l1/wtinylfu_cache.h"

#include <malloc.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache/l1_cache.h"
#include "gtest/gtest.h"
#include "tests/testing/cache_entries.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::MakeEntry;
const absl::Time kNow = ::fanout::testing::kEntryEpoch;

// Keys of 9 bytes and values of 95: every entry is charged the same.
std::string Key(int i) { return absl::StrFormat("key%06d", i); }
Entry Value200() { return MakeEntry(std::string(95, 'v')); }
const uint64_t kCharge = ChargeOf(Key(0), Value200());

// A cache-aside read: look up, and insert on a miss. Returns true on a hit.
bool Read(L1Cache& cache, const std::string& key) {
  Entry out;
  if (cache.Lookup(key, kNow, &out)) return true;
  cache.Insert(key, Value200());
  return false;
}

TEST(WTinyLfuCacheTest, InsertKeepsFrequentKeyThroughScansWhereLruLosesIt) {
  L1Options options;
  options.capacity_bytes = 100 * kCharge;
  options.max_entry_fraction = 1.0;
  options.shards = 1;
  auto tinylfu = NewWTinyLfuCache(options);
  auto lru = NewLruL1Cache(options);
  const std::string hot = "hotkey000";
  ASSERT_EQ(ChargeOf(hot, Value200()), kCharge);
  Read(*tinylfu, hot);
  Read(*lru, hot);
  int tinylfu_hot_hits = 0;
  int lru_hot_hits = 0;
  // The hot key returns after every 400 one-off keys, four times what fits.
  for (int k = 0; k < 40'000; ++k) {
    Read(*tinylfu, Key(k));
    Read(*lru, Key(k));
    if (k % 400 == 399) {
      tinylfu_hot_hits += Read(*tinylfu, hot) ? 1 : 0;
      lru_hot_hits += Read(*lru, hot) ? 1 : 0;
    }
  }
  EXPECT_GE(tinylfu_hot_hits, 99);
  EXPECT_EQ(lru_hot_hits, 0);
  EXPECT_LE(tinylfu->Stats().bytes, options.capacity_bytes);
}

TEST(WTinyLfuCacheTest, InsertDeclinedByPolicyIsCountedButNotReported) {
  L1Options options;
  options.capacity_bytes = 100 * kCharge;
  options.max_entry_fraction = 1.0;
  options.shards = 1;
  std::vector<std::string> removed;
  options.on_removal = [&](absl::string_view key, const Entry&, RemovalCause) {
    removed.emplace_back(key);
  };
  auto cache = NewWTinyLfuCache(options);
  for (int pass = 0; pass < 3; ++pass) {
    for (int k = 0; k < 100; ++k) Read(*cache, Key(k));
  }
  // Larger than the window and never looked up: it loses to any resident.
  EXPECT_FALSE(cache->Insert("big", MakeEntry(std::string(3000, 'x'))));
  const L1Stats stats = cache->Stats();
  EXPECT_EQ(stats.not_admitted, 1u);
  EXPECT_GE(stats.entries, 99u);
  Entry out;
  EXPECT_FALSE(cache->Lookup("big", kNow, &out));
  for (const std::string& key : removed) EXPECT_NE(key, "big");
}

TEST(WTinyLfuCacheTest, InsertRejectsEntryOverOneShardsBudget) {
  L1Options options;
  options.capacity_bytes = 4000;
  options.max_entry_fraction = 1.0;
  options.shards = 4;  // 1000 bytes each
  auto cache = NewWTinyLfuCache(options);
  EXPECT_FALSE(cache->Insert("k", MakeEntry(std::string(1500, 'x'))));
  EXPECT_EQ(cache->Stats().rejected_too_large, 1u);
  EXPECT_TRUE(cache->Insert("k", MakeEntry(std::string(500, 'x'))));
}

TEST(WTinyLfuCacheTest, StatsBytesEqualChargesInsertedMinusChargesReported) {
  L1Options options;
  options.capacity_bytes = 32 * 1024;
  options.max_entry_fraction = 0.05;
  options.shards = 4;
  uint64_t reported_bytes = 0;
  uint64_t reported = 0;
  options.on_removal = [&](absl::string_view key, const Entry& e, RemovalCause) {
    reported_bytes += ChargeOf(key, e);
    ++reported;
  };
  auto cache = NewWTinyLfuCache(options);
  std::mt19937_64 rng(11);
  uint64_t inserted_bytes = 0;
  uint64_t inserted = 0;
  for (int i = 0; i < 20'000; ++i) {
    const std::string key = Key(static_cast<int>(rng() % 1500));
    const uint64_t op = rng() % 100;
    if (op < 60) {
      Entry out;
      cache->Lookup(key, kNow + absl::Seconds(static_cast<int64_t>(rng() % 50)), &out);
    } else if (op < 95) {
      const Entry e = MakeEntry(std::string(rng() % 2000, 'v'));
      if (cache->Insert(key, e)) {
        inserted_bytes += ChargeOf(key, e);
        ++inserted;
      }
    } else if (op < 99) {
      cache->Erase(key);
    } else {
      cache->ErasePrefix(key.substr(0, 8));  // ten keys
    }
    const L1Stats stats = cache->Stats();
    ASSERT_LE(stats.bytes, options.capacity_bytes) << "op " << i;
    ASSERT_EQ(stats.bytes, inserted_bytes - reported_bytes) << "op " << i;
    ASSERT_EQ(stats.entries, inserted - reported) << "op " << i;
  }
  const L1Stats stats = cache->Stats();
  EXPECT_GT(stats.evicted_size, 0u);
  EXPECT_GT(stats.evicted_expired, 0u);
  EXPECT_GT(stats.invalidated, 0u);
  EXPECT_GT(stats.replaced, 0u);
  EXPECT_EQ(stats.evicted_size + stats.evicted_expired + stats.invalidated + stats.replaced,
            reported);
}

TEST(WTinyLfuCacheTest, RemovalListenerRunsWithNoLockHeld) {
  // Stronger than the L1Cache contract asks: a listener that calls back into
  // this cache completes instead of deadlocking on a shard lock.
  L1Options options;
  options.capacity_bytes = 10 * kCharge;
  options.max_entry_fraction = 1.0;
  options.shards = 1;
  std::unique_ptr<L1Cache> cache;
  int calls = 0;
  options.on_removal = [&](absl::string_view, const Entry&, RemovalCause) {
    ++calls;
    cache->Stats();
  };
  cache = NewWTinyLfuCache(options);
  cache->Insert(Key(0), Value200());
  cache->Insert(Key(0), Value200());                                   // replaced
  cache->Erase(Key(0));                                                // invalidated
  cache->Insert(Key(1), Value200());
  Entry out;
  cache->Lookup(Key(1), kNow + absl::Hours(1), &out);                  // expired
  for (int k = 2; k < 40; ++k) cache->Insert(Key(k), Value200());      // size
  cache->ErasePrefix("key");                                           // invalidated
  EXPECT_GE(calls, 4);
}

TEST(WTinyLfuCacheTest, ConcurrentReadersAndWritersKeepInvariants) {
  L1Options options;
  options.capacity_bytes = 256 * 1024;
  options.max_entry_fraction = 0.02;
  std::atomic<uint64_t> reported{0};
  std::atomic<uint64_t> reported_bytes{0};
  options.on_removal = [&](absl::string_view key, const Entry& e, RemovalCause) {
    reported.fetch_add(1, std::memory_order_relaxed);
    reported_bytes.fetch_add(ChargeOf(key, e), std::memory_order_relaxed);
  };
  auto cache = NewWTinyLfuCache(options);
  std::atomic<uint64_t> lookups{0};
  std::atomic<int> bad_copies{0};
  std::atomic<uint64_t> inserted{0};
  std::atomic<uint64_t> inserted_bytes{0};
  constexpr int kThreads = 4;
  constexpr int kOps = 100'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(100 + t);
      for (int i = 0; i < kOps; ++i) {
        // Skewed keys: a few hot ones contend on the same shards.
        const int r = static_cast<int>(rng() % 4000);
        const std::string key = Key(r % 3 == 0 ? r % 16 : r);
        const uint64_t op = rng() % 100;
        if (op < 80) {
          Entry out;
          const absl::Time now = kNow + absl::Seconds(static_cast<int64_t>(rng() % 45));
          if (cache->Lookup(key, now, &out)) {
            // A hit hands back a complete, unexpired copy.
            if (out.value.size() != 95 && out.value.size() % 7 != 0) bad_copies.fetch_add(1);
            if (now >= out.stale_until) bad_copies.fetch_add(1);
          }
          lookups.fetch_add(1, std::memory_order_relaxed);
        } else if (op < 98) {
          const Entry e =
              (op % 2 == 0) ? Value200() : MakeEntry(std::string(7 * (rng() % 400), 'w'));
          if (cache->Insert(key, e)) {
            inserted.fetch_add(1, std::memory_order_relaxed);
            inserted_bytes.fetch_add(ChargeOf(key, e), std::memory_order_relaxed);
          }
        } else if (op < 99) {
          cache->Erase(key);
        } else {
          cache->ErasePrefix(key.substr(0, 8));  // ten keys
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(bad_copies.load(), 0);
  const L1Stats stats = cache->Stats();
  EXPECT_LE(stats.bytes, options.capacity_bytes);
  EXPECT_EQ(stats.bytes, inserted_bytes.load() - reported_bytes.load());
  EXPECT_EQ(stats.entries, inserted.load() - reported.load());
  EXPECT_EQ(stats.hits + stats.stale_hits + stats.misses, lookups.load());
  EXPECT_EQ(stats.evicted_size + stats.evicted_expired + stats.invalidated + stats.replaced,
            reported.load());
  EXPECT_GT(stats.hits, 0u);
  EXPECT_GT(stats.evicted_size, 0u);
}

TEST(WTinyLfuCacheTest, ErasePrefixOfLargeShardLeavesTheRestToLaterCalls) {
  L1Options options;
  options.capacity_bytes = 64 << 20;
  options.shards = 1;
  std::vector<std::string> removed;
  options.on_removal = [&](absl::string_view key, const Entry&, RemovalCause cause) {
    EXPECT_EQ(cause, RemovalCause::kInvalidated);
    removed.emplace_back(key);
  };
  auto cache = NewWTinyLfuCache(options);
  for (int i = 0; i < 5000; ++i) ASSERT_TRUE(cache->Insert(absl::StrCat("gone/", i), Value200()));
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(cache->Insert(absl::StrCat("kept/", i), Value200()));
  // The caller's thread checks a bounded number of entries, not 5100.
  const uint64_t erased = cache->ErasePrefix("gone/");
  EXPECT_GT(erased, 0u);
  EXPECT_LE(erased, 1024u);
  EXPECT_EQ(removed.size(), erased);
  EXPECT_EQ(cache->Stats().entries, 5100 - erased);
  // Lookups of other keys finish the job, 8 entries each.
  Entry out;
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(cache->Lookup(absl::StrCat("kept/", i), kNow, &out));
  }
  EXPECT_EQ(cache->Stats().entries, 100u);
  EXPECT_EQ(cache->Stats().invalidated, 5000u);
  EXPECT_EQ(removed.size(), 5000u);
  for (const std::string& key : removed) EXPECT_TRUE(absl::StartsWith(key, "gone/")) << key;
}

TEST(WTinyLfuCacheTest, NewWithHugeCapacityAllocatesOnlyAsEntriesArrive) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "a sanitizer owns malloc";
#endif
  const auto heap = [] {
    const struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
  };
  const uint64_t before = heap();
  L1Options options;
  options.capacity_bytes = 1ull << 40;  // 1 TiB
  auto cache = NewWTinyLfuCache(options);
  EXPECT_LT(heap() - before, 1u << 20);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(cache->Insert(Key(i), Value200()));
  EXPECT_LT(heap() - before, 2u << 20);
}

}  // namespace
}  // namespace fanout::cache
