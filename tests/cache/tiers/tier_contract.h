// The contract every cache::Tier keeps (cache/tier.h), as a typed test suite.
// An implementation's test instantiates it with an environment type:
//
//   struct RedisEnv {
//     // Called once per test; the tier must start empty.
//     std::unique_ptr<cache::Tier> Make();
//   };
//   INSTANTIATE_TYPED_TEST_SUITE_P(Redis, TierContractTest, ::testing::Types<RedisEnv>);
//
// Tiers follow the real clock here (Redis expires keys on its own clock), so
// entries are made relative to absl::Now() and expiry is awaited by polling
// with a bounded deadline, never by sleeping a fixed time.
#ifndef FANOUT_TESTS_CACHE_TIERS_TIER_CONTRACT_H_
#define FANOUT_TESTS_CACHE_TIERS_TIER_CONTRACT_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "cache/tier.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace fanout::testing {

// How long any one tier call may take before the test gives up on it.
inline constexpr absl::Duration kTierCallBound = absl::Seconds(20);

// Synchronous wrappers: each waits (bounded) for the call's completion and
// fails the test if it never comes.
inline absl::StatusOr<cache::Entry> LookupNow(cache::Tier& tier, absl::string_view key,
                                              absl::Duration timeout = absl::Seconds(5)) {
  absl::Notification done;
  absl::StatusOr<cache::Entry> out = absl::InternalError("no answer");
  tier.Lookup(key, absl::Now() + timeout, [&](absl::StatusOr<cache::Entry> e) {
    out = std::move(e);
    done.Notify();
  });
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(kTierCallBound)) << "Lookup never answered";
  return out;
}

inline std::vector<absl::StatusOr<cache::Entry>> LookupManyNow(
    cache::Tier& tier, std::vector<std::string> keys, absl::Duration timeout = absl::Seconds(5)) {
  absl::Notification done;
  std::vector<absl::StatusOr<cache::Entry>> out;
  tier.LookupMany(std::move(keys), absl::Now() + timeout,
                  [&](std::vector<absl::StatusOr<cache::Entry>> e) {
                    out = std::move(e);
                    done.Notify();
                  });
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(kTierCallBound)) << "LookupMany never answered";
  return out;
}

inline absl::Status StoreNow(cache::Tier& tier, absl::string_view key, const cache::Entry& e) {
  absl::Notification done;
  absl::Status out = absl::InternalError("no answer");
  tier.Store(key, e, [&](absl::Status s) {
    out = std::move(s);
    done.Notify();
  });
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(kTierCallBound)) << "Store never answered";
  return out;
}

inline absl::StatusOr<uint64_t> EraseNow(cache::Tier& tier, std::vector<std::string> keys,
                                         std::string prefix,
                                         cache::EraseMode mode = cache::EraseMode::kRemove,
                                         absl::Duration timeout = absl::Seconds(5)) {
  absl::Notification done;
  absl::StatusOr<uint64_t> out = absl::InternalError("no answer");
  tier.Erase(std::move(keys), std::move(prefix), mode, absl::Now() + timeout,
             [&](absl::StatusOr<uint64_t> n) {
               out = std::move(n);
               done.Notify();
             });
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(kTierCallBound)) << "Erase never answered";
  return out;
}

// An entry fetched now: fresh for `fresh`, expiring at 2×, stale until 4×.
// Times are whole microseconds, as stored tiers keep them.
inline cache::Entry EntryNow(std::string value, absl::Duration fresh = absl::Seconds(60),
                             int64_t version = 1) {
  cache::Entry e;
  const absl::Time now = absl::FromUnixMicros(absl::ToUnixMicros(absl::Now()));
  e.value = std::move(value);
  e.version = version;
  e.fetched_at = now;
  e.fresh_until = now + fresh;
  e.expires_at = now + 2 * fresh;
  e.stale_until = now + 4 * fresh;
  e.fill_time = absl::Microseconds(1500);
  return e;
}

// Composite keys as the read path makes them: namespace NUL key.
inline std::string Ck(absl::string_view ns, absl::string_view key) {
  return absl::StrCat(ns, absl::string_view("\0", 1), key);
}

template <typename Env>
class TierContractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tier_ = env_.Make();
    ASSERT_NE(tier_, nullptr);
  }
  void TearDown() override { tier_.reset(); }

  Env env_;
  std::unique_ptr<cache::Tier> tier_;
};

TYPED_TEST_SUITE_P(TierContractTest);

TYPED_TEST_P(TierContractTest, LookupOfAnAbsentKeyIsNotFound) {
  EXPECT_THAT(LookupNow(*this->tier_, Ck("ns", "absent")), StatusIs(absl::StatusCode::kNotFound));
}

TYPED_TEST_P(TierContractTest, StoreThenLookupKeepsValueVersionAndTimes) {
  cache::Entry e = EntryNow("value", absl::Seconds(60), 42);
  ASSERT_OK(StoreNow(*this->tier_, Ck("ns", "k"), e));
  absl::StatusOr<cache::Entry> got = LookupNow(*this->tier_, Ck("ns", "k"));
  ASSERT_OK(got);
  EXPECT_EQ(got->value, "value");
  EXPECT_EQ(got->version, 42);
  EXPECT_EQ(got->fetched_at, e.fetched_at);
  EXPECT_EQ(got->fresh_until, e.fresh_until);
  EXPECT_EQ(got->expires_at, e.expires_at);
  EXPECT_EQ(got->stale_until, e.stale_until);
  EXPECT_EQ(got->fill_time, e.fill_time);
}

TYPED_TEST_P(TierContractTest, StoreReplacesTheEntry) {
  ASSERT_OK(StoreNow(*this->tier_, Ck("ns", "k"), EntryNow("old", absl::Seconds(60), 1)));
  ASSERT_OK(StoreNow(*this->tier_, Ck("ns", "k"), EntryNow("new", absl::Seconds(60), 2)));
  absl::StatusOr<cache::Entry> got = LookupNow(*this->tier_, Ck("ns", "k"));
  ASSERT_OK(got);
  EXPECT_EQ(got->value, "new");
  EXPECT_EQ(got->version, 2);
}

TYPED_TEST_P(TierContractTest, KeysAndValuesAreBinarySafe) {
  const std::string key = Ck("ns", std::string("a\0b\r\n*?[x]", 10));
  const std::string value("\0\1\2\r\nvalue\xff", 11);
  ASSERT_OK(StoreNow(*this->tier_, key, EntryNow(value)));
  absl::StatusOr<cache::Entry> got = LookupNow(*this->tier_, key);
  ASSERT_OK(got);
  EXPECT_EQ(got->value, value);
  EXPECT_THAT(LookupNow(*this->tier_, Ck("ns", "a")), StatusIs(absl::StatusCode::kNotFound));
}

TYPED_TEST_P(TierContractTest, NamespacesAreSeparate) {
  ASSERT_OK(StoreNow(*this->tier_, Ck("a", "k"), EntryNow("in a")));
  EXPECT_THAT(LookupNow(*this->tier_, Ck("b", "k")), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(LookupNow(*this->tier_, Ck("", "k")), StatusIs(absl::StatusCode::kNotFound));
}

TYPED_TEST_P(TierContractTest, StaleEntriesAreFoundUntilStaleUntil) {
  // Expired (past expires_at) but not gone: the tier still returns it; the
  // read path decides whether to serve it.
  cache::Entry e = EntryNow("old", absl::Seconds(60));
  e.fetched_at -= absl::Minutes(3);
  e.fresh_until -= absl::Minutes(3);
  e.expires_at -= absl::Minutes(3);  // 60 s after fetch: a minute ago
  ASSERT_OK(StoreNow(*this->tier_, Ck("ns", "k"), e));
  absl::StatusOr<cache::Entry> got = LookupNow(*this->tier_, Ck("ns", "k"));
  ASSERT_OK(got);
  EXPECT_EQ(got->value, "old");
  EXPECT_EQ(cache::FreshnessAt(*got, absl::Now()), cache::Freshness::kStale);
}

TYPED_TEST_P(TierContractTest, EntryPastStaleUntilIsAMiss) {
  cache::Entry gone = EntryNow("gone");
  gone.fetched_at -= absl::Hours(1);
  gone.fresh_until = gone.expires_at = gone.stale_until = absl::Now() - absl::Seconds(1);
  (void)StoreNow(*this->tier_, Ck("ns", "gone"), gone);  // may be refused or dropped
  EXPECT_THAT(LookupNow(*this->tier_, Ck("ns", "gone")), StatusIs(absl::StatusCode::kNotFound));

  // An entry whose stale window ends shortly becomes a miss once it has.
  cache::Entry brief = EntryNow("brief", absl::Milliseconds(50));  // stale until +200 ms
  ASSERT_OK(StoreNow(*this->tier_, Ck("ns", "brief"), brief));
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  absl::StatusOr<cache::Entry> got;
  do {
    got = LookupNow(*this->tier_, Ck("ns", "brief"));
    if (!got.ok()) break;
    absl::SleepFor(absl::Milliseconds(20));
  } while (absl::Now() < give_up);
  EXPECT_THAT(got, StatusIs(absl::StatusCode::kNotFound));
  EXPECT_GE(absl::Now(), brief.stale_until);
}

TYPED_TEST_P(TierContractTest, LookupManyAnswersEveryKeyInOrder) {
  ASSERT_OK(StoreNow(*this->tier_, Ck("ns", "a"), EntryNow("A")));
  ASSERT_OK(StoreNow(*this->tier_, Ck("ns", "c"), EntryNow("C")));
  std::vector<absl::StatusOr<cache::Entry>> got =
      LookupManyNow(*this->tier_, {Ck("ns", "a"), Ck("ns", "b"), Ck("ns", "c"), Ck("ns", "a")});
  ASSERT_EQ(got.size(), 4u);
  ASSERT_OK(got[0]);
  EXPECT_EQ(got[0]->value, "A");
  EXPECT_THAT(got[1], StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(got[2]);
  EXPECT_EQ(got[2]->value, "C");
  ASSERT_OK(got[3]);
  EXPECT_EQ(got[3]->value, "A");
  EXPECT_TRUE(LookupManyNow(*this->tier_, {}).empty());
}

TYPED_TEST_P(TierContractTest, EraseRemovesTheKeysAndCountsThem) {
  ASSERT_OK(StoreNow(*this->tier_, Ck("ns", "a"), EntryNow("A")));
  ASSERT_OK(StoreNow(*this->tier_, Ck("ns", "b"), EntryNow("B")));
  absl::StatusOr<uint64_t> n = EraseNow(*this->tier_, {Ck("ns", "a"), Ck("ns", "absent")}, "");
  ASSERT_OK(n);
  EXPECT_EQ(*n, 1u);
  EXPECT_THAT(LookupNow(*this->tier_, Ck("ns", "a")), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_OK(LookupNow(*this->tier_, Ck("ns", "b")));
}

TYPED_TEST_P(TierContractTest, ErasePrefixRemovesOnlyKeysStartingWithIt) {
  // Glob characters in a prefix match only themselves.
  for (const char* k : {"flags/a", "flags/b", "flags*", "flag", "limits/a", "f[l]ags/x"}) {
    ASSERT_OK(StoreNow(*this->tier_, Ck("ns", k), EntryNow(k)));
  }
  ASSERT_OK(StoreNow(*this->tier_, Ck("other", "flags/a"), EntryNow("other")));
  absl::StatusOr<uint64_t> n = EraseNow(*this->tier_, {}, Ck("ns", "flags/"));
  ASSERT_OK(n);
  EXPECT_EQ(*n, 2u);
  EXPECT_THAT(LookupNow(*this->tier_, Ck("ns", "flags/a")), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(LookupNow(*this->tier_, Ck("ns", "flags/b")), StatusIs(absl::StatusCode::kNotFound));
  for (const char* k : {"flags*", "flag", "limits/a", "f[l]ags/x"}) {
    EXPECT_OK(LookupNow(*this->tier_, Ck("ns", k))) << k;
  }
  EXPECT_OK(LookupNow(*this->tier_, Ck("other", "flags/a")));

  ASSERT_OK(EraseNow(*this->tier_, {}, Ck("ns", "f[l]")));
  EXPECT_THAT(LookupNow(*this->tier_, Ck("ns", "f[l]ags/x")),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_OK(LookupNow(*this->tier_, Ck("ns", "flags*")));
  ASSERT_OK(EraseNow(*this->tier_, {}, Ck("ns", "flags*")));
  EXPECT_THAT(LookupNow(*this->tier_, Ck("ns", "flags*")), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_OK(LookupNow(*this->tier_, Ck("ns", "flag")));
}

TYPED_TEST_P(TierContractTest, EraseSupersedeKeepsAStaleOnlyCopy) {
  ASSERT_OK(StoreNow(*this->tier_, Ck("ns", "k"), EntryNow("v")));
  const absl::Time before = absl::Now();
  absl::StatusOr<uint64_t> n =
      EraseNow(*this->tier_, {Ck("ns", "k")}, "", cache::EraseMode::kSupersede);
  ASSERT_OK(n);
  EXPECT_EQ(*n, 1u);
  absl::StatusOr<cache::Entry> got = LookupNow(*this->tier_, Ck("ns", "k"));
  ASSERT_OK(got);
  EXPECT_EQ(got->value, "v");
  EXPECT_EQ(cache::FreshnessAt(*got, absl::Now()), cache::Freshness::kStale);
  EXPECT_GE(got->expires_at, before - absl::Seconds(1));
}

TYPED_TEST_P(TierContractTest, StatsCountHitsMissesAndStores) {
  const cache::TierStats before = this->tier_->Stats();
  ASSERT_OK(StoreNow(*this->tier_, Ck("ns", "k"), EntryNow("v")));
  ASSERT_OK(LookupNow(*this->tier_, Ck("ns", "k")));
  (void)LookupNow(*this->tier_, Ck("ns", "absent"));
  const cache::TierStats after = this->tier_->Stats();
  EXPECT_EQ(after.stores - before.stores, 1u);
  EXPECT_EQ(after.hits - before.hits, 1u);
  EXPECT_EQ(after.misses - before.misses, 1u);
  EXPECT_TRUE(after.available);
}

TYPED_TEST_P(TierContractTest, ConcurrentCallsEachCompleteExactlyOnce) {
  constexpr int kThreads = 4;
  constexpr int kOps = 200;
  std::atomic<int> completions{0};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kOps; ++i) {
        const std::string key = Ck("ns", absl::StrCat("k", (t * 7 + i) % 16));
        if (i % 2 == 0) {
          if (!StoreNow(*this->tier_, key, EntryNow(key)).ok()) wrong.fetch_add(1);
        } else {
          absl::StatusOr<cache::Entry> e = LookupNow(*this->tier_, key);
          if (e.ok() && e->value != key) wrong.fetch_add(1);
          if (!e.ok() && e.status().code() != absl::StatusCode::kNotFound) wrong.fetch_add(1);
        }
        completions.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(completions.load(), kThreads * kOps);
  EXPECT_EQ(wrong.load(), 0);
}

REGISTER_TYPED_TEST_SUITE_P(TierContractTest, LookupOfAnAbsentKeyIsNotFound,
                            StoreThenLookupKeepsValueVersionAndTimes, StoreReplacesTheEntry,
                            KeysAndValuesAreBinarySafe, NamespacesAreSeparate,
                            StaleEntriesAreFoundUntilStaleUntil, EntryPastStaleUntilIsAMiss,
                            LookupManyAnswersEveryKeyInOrder, EraseRemovesTheKeysAndCountsThem,
                            ErasePrefixRemovesOnlyKeysStartingWithIt,
                            EraseSupersedeKeepsAStaleOnlyCopy, StatsCountHitsMissesAndStores,
                            ConcurrentCallsEachCompleteExactlyOnce);

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_CACHE_TIERS_TIER_CONTRACT_H_
