// The L1Cache contract (cache/l1_cache.h), run over every implementation.
#include <malloc.h>

#include <atomic>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cache/l1_cache.h"
#include "cache/l1/wtinylfu_cache.h"
#include "gtest/gtest.h"
#include "tests/testing/cache_entries.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::MakeEntry;
const absl::Time kNow = ::fanout::testing::kEntryEpoch;

// Sanitizers replace malloc, and with it what mallinfo2 reports.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kHeapMeasurable = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
constexpr bool kHeapMeasurable = false;
#else
constexpr bool kHeapMeasurable = true;
#endif
#else
constexpr bool kHeapMeasurable = true;
#endif

// Bytes the process has from malloc now (small and mmap-ed blocks).
uint64_t HeapInUse() {
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

struct Removal {
  std::string key;
  std::string value;
  RemovalCause cause;
};

// Records removals; thread-safe.
class RemovalLog {
 public:
  RemovalListener Listener() {
    return [this](absl::string_view key, const Entry& e, RemovalCause cause) {
      absl::MutexLock l(&mu_);
      removals_.push_back(Removal{std::string(key), e.value.ToString(), cause});
    };
  }
  std::vector<Removal> removals() const {
    absl::MutexLock l(&mu_);
    return removals_;
  }
  std::vector<RemovalCause> causes() const {
    std::vector<RemovalCause> out;
    for (const Removal& r : removals()) out.push_back(r.cause);
    return out;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<Removal> removals_ ABSL_GUARDED_BY(mu_);
};

struct LruFactory {
  static std::unique_ptr<L1Cache> New(const L1Options& options) { return NewLruL1Cache(options); }
};
struct WTinyLfuFactory {
  static std::unique_ptr<L1Cache> New(const L1Options& options) {
    return NewWTinyLfuCache(options);
  }
};

template <typename Factory>
class L1CacheContractTest : public ::testing::Test {
 protected:
  std::unique_ptr<L1Cache> New(L1Options options = {}) {
    options.on_removal = log_.Listener();
    return Factory::New(options);
  }
  RemovalLog log_;
};

using Implementations = ::testing::Types<LruFactory, WTinyLfuFactory>;
class ImplementationNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, LruFactory> ? "Lru" : "WTinyLfu";
  }
};
TYPED_TEST_SUITE(L1CacheContractTest, Implementations, ImplementationNames);

TYPED_TEST(L1CacheContractTest, InsertThenLookupReturnsTheEntry) {
  auto cache = this->New();
  Entry in = MakeEntry("value");
  in.version = 7;
  in.fill_time = absl::Milliseconds(3);
  EXPECT_TRUE(cache->Insert("k", in));
  Entry out;
  EXPECT_EQ(cache->Lookup("k", kNow, &out), Freshness::kFresh);
  EXPECT_EQ(out.value, "value");
  EXPECT_EQ(out.version, 7);
  EXPECT_EQ(out.fill_time, absl::Milliseconds(3));
  EXPECT_EQ(out.stale_until, in.stale_until);
}

TYPED_TEST(L1CacheContractTest, LookupOfMissingKeyIsAMiss) {
  auto cache = this->New();
  Entry out;
  out.value = "untouched";
  EXPECT_EQ(cache->Lookup("absent", kNow, &out), std::nullopt);
  EXPECT_EQ(out.value, "untouched");
  EXPECT_EQ(cache->Stats().misses, 1u);
  EXPECT_EQ(cache->Stats().hits, 0u);
}

TYPED_TEST(L1CacheContractTest, LookupAppliesTheTimeWindows) {
  auto cache = this->New();
  cache->Insert("k", MakeEntry("v"));  // fresh 10 s, expires 20 s, stale until 40 s
  Entry out;
  EXPECT_EQ(cache->Lookup("k", kNow + absl::Seconds(9), &out), Freshness::kFresh);
  EXPECT_EQ(cache->Lookup("k", kNow + absl::Seconds(10), &out), Freshness::kRefreshAhead);
  EXPECT_EQ(cache->Lookup("k", kNow + absl::Seconds(19), &out), Freshness::kRefreshAhead);
  EXPECT_EQ(cache->Lookup("k", kNow + absl::Seconds(20), &out), Freshness::kStale);
  EXPECT_EQ(cache->Lookup("k", kNow + absl::Seconds(39), &out), Freshness::kStale);
  L1Stats stats = cache->Stats();
  EXPECT_EQ(stats.hits, 3u);
  EXPECT_EQ(stats.stale_hits, 2u);
  EXPECT_EQ(stats.misses, 0u);
  EXPECT_EQ(cache->Lookup("k", kNow + absl::Seconds(40), &out), std::nullopt);
  stats = cache->Stats();
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.evicted_expired, 1u);
  EXPECT_EQ(stats.entries, 0u);
  EXPECT_EQ(stats.bytes, 0u);
  EXPECT_EQ(this->log_.causes(), std::vector<RemovalCause>{RemovalCause::kExpired});
}

TYPED_TEST(L1CacheContractTest, InsertOfExistingKeyReplacesAndReportsTheOldEntry) {
  auto cache = this->New();
  cache->Insert("k", MakeEntry("old"));
  EXPECT_TRUE(cache->Insert("k", MakeEntry("newer")));
  Entry out;
  ASSERT_TRUE(cache->Lookup("k", kNow, &out));
  EXPECT_EQ(out.value, "newer");
  const std::vector<Removal> removals = this->log_.removals();
  ASSERT_EQ(removals.size(), 1u);
  EXPECT_EQ(removals[0].key, "k");
  EXPECT_EQ(removals[0].value, "old");
  EXPECT_EQ(removals[0].cause, RemovalCause::kReplaced);
  const L1Stats stats = cache->Stats();
  EXPECT_EQ(stats.replaced, 1u);
  EXPECT_EQ(stats.entries, 1u);
  EXPECT_EQ(stats.bytes, ChargeOf("k", MakeEntry("newer")));
}

TYPED_TEST(L1CacheContractTest, EraseRemovesPresentKeyOnly) {
  auto cache = this->New();
  cache->Insert("k", MakeEntry("v"));
  EXPECT_TRUE(cache->Erase("k"));
  EXPECT_FALSE(cache->Erase("k"));
  EXPECT_FALSE(cache->Erase("never"));
  Entry out;
  EXPECT_EQ(cache->Lookup("k", kNow, &out), std::nullopt);
  EXPECT_EQ(cache->Stats().invalidated, 1u);
  EXPECT_EQ(this->log_.causes(), std::vector<RemovalCause>{RemovalCause::kInvalidated});
}

TYPED_TEST(L1CacheContractTest, ErasePrefixRemovesOnlyMatchingKeys) {
  auto cache = this->New();
  for (int i = 0; i < 100; ++i) {
    cache->Insert(CompositeKey("ns", absl::StrCat("flags/", i)), MakeEntry("f"));
    cache->Insert(CompositeKey("ns", absl::StrCat("limits/", i)), MakeEntry("l"));
    cache->Insert(CompositeKey("other", absl::StrCat("flags/", i)), MakeEntry("o"));
  }
  EXPECT_EQ(cache->ErasePrefix(CompositeKey("ns", "flags/")), 100u);
  Entry out;
  for (int i = 0; i < 100; ++i) {
    const std::string n = absl::StrCat(i);
    EXPECT_FALSE(cache->Lookup(CompositeKey("ns", absl::StrCat("flags/", n)), kNow, &out)) << n;
    EXPECT_TRUE(cache->Lookup(CompositeKey("ns", absl::StrCat("limits/", n)), kNow, &out)) << n;
    EXPECT_TRUE(cache->Lookup(CompositeKey("other", absl::StrCat("flags/", n)), kNow, &out)) << n;
  }
  EXPECT_EQ(cache->Stats().invalidated, 100u);
  EXPECT_EQ(cache->Stats().entries, 200u);
  for (const Removal& r : this->log_.removals()) {
    EXPECT_EQ(r.cause, RemovalCause::kInvalidated);
    EXPECT_TRUE(absl::StartsWith(r.key, CompositeKey("ns", "flags/"))) << r.key;
  }
}

TYPED_TEST(L1CacheContractTest, ErasePrefixOfWholeNamespaceSparesLongerNamespaceName) {
  auto cache = this->New();
  cache->Insert(CompositeKey("ns", "a"), MakeEntry("1"));
  cache->Insert(CompositeKey("ns2", "a"), MakeEntry("2"));
  EXPECT_EQ(cache->ErasePrefix(CompositeKey("ns", "")), 1u);
  Entry out;
  EXPECT_TRUE(cache->Lookup(CompositeKey("ns2", "a"), kNow, &out));
}

TYPED_TEST(L1CacheContractTest, InsertRejectsEntryOverTheFraction) {
  L1Options options;
  options.capacity_bytes = 1 << 20;
  options.max_entry_fraction = 0.01;  // 10485 bytes
  auto cache = this->New(options);
  EXPECT_FALSE(cache->Insert("big", MakeEntry(std::string(20'000, 'x'))));
  EXPECT_EQ(cache->Stats().rejected_too_large, 1u);
  EXPECT_EQ(cache->Stats().entries, 0u);
  EXPECT_TRUE(cache->Insert("small", MakeEntry(std::string(10'000, 'x'))));
  Entry out;
  EXPECT_FALSE(cache->Lookup("big", kNow, &out));
  EXPECT_TRUE(cache->Lookup("small", kNow, &out));
}

TYPED_TEST(L1CacheContractTest, InsertOfOversizeValueDropsThePreviousOne) {
  L1Options options;
  options.capacity_bytes = 1 << 20;
  auto cache = this->New(options);
  cache->Insert("k", MakeEntry("small"));
  EXPECT_FALSE(cache->Insert("k", MakeEntry(std::string(20'000, 'x'))));
  Entry out;
  EXPECT_EQ(cache->Lookup("k", kNow, &out), std::nullopt);  // never the outdated value
  EXPECT_EQ(this->log_.causes(), std::vector<RemovalCause>{RemovalCause::kReplaced});
}

TYPED_TEST(L1CacheContractTest, InsertStaysWithinByteBudgetEvictingForSize) {
  L1Options options;
  options.capacity_bytes = 64 * 1024;
  options.max_entry_fraction = 0.05;
  auto cache = this->New(options);
  for (int i = 0; i < 3000; ++i) {
    cache->Insert(absl::StrCat("key", i), MakeEntry(std::string(100 + i % 300, 'x')));
    ASSERT_LE(cache->Stats().bytes, options.capacity_bytes) << "after insert " << i;
  }
  const L1Stats stats = cache->Stats();
  EXPECT_GT(stats.evicted_size, 0u);
  EXPECT_GT(stats.entries, 0u);
  const std::vector<RemovalCause> causes = this->log_.causes();
  EXPECT_EQ(causes.size(), stats.evicted_size);
  for (RemovalCause c : causes) EXPECT_EQ(c, RemovalCause::kSize);
}

TYPED_TEST(L1CacheContractTest, StatsChargeEveryResidentEntry) {
  auto cache = this->New();
  uint64_t expected = 0;
  for (int i = 0; i < 50; ++i) {
    const std::string key = absl::StrCat("k", i);
    const Entry e = MakeEntry(std::string(i, 'v'));
    expected += ChargeOf(key, e);
    ASSERT_TRUE(cache->Insert(key, e));
  }
  cache->Erase("k7");
  expected -= ChargeOf("k7", MakeEntry(std::string(7, 'v')));
  const L1Stats stats = cache->Stats();
  EXPECT_EQ(stats.entries, 49u);
  EXPECT_EQ(stats.bytes, expected);
}

TYPED_TEST(L1CacheContractTest, ConcurrentUseKeepsTheBudgetAndCounts) {
  L1Options options;
  options.capacity_bytes = 128 * 1024;
  options.max_entry_fraction = 0.02;
  auto cache = this->New(options);
  constexpr int kThreads = 4;
  constexpr int kOps = 20'000;
  std::atomic<uint64_t> lookups{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      uint64_t x = 88172645463325252ull + t;
      for (int i = 0; i < kOps; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const std::string key = absl::StrCat("k", x % 2000);
        if (x % 4 == 0) {
          cache->Insert(key, MakeEntry(std::string(x % 500, 'v')));
        } else {
          Entry out;
          cache->Lookup(key, kNow, &out);
          lookups.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  const L1Stats stats = cache->Stats();
  EXPECT_LE(stats.bytes, options.capacity_bytes);
  EXPECT_EQ(stats.hits + stats.stale_hits + stats.misses, lookups.load());
  EXPECT_EQ(this->log_.removals().size(), stats.evicted_size + stats.replaced);
}

TYPED_TEST(L1CacheContractTest, ErasePrefixHidesEveryMatchingEntryOfALargeCacheAtOnce) {
  L1Options options;
  options.capacity_bytes = 256 << 20;
  auto cache = this->New(options);
  constexpr int kKeys = 40'000;  // more than any one call may sweep
  for (int i = 0; i < kKeys; ++i) {
    ASSERT_TRUE(
        cache->Insert(CompositeKey(i % 2 == 0 ? "a" : "b", absl::StrCat("k", i)), MakeEntry("v")));
  }
  const uint64_t erased = cache->ErasePrefix(CompositeKey("a", ""));
  EXPECT_LE(erased, kKeys / 2u);
  Entry out;
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = CompositeKey(i % 2 == 0 ? "a" : "b", absl::StrCat("k", i));
    ASSERT_EQ(cache->Lookup(key, kNow, &out).has_value(), i % 2 == 1) << key;
  }
  // Every matching entry has been removed and reported by now (the lookups
  // of them found them if nothing else did), each once.
  const L1Stats stats = cache->Stats();
  EXPECT_EQ(stats.invalidated, kKeys / 2u);
  EXPECT_EQ(stats.entries, kKeys / 2u);
  EXPECT_EQ(this->log_.removals().size(), kKeys / 2u);
  for (const Removal& r : this->log_.removals()) {
    EXPECT_EQ(r.cause, RemovalCause::kInvalidated);
    EXPECT_TRUE(absl::StartsWith(r.key, CompositeKey("a", ""))) << r.key;
  }
}

TYPED_TEST(L1CacheContractTest, InsertAfterErasePrefixIsVisible) {
  L1Options options;
  options.capacity_bytes = 64 << 20;
  auto cache = this->New(options);
  for (int i = 0; i < 5000; ++i) cache->Insert(absl::StrCat("p/", i), MakeEntry("old"));
  cache->ErasePrefix("p/");
  cache->Insert("p/7", MakeEntry("new"));
  Entry out;
  ASSERT_TRUE(cache->Lookup("p/7", kNow, &out));
  EXPECT_EQ(out.value, "new");
  EXPECT_FALSE(cache->Lookup("p/8", kNow, &out));
  // Inserting over an entry that was erased is not a replacement.
  for (const Removal& r : this->log_.removals()) EXPECT_NE(r.cause, RemovalCause::kReplaced);
}

TYPED_TEST(L1CacheContractTest, EraseOfKeyErasedByPrefixReturnsFalse) {
  L1Options options;
  options.capacity_bytes = 64 << 20;
  auto cache = this->New(options);
  for (int i = 0; i < 5000; ++i) cache->Insert(absl::StrCat("p/", i), MakeEntry("v"));
  cache->Insert("q/1", MakeEntry("v"));
  cache->ErasePrefix("p/");
  for (int i = 0; i < 5000; ++i) EXPECT_FALSE(cache->Erase(absl::StrCat("p/", i))) << i;
  EXPECT_TRUE(cache->Erase("q/1"));
  EXPECT_EQ(cache->Stats().entries, 0u);
  EXPECT_EQ(cache->Stats().invalidated, 5001u);
}

TYPED_TEST(L1CacheContractTest, ErasePrefixCallsInARowEachHideTheirOwnKeys) {
  L1Options options;
  options.capacity_bytes = 64 << 20;
  auto cache = this->New(options);
  constexpr int kPrefixes = 20;  // more than may be pending at once
  for (int p = 0; p < kPrefixes; ++p) {
    for (int i = 0; i < 500; ++i) cache->Insert(absl::StrCat(p, "/", i), MakeEntry("v"));
  }
  cache->Insert("keep", MakeEntry("v"));
  for (int p = 0; p < kPrefixes; ++p) cache->ErasePrefix(absl::StrCat(p, "/"));
  Entry out;
  for (int p = 0; p < kPrefixes; ++p) {
    for (int i = 0; i < 500; ++i) {
      ASSERT_FALSE(cache->Lookup(absl::StrCat(p, "/", i), kNow, &out)) << p << "/" << i;
    }
  }
  EXPECT_TRUE(cache->Lookup("keep", kNow, &out));
  EXPECT_EQ(cache->Stats().entries, 1u);
}

TYPED_TEST(L1CacheContractTest, ConcurrentErasePrefixNeverLeavesAnErasedEntryVisible) {
  L1Options options;
  options.capacity_bytes = 8 << 20;
  std::atomic<uint64_t> reported{0};
  options.on_removal = [&](absl::string_view, const Entry&, RemovalCause) {
    reported.fetch_add(1, std::memory_order_relaxed);
  };
  auto cache = TypeParam::New(options);
  std::atomic<uint64_t> inserted{0};
  std::atomic<int> running{3};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      uint64_t x = 0x9e3779b97f4a7c15ull * (t + 1);
      for (int i = 0; i < 30'000; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const std::string key = absl::StrCat(x % 3 == 0 ? "gone/" : "kept/", x % 20'000);
        if (x % 4 == 0) {
          if (cache->Insert(key, MakeEntry("v"))) inserted.fetch_add(1);
        } else {
          Entry out;
          cache->Lookup(key, kNow, &out);
        }
      }
      running.fetch_sub(1);
    });
  }
  int erasures = 0;
  while (running.load() > 0) {
    cache->ErasePrefix("gone/");
    ++erasures;
  }
  for (std::thread& th : threads) th.join();
  EXPECT_GT(erasures, 1);
  cache->ErasePrefix("gone/");
  Entry out;
  for (int i = 0; i < 20'000; ++i) {
    ASSERT_FALSE(cache->Lookup(absl::StrCat("gone/", i), kNow, &out)) << i;
  }
  const L1Stats stats = cache->Stats();
  EXPECT_EQ(stats.entries + reported.load(), inserted.load());
  EXPECT_LE(stats.bytes, options.capacity_bytes);
}

TYPED_TEST(L1CacheContractTest, StatsBytesAreWhatTheEntriesTakeFromTheHeap) {
  if (!kHeapMeasurable) GTEST_SKIP() << "a sanitizer owns malloc";
  for (const size_t value_bytes : {size_t{10}, size_t{200}, size_t{2000}}) {
    L1Options options;
    options.capacity_bytes = 1ull << 32;
    options.max_entry_fraction = 1;
    auto cache = this->New(options);
    constexpr int kEntries = 50'000;
    std::vector<std::string> keys;
    for (int i = 0; i < kEntries; ++i)
      keys.push_back(CompositeKey("tenant", absl::StrCat("config/item-", i)));
    const uint64_t before = HeapInUse();
    for (int i = 0; i < kEntries; ++i) {
      Entry e = MakeEntry(std::string(value_bytes, 'v'));
      ASSERT_TRUE(cache->Insert(keys[i], std::move(e)));
    }
    const double used = static_cast<double>(HeapInUse() - before);
    const double charged = static_cast<double>(cache->Stats().bytes);
    // Within 20%: the index and the policy's tables grow in powers of two.
    EXPECT_GT(charged, 0.8 * used) << value_bytes << "-byte values";
    EXPECT_LT(charged, 1.2 * used) << value_bytes << "-byte values";
  }
}

}  // namespace
}  // namespace fanout::cache
