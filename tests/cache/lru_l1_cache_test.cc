#include <string>
#include <vector>

#include "cache/l1_cache.h"
#include "gtest/gtest.h"

namespace fanout::cache {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'700'000'000);

Entry MakeEntry(std::string value, absl::Duration fresh = absl::Seconds(10)) {
  Entry e;
  e.value = std::move(value);
  e.fetched_at = kNow;
  e.fresh_until = kNow + fresh;
  e.expires_at = kNow + 2 * fresh;
  e.stale_until = kNow + 4 * fresh;
  return e;
}

TEST(LruL1CacheTest, LookupReportsTheTimeWindows) {
  auto cache = NewLruL1Cache({});
  cache->Insert("k", MakeEntry("v"));
  Entry out;
  EXPECT_EQ(cache->Lookup("k", kNow, &out), Freshness::kFresh);
  EXPECT_EQ(out.value, "v");
  EXPECT_EQ(cache->Lookup("k", kNow + absl::Seconds(15), &out), Freshness::kRefreshAhead);
  EXPECT_EQ(cache->Lookup("k", kNow + absl::Seconds(25), &out), Freshness::kStale);
  EXPECT_EQ(cache->Lookup("k", kNow + absl::Seconds(45), &out), std::nullopt);
  EXPECT_EQ(cache->Stats().entries, 0u);  // expired entries are removed
  EXPECT_EQ(cache->Stats().evicted_expired, 1u);
}

TEST(LruL1CacheTest, StaysWithinByteBudgetEvictingLeastRecent) {
  L1Options options;
  options.capacity_bytes = 16 * 1000;  // 1000 bytes a shard
  options.max_entry_fraction = 1.0;
  std::vector<RemovalCause> causes;
  options.on_removal = [&](absl::string_view, const Entry&, RemovalCause c) {
    causes.push_back(c);
  };
  auto cache = NewLruL1Cache(options);
  for (int i = 0; i < 2000; ++i) {
    cache->Insert("key" + std::to_string(i), MakeEntry(std::string(100, 'x')));
    ASSERT_LE(cache->Stats().bytes, options.capacity_bytes);
  }
  EXPECT_GT(cache->Stats().evicted_size, 0u);
  EXPECT_EQ(causes.size(), cache->Stats().evicted_size);
  for (RemovalCause c : causes) EXPECT_EQ(c, RemovalCause::kSize);
}

TEST(LruL1CacheTest, RejectsEntryOverTheFraction) {
  L1Options options;
  options.capacity_bytes = 1 << 20;
  options.max_entry_fraction = 0.01;
  auto cache = NewLruL1Cache(options);
  EXPECT_FALSE(cache->Insert("big", MakeEntry(std::string(20000, 'x'))));
  EXPECT_EQ(cache->Stats().rejected_too_large, 1u);
  EXPECT_TRUE(cache->Insert("small", MakeEntry("x")));
}

TEST(LruL1CacheTest, ErasePrefixRemovesOnlyMatchingKeys) {
  auto cache = NewLruL1Cache({});
  cache->Insert(CompositeKey("ns", "flags/a"), MakeEntry("1"));
  cache->Insert(CompositeKey("ns", "flags/b"), MakeEntry("2"));
  cache->Insert(CompositeKey("ns", "limits/a"), MakeEntry("3"));
  cache->Insert(CompositeKey("other", "flags/a"), MakeEntry("4"));
  EXPECT_EQ(cache->ErasePrefix(CompositeKey("ns", "flags/")), 2u);
  Entry out;
  EXPECT_FALSE(cache->Lookup(CompositeKey("ns", "flags/a"), kNow, &out));
  EXPECT_TRUE(cache->Lookup(CompositeKey("ns", "limits/a"), kNow, &out));
  EXPECT_TRUE(cache->Lookup(CompositeKey("other", "flags/a"), kNow, &out));
}

TEST(LruL1CacheTest, ReplaceAndEraseReportCauses) {
  std::vector<RemovalCause> causes;
  L1Options options;
  options.on_removal = [&](absl::string_view, const Entry&, RemovalCause c) {
    causes.push_back(c);
  };
  auto cache = NewLruL1Cache(options);
  cache->Insert("k", MakeEntry("1"));
  cache->Insert("k", MakeEntry("2"));
  EXPECT_TRUE(cache->Erase("k"));
  EXPECT_FALSE(cache->Erase("k"));
  EXPECT_EQ(causes, (std::vector<RemovalCause>{RemovalCause::kReplaced, RemovalCause::kInvalidated}));
}

}  // namespace
}  // namespace fanout::cache
