// The L2 tier when Redis misbehaves: blackholed, slow, frozen (SIGSTOP),
// resetting, killed mid-load, restarted, refusing. Every call must answer
// within the command timeout plus a margin (generous: this machine is shared
// and loaded), with Unavailable or a miss, never anything else; the circuit
// must open, and close again once Redis answers.
#include <signal.h>

#include <atomic>
#include <thread>

#include "absl/strings/match.h"
#include "cache/tiers/redis/redis_tier.h"
#include "gmock/gmock.h"
#include "tests/cache/tiers/redis/redis_test_env.h"
#include "tests/cache/tiers/tier_contract.h"
#include "tests/testing/fault_proxy.h"

namespace fanout::testing {
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TierContractTest);

namespace {

using ::testing::HasSubstr;
using State = cache::CircuitBreaker::State;

constexpr absl::Duration kTimeout = absl::Milliseconds(50);
// Scheduling slack on a loaded 2-core machine. A call without fanout's own
// deadline would wait forever on a blackhole or a frozen Redis.
constexpr absl::Duration kMargin = absl::Milliseconds(400);
// Redis answering again → the tier used again (README: within 5 s).
constexpr absl::Duration kRecovery = absl::Seconds(5);

std::unique_ptr<cache::RedisTier> TierOn(const std::string& address) {
  cache::RedisClientOptions o = ClientOptions(address, kTimeout);
  o.connect_timeout = absl::Milliseconds(500);
  o.start_wait = absl::Seconds(5);
  cache::RedisTierOptions t;
  t.key_prefix = UniquePrefix();
  auto tier = cache::NewRedisTier(o, t, Clock::Real());
  EXPECT_TRUE(tier.ok()) << tier.status();
  return tier.ok() ? *std::move(tier) : nullptr;
}

struct Timed {
  absl::StatusOr<cache::Entry> result;
  absl::Duration took;
};

Timed TimedLookup(cache::Tier& tier, const std::string& key) {
  const absl::Time start = absl::Now();
  absl::StatusOr<cache::Entry> r = LookupNow(tier, key, absl::Seconds(5));
  return {std::move(r), absl::Now() - start};
}

// Runs lookups from `threads` threads until `stop`; records the slowest call
// and any result that is neither a hit, a miss nor Unavailable.
class LookupLoad {
 public:
  LookupLoad(cache::Tier& tier, int threads, std::vector<std::string> keys) : tier_(tier) {
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this, t, keys] {
        for (size_t i = t; !stop_.load(); ++i) {
          Timed r = TimedLookup(tier_, keys[i % keys.size()]);
          calls_.fetch_add(1);
          const absl::StatusCode code = r.result.status().code();
          if (code != absl::StatusCode::kOk && code != absl::StatusCode::kNotFound &&
              code != absl::StatusCode::kUnavailable) {
            absl::MutexLock l(&mu_);
            bad_.push_back(r.result.status().ToString());
          }
          if (r.result.ok()) ok_.fetch_add(1);
          absl::MutexLock l(&mu_);
          slowest_ = std::max(slowest_, r.took);
        }
      });
    }
  }
  ~LookupLoad() { Stop(); }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  int calls() const { return calls_.load(); }
  int ok() const { return ok_.load(); }
  // Waits (bounded) for `n` more calls to complete.
  bool AwaitCalls(int n) {
    const int target = calls() + n;
    return PollUntil([&] { return calls() >= target; }, absl::Seconds(30));
  }
  absl::Duration slowest() {
    absl::MutexLock l(&mu_);
    return slowest_;
  }
  std::vector<std::string> bad() {
    absl::MutexLock l(&mu_);
    return bad_;
  }
  void ResetSlowest() {
    absl::MutexLock l(&mu_);
    slowest_ = absl::ZeroDuration();
  }

 private:
  cache::Tier& tier_;
  std::atomic<bool> stop_{false};
  std::atomic<int> calls_{0};
  std::atomic<int> ok_{0};
  absl::Mutex mu_;
  absl::Duration slowest_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> bad_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

// Stores `key`, then waits (bounded) until a lookup of it hits; returns how
// long that took.
absl::Duration TimeToRecover(cache::RedisTier& tier, const std::string& key) {
  const absl::Time start = absl::Now();
  EXPECT_TRUE(PollUntil(
      [&] {
        (void)StoreNow(tier, key, EntryNow("back"));
        return LookupNow(tier, key).ok();
      },
      absl::Seconds(30)))
      << "the tier never recovered";
  return absl::Now() - start;
}

std::vector<std::string> Keys(int n) {
  std::vector<std::string> keys;
  for (int i = 0; i < n; ++i) keys.push_back(Ck("ns", absl::StrCat("k", i)));
  return keys;
}

class RedisFaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    redis_ = RedisServer::Start(&error);
    ASSERT_NE(redis_, nullptr) << error;
  }
  void TearDown() override {
    if (redis_ != nullptr) redis_->Signal(SIGCONT);
  }
  std::unique_ptr<RedisServer> redis_;
};

TEST_F(RedisFaultsTest, BlackholedRedisCostsAtMostTheTimeoutAndOpensTheCircuit) {
  std::string error;
  auto proxy = FaultProxy::Start("127.0.0.1", redis_->port(), &error);
  ASSERT_NE(proxy, nullptr) << error;
  auto tier = TierOn(proxy->address());
  ASSERT_NE(tier, nullptr);
  const std::vector<std::string> keys = Keys(8);
  for (const auto& k : keys) ASSERT_OK(StoreNow(*tier, k, EntryNow("v")));

  proxy->Blackhole();
  {
    LookupLoad load(*tier, 4, keys);
    ASSERT_TRUE(PollUntil([&] { return tier->client_stats().circuit == State::kOpen; }));
    ASSERT_TRUE(load.AwaitCalls(200));
    load.Stop();
    EXPECT_LE(load.slowest(), kTimeout + kMargin);
    EXPECT_THAT(load.bad(), ::testing::IsEmpty());
    EXPECT_EQ(load.ok(), 0);
  }
  EXPECT_FALSE(tier->Stats().available);
  EXPECT_GE(tier->Stats().timeouts, 1u);
  Timed open = TimedLookup(*tier, keys[0]);
  EXPECT_THAT(open.result, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("circuit open")));
  EXPECT_LT(open.took, kMargin);

  proxy->Pass();
  EXPECT_LE(TimeToRecover(*tier, keys[0]), kRecovery);
  EXPECT_TRUE(PollUntil([&] {
    (void)LookupNow(*tier, keys[0]);
    return tier->client_stats().circuit == State::kClosed;
  }));
  EXPECT_TRUE(tier->Stats().available);
}

TEST_F(RedisFaultsTest, FrozenRedisCostsAtMostTheTimeoutAndIsUsedAgainAfterThaw) {
  auto tier = TierOn(redis_->address());
  ASSERT_NE(tier, nullptr);
  const std::vector<std::string> keys = Keys(8);
  for (const auto& k : keys) ASSERT_OK(StoreNow(*tier, k, EntryNow("v")));

  redis_->Signal(SIGSTOP);
  {
    LookupLoad load(*tier, 4, keys);
    ASSERT_TRUE(PollUntil([&] { return tier->client_stats().circuit == State::kOpen; }));
    ASSERT_TRUE(load.AwaitCalls(200));
    load.Stop();
    EXPECT_LE(load.slowest(), kTimeout + kMargin);
    EXPECT_THAT(load.bad(), ::testing::IsEmpty());
  }
  // Writes are dropped at once while it is frozen.
  const absl::Time start = absl::Now();
  EXPECT_THAT(StoreNow(*tier, keys[0], EntryNow("w")), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_LT(absl::Now() - start, kMargin);
  EXPECT_GE(tier->Stats().stores_dropped, 1u);

  redis_->Signal(SIGCONT);
  EXPECT_LE(TimeToRecover(*tier, keys[1]), kRecovery);
  EXPECT_TRUE(PollUntil([&] {
    (void)LookupNow(*tier, keys[1]);
    return tier->client_stats().circuit == State::kClosed;
  }));
}

TEST_F(RedisFaultsTest, SlowRedisTimesOutAndStaysSkippedWhileSlow) {
  std::string error;
  auto proxy = FaultProxy::Start("127.0.0.1", redis_->port(), &error);
  ASSERT_NE(proxy, nullptr) << error;
  auto tier = TierOn(proxy->address());
  ASSERT_NE(tier, nullptr);
  const std::vector<std::string> keys = Keys(4);
  for (const auto& k : keys) ASSERT_OK(StoreNow(*tier, k, EntryNow("v")));

  proxy->Delay(absl::Milliseconds(150));  // answers, but three times too late
  LookupLoad load(*tier, 2, keys);
  ASSERT_TRUE(PollUntil([&] { return tier->client_stats().circuit == State::kOpen; }));
  // While slow, probes fail (a PING must answer within the timeout too): the
  // circuit does not flap back to letting calls wait.
  const uint64_t opens = tier->client_stats().circuit_opens;
  ASSERT_TRUE(load.AwaitCalls(300));
  load.ResetSlowest();
  ASSERT_TRUE(load.AwaitCalls(300));
  EXPECT_LT(load.slowest(), kMargin);
  EXPECT_LE(tier->client_stats().circuit_opens, opens + 1);
  load.Stop();
  EXPECT_THAT(load.bad(), ::testing::IsEmpty());

  proxy->Pass();
  EXPECT_LE(TimeToRecover(*tier, keys[0]), kRecovery);
}

TEST_F(RedisFaultsTest, ResetConnectionsFailFastAndRecover) {
  std::string error;
  auto proxy = FaultProxy::Start("127.0.0.1", redis_->port(), &error);
  ASSERT_NE(proxy, nullptr) << error;
  auto tier = TierOn(proxy->address());
  ASSERT_NE(tier, nullptr);
  const std::vector<std::string> keys = Keys(4);
  proxy->Reset();
  {
    LookupLoad load(*tier, 2, keys);
    ASSERT_TRUE(load.AwaitCalls(200));
    load.Stop();
    EXPECT_LE(load.slowest(), kTimeout + kMargin);
    EXPECT_THAT(load.bad(), ::testing::IsEmpty());
    EXPECT_EQ(load.ok(), 0);
  }
  proxy->Pass();
  EXPECT_LE(TimeToRecover(*tier, keys[0]), kRecovery);
}

TEST_F(RedisFaultsTest, RedisKilledMidLoadFailsNoLookupAndRecoversAfterRestart) {
  auto tier = TierOn(redis_->address());
  ASSERT_NE(tier, nullptr);
  const std::vector<std::string> keys = Keys(16);
  std::atomic<bool> stop{false};
  std::atomic<int> store_bad{0};
  // Writers keep storing each key's own value; readers check what they get.
  std::thread writer([&] {
    for (size_t i = 0; !stop.load(); ++i) {
      const std::string& k = keys[i % keys.size()];
      absl::Status s = StoreNow(*tier, k, EntryNow(k));
      if (!s.ok() && s.code() != absl::StatusCode::kUnavailable) store_bad.fetch_add(1);
    }
  });
  LookupLoad load(*tier, 3, keys);
  ASSERT_TRUE(load.AwaitCalls(300));
  const int hits_before = load.ok();
  EXPECT_GT(hits_before, 0);

  redis_->Kill();
  ASSERT_TRUE(load.AwaitCalls(300));
  EXPECT_TRUE(PollUntil([&] { return !tier->Stats().available; }));

  std::string error;
  ASSERT_TRUE(redis_->Restart(&error)) << error;
  const int hits_at_restart = load.ok();
  EXPECT_TRUE(PollUntil([&] { return load.ok() > hits_at_restart + 50; }, absl::Seconds(30)))
      << "lookups never hit again after the restart";
  stop = true;
  writer.join();
  load.Stop();
  EXPECT_THAT(load.bad(), ::testing::IsEmpty());
  EXPECT_EQ(store_bad.load(), 0);
  EXPECT_LE(load.slowest(), kTimeout + kMargin);
  // Whatever the tier served was the key's own value.
  for (const auto& k : keys) {
    absl::StatusOr<cache::Entry> e = LookupNow(*tier, k);
    if (e.ok()) {
      EXPECT_EQ(e->value, k);
    }
  }
}

TEST_F(RedisFaultsTest, RestartedRedisIsAMissNotAnError) {
  auto tier = TierOn(redis_->address());
  ASSERT_NE(tier, nullptr);
  ASSERT_OK(StoreNow(*tier, Ck("ns", "k"), EntryNow("v")));
  std::string error;
  ASSERT_TRUE(redis_->Restart(&error)) << error;
  // The first calls may meet the lost connections; then the emptied Redis
  // answers misses.
  absl::StatusOr<cache::Entry> r;
  EXPECT_TRUE(PollUntil([&] {
    r = LookupNow(*tier, Ck("ns", "k"));
    return r.status().code() == absl::StatusCode::kNotFound;
  })) << r.status();
  ASSERT_OK(StoreNow(*tier, Ck("ns", "k"), EntryNow("again")));
  EXPECT_OK(LookupNow(*tier, Ck("ns", "k")));
}

TEST_F(RedisFaultsTest, RefusingRedisAnswersAtOnceAndOpensTheCircuit) {
  auto tier = TierOn(redis_->address());
  ASSERT_NE(tier, nullptr);
  redis_->Kill();
  LookupLoad load(*tier, 2, Keys(4));
  ASSERT_TRUE(PollUntil([&] { return tier->client_stats().circuit == State::kOpen; }));
  ASSERT_TRUE(load.AwaitCalls(200));
  load.Stop();
  EXPECT_LE(load.slowest(), kTimeout + kMargin);
  EXPECT_THAT(load.bad(), ::testing::IsEmpty());
  EXPECT_EQ(load.ok(), 0);
  EXPECT_GE(tier->client_stats().connect_failures, 1u);
}

}  // namespace
}  // namespace fanout::testing
