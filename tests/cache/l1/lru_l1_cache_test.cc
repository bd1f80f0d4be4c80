// What is particular to the LRU engine; the shared contract is in
// l1_cache_contract_test.cc.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cache/l1_cache.h"
#include "gtest/gtest.h"
#include "tests/testing/cache_entries.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::kEntryEpoch;
using ::fanout::testing::MakeEntry;

TEST(LruL1CacheTest, InsertEvictsTheLeastRecentlyUsedKey) {
  // Keys of one shard only, so that the shard's budget decides.
  L1Options options;
  const std::string value(100, 'x');
  const uint64_t charge = ChargeOf("k00", MakeEntry(value));
  options.capacity_bytes = 16 * 3 * charge;  // three entries a shard
  options.max_entry_fraction = 1.0;
  std::vector<std::string> evicted;
  options.on_removal = [&](absl::string_view key, const Entry&, RemovalCause cause) {
    if (cause == RemovalCause::kSize) evicted.emplace_back(key);
  };
  auto cache = NewLruL1Cache(options);
  // Fill beyond the budget, touching "k00" before every insert: it stays the
  // most recent, so whatever shard it is in evicts others first.
  Entry out;
  cache->Insert("k00", MakeEntry(value));
  for (int i = 1; i < 200; ++i) {
    ASSERT_TRUE(cache->Lookup("k00", kEntryEpoch, &out).has_value()) << "evicted at " << i;
    cache->Insert(absl::StrCat("k", i < 10 ? "0" : "", i), MakeEntry(value));
  }
  EXPECT_FALSE(evicted.empty());
  for (const std::string& k : evicted) EXPECT_NE(k, "k00");
}

}  // namespace
}  // namespace fanout::cache
