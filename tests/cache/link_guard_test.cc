#include "cache/link_guard.h"

#include <optional>

#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/fake_tier.h"
#include "tests/testing/status_matchers.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::FakeTier;

Entry FetchedAt(absl::Time t) {
  Entry e;
  e.value = "v";
  e.fetched_at = t;
  e.fresh_until = t + absl::Seconds(50);
  e.expires_at = t + absl::Seconds(60);
  e.stale_until = t + absl::Hours(1);
  return e;
}

TEST(LinkGuardTest, TrustL1AlwaysWhileUp) {
  LinkGuard guard(absl::Seconds(5));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_TRUE(guard.TrustL1(FetchedAt(t0 - absl::Hours(1)), t0));
  EXPECT_FALSE(guard.degraded());
}

TEST(LinkGuardTest, TrustL1WhileDegradedCountsFromTheLaterOfFetchAndLoss) {
  LinkGuard guard(absl::Seconds(5));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  guard.SetDegraded(t0);
  guard.SetDegraded(t0 + absl::Seconds(3));  // already down: the first loss counts
  const Entry old = FetchedAt(t0 - absl::Minutes(1));
  EXPECT_TRUE(guard.TrustL1(old, t0 + absl::Milliseconds(4999)));
  EXPECT_FALSE(guard.TrustL1(old, t0 + absl::Seconds(5)));
  const Entry fetched_while_down = FetchedAt(t0 + absl::Seconds(10));
  EXPECT_TRUE(guard.TrustL1(fetched_while_down, t0 + absl::Seconds(14)));
  EXPECT_FALSE(guard.TrustL1(fetched_while_down, t0 + absl::Seconds(15)));
  guard.SetUp();
  EXPECT_TRUE(guard.TrustL1(old, t0 + absl::Hours(1)));
}

TEST(LinkGuardTest, DistrustLocalBeforeOnlyMovesForwardAndSparesL1) {
  LinkGuard guard(absl::Seconds(5));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  guard.DistrustLocalBefore(t0);
  guard.DistrustLocalBefore(t0 - absl::Hours(1));
  EXPECT_FALSE(guard.TrustLocal(FetchedAt(t0 - absl::Seconds(30)), t0 + absl::Seconds(1)));
  EXPECT_TRUE(guard.TrustLocal(FetchedAt(t0), t0 + absl::Seconds(1)));
  EXPECT_TRUE(guard.TrustL1(FetchedAt(t0 - absl::Seconds(30)), t0 + absl::Seconds(1)));
}

TEST(LinkGuardTest, GuardedTierSupersedesWhatItDoesNotTrust) {
  testing::FakeClock clock;
  LinkGuard guard(absl::Seconds(5));
  std::unique_ptr<Tier> tier =
      NewGuardedTier(std::make_unique<FakeTier>(TierId::kL3, &clock), &guard, &clock);
  const absl::Time t0 = clock.Now();
  std::optional<absl::Status> stored;
  tier->Store("old", FetchedAt(t0 - absl::Seconds(30)), [&](absl::Status s) { stored = s; });
  ASSERT_OK(*stored);
  tier->Store("new", FetchedAt(t0 + absl::Seconds(1)), [](absl::Status) {});
  guard.DistrustLocalBefore(t0);
  clock.Advance(absl::Seconds(2));

  std::optional<absl::StatusOr<Entry>> old_entry;
  tier->Lookup("old", absl::InfiniteFuture(),
               [&](absl::StatusOr<Entry> e) { old_entry = std::move(e); });
  ASSERT_OK(*old_entry);
  EXPECT_EQ(FreshnessAt(**old_entry, clock.Now()), Freshness::kStale);
  EXPECT_EQ((*old_entry)->value, "v");  // kept as a fallback

  std::optional<std::vector<absl::StatusOr<Entry>>> many;
  tier->LookupMany({"old", "new"}, absl::InfiniteFuture(),
                   [&](std::vector<absl::StatusOr<Entry>> e) { many = std::move(e); });
  ASSERT_EQ(many->size(), 2u);
  EXPECT_EQ(FreshnessAt(*(*many)[0], clock.Now()), Freshness::kStale);
  EXPECT_EQ(FreshnessAt(*(*many)[1], clock.Now()), Freshness::kFresh);
  EXPECT_EQ(tier->id(), TierId::kL3);
}

}  // namespace
}  // namespace fanout::cache
