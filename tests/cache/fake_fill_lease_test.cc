// The fill-lease contract over the in-memory fake the read-path tests use.
#include "tests/testing/fake_fill_lease.h"

#include "tests/cache/fill_lease_contract.h"
#include "tests/testing/fake_clock.h"

namespace fanout::testing {
// The lease contract borrows the tier contract's helpers, not its suite.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TierContractTest);

namespace {

struct FakeLeaseEnv {
  FakeLeaseEnv() : values(cache::TierId::kL2, Clock::Real()) {}
  std::unique_ptr<cache::FillLease> Make() {
    auto lease = std::make_unique<FakeFillLease>(Clock::Real(), &values);
    fake = lease.get();
    return lease;
  }
  void Write(const std::string& key, const cache::Entry& e) {
    values.Put(key, e);
    fake->Settle();
  }
  void Settle() { fake->Settle(); }

  FakeTier values;
  FakeFillLease* fake = nullptr;
};

INSTANTIATE_TYPED_TEST_SUITE_P(Fake, FillLeaseContractTest, ::testing::Types<FakeLeaseEnv>);

TEST(FakeFillLeaseTest, FollowsItsClockAndFailureKnob) {
  FakeClock clock;
  FakeTier values(cache::TierId::kL2, &clock);
  FakeFillLease lease(&clock, &values);
  absl::StatusOr<cache::LeaseGrant> a = AcquireNow(lease, "k", absl::Seconds(2));
  ASSERT_OK(a);
  EXPECT_TRUE(a->acquired);
  EXPECT_TRUE(lease.Held("k"));
  PendingFill wait(lease, "k", absl::InfinitePast(), absl::ZeroDuration() + absl::Hours(1));
  EXPECT_EQ(lease.waiting(), 1u);
  clock.Advance(absl::Seconds(3));  // the holder's lease runs out
  lease.Settle();
  EXPECT_THAT(wait.Get([] {}), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(lease.Held("k"));
  lease.set_failure(absl::UnavailableError("down"));
  EXPECT_THAT(AcquireNow(lease, "k", absl::Seconds(2)), StatusIs(absl::StatusCode::kUnavailable));
}

}  // namespace
}  // namespace fanout::testing
