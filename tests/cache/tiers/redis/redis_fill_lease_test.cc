// The fill lease on a real redis-server: the contract, and what is
// particular to Redis (polling, key spaces, outages, shutdown).
#include "cache/tiers/redis/redis_fill_lease.h"

#include "cache/tiers/redis/redis_tier.h"
#include "gmock/gmock.h"
#include "tests/cache/fill_lease_contract.h"
#include "tests/cache/tiers/redis/redis_test_env.h"
#include "tests/testing/manual_executor.h"

namespace fanout::testing {
// The lease contract borrows the tier contract's helpers, not its suite.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TierContractTest);

namespace {

struct RedisLeaseEnv {
  std::unique_ptr<cache::FillLease> Make() {
    RedisServer* server = SharedRedis();
    if (server == nullptr) return nullptr;
    const std::string prefix = UniquePrefix();
    cache::RedisTierOptions t;
    t.key_prefix = prefix;
    auto made = cache::NewRedisTier(ClientOptions(server->address()), t, Clock::Real());
    EXPECT_TRUE(made.ok()) << made.status();
    if (!made.ok()) return nullptr;
    tier = *std::move(made);
    cache::RedisFillLeaseOptions l;
    l.key_prefix = prefix;
    return std::make_unique<cache::RedisFillLease>(tier->client(), l, Clock::Real());
  }
  void Write(const std::string& key, const cache::Entry& e) { ASSERT_OK(StoreNow(*tier, key, e)); }
  void Settle() {}

  std::unique_ptr<cache::RedisTier> tier;
};

INSTANTIATE_TYPED_TEST_SUITE_P(Redis, FillLeaseContractTest, ::testing::Types<RedisLeaseEnv>);

class RedisFillLeaseTest : public ::testing::Test {
 protected:
  void SetUp() override { lease_ = env_.Make(); }
  RedisLeaseEnv env_;
  std::unique_ptr<cache::FillLease> lease_;
};

TEST_F(RedisFillLeaseTest, WaitingPollsWithAGrowingBackoff) {
  ASSERT_NE(lease_, nullptr);
  ASSERT_OK(AcquireNow(*lease_, Ck("ns", "k"), absl::Seconds(30)));
  PendingFill wait(*lease_, Ck("ns", "k"), absl::InfinitePast(), absl::Milliseconds(600));
  EXPECT_THAT(wait.Get([] {}), StatusIs(absl::StatusCode::kDeadlineExceeded));
  // 5, 10, 20, 40, 80 ms, then every 100 ms: about ten round trips, not one
  // every few milliseconds.
  const cache::FillLeaseStats s = lease_->Stats();
  EXPECT_GE(s.polls, 3u);
  EXPECT_LE(s.polls, 15u);
}

TEST_F(RedisFillLeaseTest, LeasesAreNotValuesForLookupsOrPrefixErase) {
  ASSERT_NE(lease_, nullptr);
  absl::StatusOr<cache::LeaseGrant> g = AcquireNow(*lease_, Ck("ns", "k"), absl::Seconds(30));
  ASSERT_OK(g);
  ASSERT_TRUE(g->acquired);
  EXPECT_THAT(LookupNow(*env_.tier, Ck("ns", "k")), StatusIs(absl::StatusCode::kNotFound));
  absl::StatusOr<uint64_t> n = EraseNow(*env_.tier, {Ck("ns", "k")}, Ck("ns", ""));
  ASSERT_OK(n);
  EXPECT_EQ(*n, 0u);
  EXPECT_OK(ReleaseNow(*lease_, Ck("ns", "k"), g->token));  // still there to release
}

TEST_F(RedisFillLeaseTest, WithoutRedisEveryCallIsUnavailableAtOnce) {
  cache::RedisClientOptions o = ClientOptions(absl::StrCat("127.0.0.1:", PickFreePort()));
  auto client = cache::RedisClient::Create(o);
  ASSERT_OK(client);
  cache::RedisFillLease lease(*client, cache::RedisFillLeaseOptions{}, Clock::Real());
  EXPECT_THAT(AcquireNow(lease, Ck("ns", "k"), absl::Seconds(1)),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(ReleaseNow(lease, Ck("ns", "k"), "t"), StatusIs(absl::StatusCode::kUnavailable));
  PendingFill wait(lease, Ck("ns", "k"), absl::InfinitePast(), absl::Seconds(10));
  EXPECT_TRUE(wait.answered());  // inline: refused at once
  EXPECT_THAT(wait.Get([] {}), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(lease.Stats().errors, 3u);
}

TEST_F(RedisFillLeaseTest, DestructionEndsWaitsInFlight) {
  ASSERT_NE(lease_, nullptr);
  ASSERT_OK(AcquireNow(*lease_, Ck("ns", "k"), absl::Seconds(30)));
  PendingFill wait(*lease_, Ck("ns", "k"), absl::InfinitePast(), absl::Seconds(60));
  const absl::Time start = absl::Now();
  lease_.reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  ASSERT_TRUE(wait.answered());
  EXPECT_THAT(wait.Get([] {}), StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(RedisFillLeaseTest, AnswersRunOnTheExecutorWhenGivenOne) {
  ASSERT_NE(lease_, nullptr);
  ManualExecutor executor;
  cache::RedisFillLeaseOptions o;
  o.key_prefix = env_.tier->keys().prefix();
  o.executor = &executor;
  cache::RedisFillLease lease(env_.tier->client(), o, Clock::Real());
  std::atomic<int> answered{0};
  std::thread::id acquired_on;
  std::thread::id waited_on;
  lease.Acquire(Ck("ns", "k"), absl::Seconds(30), absl::Now() + absl::Seconds(5),
                [&](absl::StatusOr<cache::LeaseGrant> g) {
                  EXPECT_TRUE(g.ok() && g->acquired);
                  acquired_on = std::this_thread::get_id();
                  ++answered;
                });
  ASSERT_TRUE(PollUntil([&] {
    executor.RunUntilIdle();
    return answered.load() == 1;
  }));
  lease.AwaitFill(Ck("ns", "k"), absl::InfinitePast(), absl::Now() + absl::Seconds(10),
                  [&](absl::StatusOr<cache::Entry> e) {
                    EXPECT_OK(e);
                    waited_on = std::this_thread::get_id();
                    ++answered;
                  });
  env_.Write(Ck("ns", "k"), EntryNow("v"));
  EXPECT_TRUE(PollUntil([&] {
    executor.RunUntilIdle();
    return answered.load() == 2;
  }));
  EXPECT_EQ(acquired_on, std::this_thread::get_id());
  EXPECT_EQ(waited_on, std::this_thread::get_id());
}

}  // namespace
}  // namespace fanout::testing
