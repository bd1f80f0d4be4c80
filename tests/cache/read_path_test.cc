#include "cache/read_path.h"

#include <optional>

#include "absl/container/flat_hash_map.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_origin.h"
#include "tests/testing/fake_tier.h"
#include "tests/testing/manual_executor.h"
#include "tests/testing/status_matchers.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::FakeOrigin;
using ::fanout::testing::FakeTier;
using ::fanout::testing::StatusIs;

class ReadPathTest : public ::testing::Test {
 protected:
  ReadPathTest() { Build({}); }

  void Build(std::vector<std::unique_ptr<Tier>> lower) {
    options_.ttl = absl::Seconds(10);
    options_.refresh_ahead = 0.5;
    options_.stale_ttl = absl::Seconds(100);
    options_.default_max_stale = absl::Seconds(30);
    path_ = std::make_unique<ReadPath>(options_, NewLruL1Cache({}), std::move(lower), &origin_,
                                       executor_.clock());
  }

  // Starts a Get; the result lands in the returned slot when it completes.
  std::shared_ptr<std::optional<absl::StatusOr<ReadResult>>> StartGet(
      absl::string_view key, ReadOptions options = {}) {
    auto slot = std::make_shared<std::optional<absl::StatusOr<ReadResult>>>();
    path_->Get("ns", key, options, [slot](absl::StatusOr<ReadResult> r) { *slot = std::move(r); });
    return slot;
  }

  void Advance(absl::Duration d) { executor_.fake_clock().Advance(d); }

  ReadPathOptions options_;
  testing::ManualExecutor executor_;
  FakeOrigin origin_;
  std::unique_ptr<ReadPath> path_;
};

TEST_F(ReadPathTest, GetMissFetchesOriginThenServesFromL1) {
  auto first = StartGet("flags/a");
  ASSERT_EQ(origin_.pending(), 1u);
  EXPECT_EQ(origin_.pending_key(0), "flags/a");
  origin_.AnswerValue("on", 7);
  ASSERT_TRUE(first->has_value());
  ASSERT_TRUE(first->value().ok());
  EXPECT_EQ(first->value()->value, "on");
  EXPECT_EQ(first->value()->served_by, TierId::kOrigin);
  EXPECT_EQ(first->value()->version, 7);

  Advance(absl::Seconds(2));
  auto second = StartGet("flags/a");
  ASSERT_TRUE(second->has_value());  // answered inline
  EXPECT_EQ(second->value()->served_by, TierId::kL1);
  EXPECT_EQ(second->value()->age, absl::Seconds(2));
  EXPECT_FALSE(second->value()->stale);
  EXPECT_EQ(origin_.fetches(), 1);
}

TEST_F(ReadPathTest, GetCoalescesConcurrentMissesIntoOneFetch) {
  std::vector<std::shared_ptr<std::optional<absl::StatusOr<ReadResult>>>> reads;
  for (int i = 0; i < 50; ++i) reads.push_back(StartGet("hot"));
  EXPECT_EQ(origin_.fetches(), 1);
  origin_.AnswerValue("v");
  for (const auto& r : reads) {
    ASSERT_TRUE(r->has_value());
    EXPECT_EQ(r->value()->value, "v");
  }
  EXPECT_EQ(path_->Stats().coalesced, 49u);
}

TEST_F(ReadPathTest, GetInRefreshWindowServesCachedAndRefreshesOnce) {
  StartGet("k");
  origin_.AnswerValue("old", 1);
  Advance(absl::Seconds(6));  // past fresh_until (5 s), before expiry (10 s)
  auto r1 = StartGet("k");
  auto r2 = StartGet("k");
  ASSERT_TRUE(r1->has_value());
  EXPECT_EQ(r1->value()->value, "old");
  EXPECT_EQ(r2->value()->value, "old");
  EXPECT_EQ(origin_.fetches(), 2);  // one background refresh for both reads
  origin_.AnswerValue("new", 2);
  auto r3 = StartGet("k");
  EXPECT_EQ(r3->value()->value, "new");
  EXPECT_EQ(r3->value()->age, absl::ZeroDuration());
  EXPECT_EQ(path_->Stats().refreshes_ahead, 1u);
}

TEST_F(ReadPathTest, GetServesStaleWhenOriginDown) {
  StartGet("k");
  origin_.AnswerValue("last-known", 3);
  Advance(absl::Seconds(20));  // expired 10 s ago
  auto r = StartGet("k");
  ASSERT_FALSE(r->has_value());
  origin_.Answer(absl::UnavailableError("connection refused"));
  ASSERT_TRUE(r->has_value());
  ASSERT_TRUE(r->value().ok()) << r->value().status();
  EXPECT_EQ(r->value()->value, "last-known");
  EXPECT_TRUE(r->value()->stale);
  EXPECT_EQ(r->value()->age, absl::Seconds(20));
  EXPECT_EQ(path_->Stats().stale_served, 1u);
}

TEST_F(ReadPathTest, GetUnavailableWhenStaleBeyondCallersMaxStale) {
  StartGet("k");
  origin_.AnswerValue("v");
  Advance(absl::Seconds(20));
  ReadOptions strict;
  strict.max_stale = absl::Seconds(5);
  auto r = StartGet("k", strict);
  origin_.Answer(absl::UnavailableError("down"));
  EXPECT_THAT(r->value(), StatusIs(absl::StatusCode::kUnavailable,
                                   ::testing::HasSubstr("max_stale")));
}

TEST_F(ReadPathTest, GetOriginFailureIsNotCached) {
  auto r1 = StartGet("k");
  origin_.Answer(absl::UnavailableError("down"));
  EXPECT_THAT(r1->value(), StatusIs(absl::StatusCode::kUnavailable));
  auto r2 = StartGet("k");
  EXPECT_EQ(origin_.fetches(), 2);  // no cached null: the origin is asked again
  origin_.AnswerValue("back");
  EXPECT_EQ(r2->value()->value, "back");
}

TEST_F(ReadPathTest, GetNotFoundNamesKeyAndDropsCachedCopy) {
  StartGet("gone");
  origin_.AnswerValue("v");
  ReadOptions bypass;
  bypass.bypass_cache = true;
  auto r = StartGet("gone", bypass);
  origin_.Answer(absl::NotFoundError("no such key"));
  EXPECT_THAT(r->value(), StatusIs(absl::StatusCode::kNotFound, ::testing::HasSubstr("\"gone\"")));
  EXPECT_EQ(path_->l1().Stats().entries, 0u);
}

TEST_F(ReadPathTest, GetBypassCacheReadsOriginAndRefreshesL1) {
  StartGet("k");
  origin_.AnswerValue("v1");
  ReadOptions bypass;
  bypass.bypass_cache = true;
  auto r = StartGet("k", bypass);
  ASSERT_FALSE(r->has_value());
  origin_.AnswerValue("v2");
  EXPECT_EQ(r->value()->served_by, TierId::kOrigin);
  EXPECT_EQ(StartGet("k")->value()->value, "v2");
}

TEST_F(ReadPathTest, InvalidateDuringFillDoesNotCacheTheValue) {
  auto r = StartGet("k");
  std::optional<absl::StatusOr<uint64_t>> evicted;
  path_->Invalidate("ns", {"k"}, "", false, [&](absl::StatusOr<uint64_t> n) { evicted = n; });
  origin_.AnswerValue("from-before-the-invalidation");
  EXPECT_EQ(r->value()->value, "from-before-the-invalidation");  // the waiter still gets it
  StartGet("k");
  EXPECT_EQ(origin_.fetches(), 2);  // but it was not cached
}

TEST_F(ReadPathTest, InvalidateErasesKeysAndPrefixInNamespaceOnly) {
  for (const char* k : {"flags/a", "flags/b", "limits/x"}) {
    StartGet(k);
    origin_.AnswerValue("v");
  }
  path_->Get("other", "flags/a", {}, [](absl::StatusOr<ReadResult>) {});
  origin_.AnswerValue("v");
  std::optional<absl::StatusOr<uint64_t>> evicted;
  path_->Invalidate("ns", {"limits/x"}, "flags/", false,
                    [&](absl::StatusOr<uint64_t> n) { evicted = n; });
  ASSERT_TRUE(evicted.has_value());
  EXPECT_EQ(evicted->value(), 3u);
  EXPECT_EQ(path_->l1().Stats().entries, 1u);  // other/flags/a stays
}

TEST_F(ReadPathTest, GetMissServedByLowerTierBackfillsL1) {
  auto l2 = std::make_unique<FakeTier>(TierId::kL2, executor_.clock());
  FakeTier* l2_raw = l2.get();
  std::vector<std::unique_ptr<Tier>> lower;
  lower.push_back(std::move(l2));
  Build(std::move(lower));
  Entry e;
  e.value = "from-redis";
  e.fetched_at = executor_.clock()->Now();
  e.fresh_until = e.fetched_at + absl::Seconds(5);
  e.expires_at = e.fetched_at + absl::Seconds(10);
  e.stale_until = e.fetched_at + absl::Seconds(100);
  l2_raw->Put(CompositeKey("ns", "k"), e);

  auto r = StartGet("k");
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ(r->value()->served_by, TierId::kL2);
  EXPECT_EQ(origin_.fetches(), 0);
  EXPECT_EQ(StartGet("k")->value()->served_by, TierId::kL1);

  // An origin fill writes through to the lower tier.
  StartGet("other");
  origin_.AnswerValue("o");
  EXPECT_TRUE(l2_raw->Contains(CompositeKey("ns", "other")));
}

TEST_F(ReadPathTest, InvalidateSupersedesSurvivalTierUnlessPurged) {
  auto l3 = std::make_unique<FakeTier>(TierId::kL3, executor_.clock());
  FakeTier* l3_raw = l3.get();
  std::vector<std::unique_ptr<Tier>> lower;
  lower.push_back(std::move(l3));
  Build(std::move(lower));
  const absl::Time now = executor_.clock()->Now();
  Entry e;
  e.value = "kept";
  e.fetched_at = now;
  e.fresh_until = now + absl::Seconds(5);
  e.expires_at = now + absl::Seconds(10);
  e.stale_until = now + absl::Seconds(100);
  l3_raw->Put(CompositeKey("ns", "k"), e);

  path_->Invalidate("ns", {"k"}, "", false, [](absl::StatusOr<uint64_t>) {});
  std::optional<Entry> kept = l3_raw->Get(CompositeKey("ns", "k"));
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(kept->value, "kept");
  EXPECT_EQ(FreshnessAt(*kept, now), Freshness::kStale);

  path_->Invalidate("ns", {"k"}, "", true, [](absl::StatusOr<uint64_t>) {});
  EXPECT_FALSE(l3_raw->Contains(CompositeKey("ns", "k")));
}

}  // namespace
}  // namespace fanout::cache
