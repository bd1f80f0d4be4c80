// The invalidation bus on a real redis-server: delivery between pods,
// replay after a lost connection, gaps, a frozen Redis, and fenced L2
// writes.
#include "cache/tiers/redis/redis_bus.h"

#include <signal.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "cache/tiers/envelope.h"
#include "cache/tiers/redis/redis_tier.h"
#include "gmock/gmock.h"
#include "tests/cache/tiers/redis/redis_test_env.h"
#include "tests/cache/tiers/tier_contract.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/fake_invalidation_bus.h"
#include "tests/testing/fake_tier.h"
#include "tests/testing/fault_proxy.h"
#include "tests/testing/status_matchers.h"

namespace fanout::testing {
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TierContractTest);

namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr absl::Duration kHeartbeat = absl::Milliseconds(200);
constexpr absl::Duration kDeadAfter = absl::Seconds(1);

// One pod's share of the bus: an L2 tier, its client, the bus (reading
// through `reader_address`, which may be a fault proxy) and a recorder
// subscribed to it.
struct BusPod {
  BusPod(const std::string& address, const std::string& prefix, const std::string& pod,
         const std::string& reader_address = "", absl::Duration heartbeat = kHeartbeat) {
    cache::RedisClientOptions o = ClientOptions(address, absl::Seconds(2));
    auto t = cache::NewRedisTier(o, cache::RedisTierOptions{.key_prefix = prefix}, Clock::Real());
    EXPECT_OK(t);
    tier = *std::move(t);
    applied = std::make_shared<cache::AppliedLog>(Clock::Real());
    cache::RedisBusOptions b;
    b.key_prefix = prefix;
    b.pod = pod;
    b.heartbeat = heartbeat;
    b.dead_after = std::max(kDeadAfter, 2 * heartbeat);
    b.fence_ttl = absl::Seconds(20);
    auto started = cache::RedisBus::Start(
        tier->client(), ClientOptions(reader_address.empty() ? address : reader_address),
        tier.get(), applied, b);
    EXPECT_OK(started);
    bus = *std::move(started);
    bus->Subscribe(&heard);
    fenced = cache::NewFencedTier(std::make_unique<Forward>(tier.get()), tier->client(), prefix,
                                  applied, b.fence_ttl);
  }
  ~BusPod() {
    bus->Unsubscribe(&heard);
    bus.reset();
    fenced.reset();
  }

  bool WaitUp() {
    return PollUntil([&] { return bus->link_state() == cache::LinkState::kUp; });
  }
  absl::Status Publish(cache::Invalidation inv) {
    absl::Notification done;
    absl::Status out;
    bus->Publish(std::move(inv), absl::Now() + absl::Seconds(5), [&](absl::Status s) {
      out = std::move(s);
      done.Notify();
    });
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
    return out;
  }
  // A fenced L2 write of `key` for a fill that started at `started`.
  absl::Status Store(const std::string& ckey, const std::string& value, absl::Time started) {
    cache::Entry e;
    e.value = value;
    e.fetched_at = absl::Now();
    e.fill_time = e.fetched_at - started;
    e.fresh_until = e.fetched_at + absl::Seconds(30);
    e.expires_at = e.fetched_at + absl::Seconds(60);
    e.stale_until = e.fetched_at + absl::Hours(1);
    absl::Notification done;
    absl::Status out;
    fenced->Store(ckey, e, [&](absl::Status s) {
      out = std::move(s);
      done.Notify();
    });
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
    return out;
  }
  std::optional<std::string> L2Value(const std::string& ckey) {
    absl::StatusOr<cache::Entry> e = LookupNow(*tier, ckey, absl::Seconds(5));
    if (!e.ok()) return std::nullopt;
    return e->value.ToString();
  }
  // Waits until the bus has applied a position other than `before`.
  bool WaitApplied(const std::string& before) {
    return PollUntil([&] { return applied->Last() != before && !applied->Last().empty(); });
  }

  // A Tier that forwards to the pod's RedisTier (owned elsewhere).
  class Forward final : public cache::Tier {
   public:
    explicit Forward(cache::Tier* t) : t_(t) {}
    cache::TierId id() const override { return t_->id(); }
    void Lookup(absl::string_view k, absl::Time d, LookupDone done) override {
      t_->Lookup(k, d, std::move(done));
    }
    void LookupMany(std::vector<std::string> k, absl::Time d, LookupManyDone done) override {
      t_->LookupMany(std::move(k), d, std::move(done));
    }
    void Store(absl::string_view k, const cache::Entry& e, StoreDone done) override {
      t_->Store(k, e, std::move(done));
    }
    void Erase(std::vector<std::string> k, std::string p, cache::EraseMode m, absl::Time d,
               EraseDone done) override {
      t_->Erase(std::move(k), std::move(p), m, d, std::move(done));
    }
    cache::TierStats Stats() const override { return t_->Stats(); }

   private:
    cache::Tier* const t_;
  };

  std::unique_ptr<cache::RedisTier> tier;
  std::shared_ptr<cache::AppliedLog> applied;
  std::unique_ptr<cache::RedisBus> bus;
  std::unique_ptr<cache::Tier> fenced;
  RecordingSubscriber heard;
};

cache::Invalidation Keys(std::vector<std::string> keys, std::string prefix = "") {
  cache::Invalidation inv;
  inv.ns = "n";
  inv.keys = std::move(keys);
  inv.prefix = std::move(prefix);
  return inv;
}

// The id of the bus reader of `pod` in CLIENT LIST.
std::string BusClientId(RedisServer& redis, const std::string& pod) {
  for (absl::string_view line : absl::StrSplit(redis.Cli({"CLIENT", "LIST"}).out, '\n')) {
    if (!absl::StrContains(line, absl::StrCat(" name=fanout-bus:", pod, " "))) continue;
    for (absl::string_view field : absl::StrSplit(line, ' ')) {
      if (absl::StartsWith(field, "id=")) return std::string(field.substr(3));
    }
  }
  return "";
}

class RedisBusTest : public ::testing::Test {
 protected:
  RedisBusTest() : redis_(SharedRedis()), prefix_(UniquePrefix()) {}
  RedisServer* redis_;
  std::string prefix_;
};

TEST_F(RedisBusTest, PublishReachesOtherPodsButNotItsPublisher) {
  ASSERT_NE(redis_, nullptr);
  BusPod a(redis_->address(), prefix_, "a");
  BusPod b(redis_->address(), prefix_, "b");
  ASSERT_TRUE(a.WaitUp());
  ASSERT_TRUE(b.WaitUp());
  cache::Invalidation inv = Keys({"k1", "k/2"}, "p/");
  inv.purge_survival = true;
  ASSERT_OK(a.Publish(inv));
  ASSERT_OK(a.Publish(Keys({"k3"})));
  ASSERT_TRUE(b.heard.WaitForEvents(3, absl::Seconds(10)));  // link up + 2
  std::vector<cache::Invalidation> got = b.heard.invalidations();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].ns, "n");
  EXPECT_THAT(got[0].keys, ElementsAre("k1", "k/2"));
  EXPECT_EQ(got[0].prefix, "p/");
  EXPECT_TRUE(got[0].purge_survival);
  EXPECT_EQ(got[0].sender, a.bus->id());
  EXPECT_EQ(got[0].sequence, 1u);
  EXPECT_EQ(got[1].sequence, 2u);
  EXPECT_TRUE(absl::StartsWith(a.bus->id(), "a/"));
  EXPECT_TRUE(a.heard.invalidations().empty());
  EXPECT_EQ(a.bus->Stats().published, 2u);
  EXPECT_EQ(b.bus->Stats().received, 2u);
}

TEST_F(RedisBusTest, LinkIsUpWithoutWaitingForAHeartbeatAndMissesNothingAfter) {
  ASSERT_NE(redis_, nullptr);
  // A heartbeat longer than WaitUp's bound: the first read must not block.
  BusPod b(redis_->address(), prefix_, "b", "", absl::Seconds(60));
  BusPod a(redis_->address(), prefix_, "a");
  ASSERT_TRUE(b.WaitUp());
  ASSERT_TRUE(a.WaitUp());
  ASSERT_OK(a.Publish(Keys({"k1"})));
  ASSERT_TRUE(b.heard.WaitForEvents(2, absl::Seconds(10)));  // link up + 1
  ASSERT_EQ(b.heard.invalidations().size(), 1u);
  EXPECT_THAT(b.heard.invalidations()[0].keys, ElementsAre("k1"));
}

TEST_F(RedisBusTest, PublishErasesTheL2ValuesItNames) {
  ASSERT_NE(redis_, nullptr);
  BusPod a(redis_->address(), prefix_, "a");
  for (const char* k : {"k", "p/x", "p/y", "q"}) {
    ASSERT_OK(a.Store(cache::CompositeKey("n", k), "v", absl::Now()));
  }
  ASSERT_TRUE(a.L2Value(cache::CompositeKey("n", "p/x")).has_value());
  ASSERT_OK(a.Publish(Keys({"k"}, "p/")));
  EXPECT_FALSE(a.L2Value(cache::CompositeKey("n", "k")).has_value());
  EXPECT_FALSE(a.L2Value(cache::CompositeKey("n", "p/x")).has_value());
  EXPECT_FALSE(a.L2Value(cache::CompositeKey("n", "p/y")).has_value());
  EXPECT_EQ(a.L2Value(cache::CompositeKey("n", "q")), "v");
}

TEST_F(RedisBusTest, PublishOfNothingIsInvalidArgument) {
  ASSERT_NE(redis_, nullptr);
  BusPod a(redis_->address(), prefix_, "a");
  EXPECT_THAT(a.Publish(Keys({})), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(RedisBusTest, KilledConnectionIsDegradedThenReplaysWhatWasPublishedMeanwhile) {
  ASSERT_NE(redis_, nullptr);
  std::string error;
  auto proxy = FaultProxy::Start("127.0.0.1", redis_->port(), &error);
  ASSERT_NE(proxy, nullptr) << error;
  BusPod a(redis_->address(), prefix_, "a");
  BusPod b(redis_->address(), prefix_, "b", proxy->address());
  ASSERT_TRUE(b.WaitUp());
  proxy->Reset();  // cuts the reader, and every reconnect
  ASSERT_TRUE(PollUntil([&] { return b.bus->link_state() == cache::LinkState::kDegraded; }));
  for (int i = 0; i < 5; ++i) ASSERT_OK(a.Publish(Keys({absl::StrCat("k", i)})));
  proxy->Pass();
  ASSERT_TRUE(b.WaitUp());
  ASSERT_TRUE(b.heard.WaitForEvents(8, absl::Seconds(10)));
  EXPECT_THAT(b.heard.events(), ElementsAre("link up", "link degraded", "inv n:[k0]", "inv n:[k1]",
                                            "inv n:[k2]", "inv n:[k3]", "inv n:[k4]", "link up"));
  EXPECT_EQ(b.bus->Stats().gaps, 0u);
  EXPECT_EQ(b.bus->Stats().link_downs, 1u);
}

TEST_F(RedisBusTest, ClientKillOfTheReaderLosesNothing) {
  ASSERT_NE(redis_, nullptr);
  BusPod a(redis_->address(), prefix_, "a");
  BusPod b(redis_->address(), prefix_, "b");
  ASSERT_TRUE(b.WaitUp());
  int published = 0;
  for (int round = 0; round < 3; ++round) {
    const std::string id = BusClientId(*redis_, "b");
    ASSERT_FALSE(id.empty()) << redis_->Cli({"CLIENT", "LIST"}).out;
    EXPECT_EQ(redis_->Cli({"CLIENT", "KILL", "ID", id}).out, "1\n");
    for (int i = 0; i < 3; ++i) ASSERT_OK(a.Publish(Keys({absl::StrCat("k", published++)})));
    ASSERT_TRUE(PollUntil([&] { return !BusClientId(*redis_, "b").empty(); }));
  }
  ASSERT_TRUE(PollUntil([&] { return b.heard.invalidations().size() == 9u; }));
  std::vector<cache::Invalidation> got = b.heard.invalidations();
  for (int i = 0; i < 9; ++i) EXPECT_EQ(got[i].keys.front(), absl::StrCat("k", i));
  EXPECT_EQ(b.bus->Stats().gaps, 0u);
  EXPECT_GE(b.bus->Stats().link_downs, 1u);
}

TEST_F(RedisBusTest, EntriesTrimmedWhileDownAreAGap) {
  ASSERT_NE(redis_, nullptr);
  std::string error;
  auto proxy = FaultProxy::Start("127.0.0.1", redis_->port(), &error);
  ASSERT_NE(proxy, nullptr) << error;
  BusPod a(redis_->address(), prefix_, "a");
  BusPod b(redis_->address(), prefix_, "b", proxy->address());
  ASSERT_TRUE(b.WaitUp());
  ASSERT_OK(a.Publish(Keys({"seen"})));
  ASSERT_TRUE(b.heard.WaitForEvents(2, absl::Seconds(10)));
  proxy->Reset();
  ASSERT_TRUE(PollUntil([&] { return b.bus->link_state() == cache::LinkState::kDegraded; }));
  for (int i = 0; i < 3; ++i) ASSERT_OK(a.Publish(Keys({"missed"})));
  ASSERT_OK(RunNow(*a.tier->client(), {"XTRIM", prefix_ + "inv", "MAXLEN", "0"}));
  ASSERT_OK(a.Publish(Keys({"after"})));
  proxy->Pass();
  ASSERT_TRUE(b.heard.WaitForEvents(6, absl::Seconds(10)));
  EXPECT_THAT(b.heard.events(), ElementsAre("link up", "inv n:[seen]", "link degraded", "gap",
                                            "inv n:[after]", "link up"));
  EXPECT_EQ(b.bus->Stats().gaps, 1u);
}

TEST_F(RedisBusTest, StreamLostFromRedisIsAGap) {
  ASSERT_NE(redis_, nullptr);
  BusPod a(redis_->address(), prefix_, "a");
  BusPod b(redis_->address(), prefix_, "b");
  ASSERT_TRUE(b.WaitUp());
  ASSERT_OK(a.Publish(Keys({"k"})));
  ASSERT_TRUE(b.heard.WaitForEvents(2, absl::Seconds(10)));
  ASSERT_OK(RunNow(*a.tier->client(), {"DEL", prefix_ + "inv"}));  // as a restart would
  ASSERT_TRUE(b.heard.WaitForEvents(3, absl::Seconds(10)));
  EXPECT_EQ(b.heard.events()[2], "gap");
  // Only one: the bus resumes at the (new) stream's end.
  ASSERT_OK(a.Publish(Keys({"k2"})));
  ASSERT_TRUE(b.heard.WaitForEvents(4, absl::Seconds(10)));
  EXPECT_EQ(b.heard.events()[3], "inv n:[k2]");
  EXPECT_EQ(b.bus->Stats().gaps, 1u);
}

TEST_F(RedisBusTest, FrozenRedisIsDegradedWithoutWaitingForTcp) {
  std::string error;
  auto redis = RedisServer::Start(&error);
  ASSERT_NE(redis, nullptr) << error;
  BusPod b(redis->address(), prefix_, "b");
  ASSERT_TRUE(b.WaitUp());
  redis->Signal(SIGSTOP);
  const absl::Time frozen = absl::Now();
  // Bounded generously (a loaded machine); a dead TCP peer is not noticed
  // for minutes without the heartbeat.
  const bool degraded = PollUntil(
      [&] { return b.bus->link_state() == cache::LinkState::kDegraded; }, absl::Seconds(20));
  const absl::Duration took = absl::Now() - frozen;
  redis->Signal(SIGCONT);
  ASSERT_TRUE(degraded);
  EXPECT_LT(took, absl::Seconds(20));
  EXPECT_TRUE(
      PollUntil([&] { return b.bus->link_state() == cache::LinkState::kUp; }, absl::Seconds(20)));
}

TEST_F(RedisBusTest, FencedWriteOfAFillThatStartedBeforeAnInvalidationIsRefused) {
  ASSERT_NE(redis_, nullptr);
  BusPod a(redis_->address(), prefix_, "a");
  BusPod b(redis_->address(), prefix_, "b");
  ASSERT_TRUE(b.WaitUp());
  ASSERT_TRUE(b.WaitApplied(""));
  const std::string ck = cache::CompositeKey("n", "k");
  const absl::Time fill_started = absl::Now();
  absl::SleepFor(absl::Milliseconds(5));  // the clock moves between the two events
  const std::string before = b.applied->Last();
  ASSERT_OK(a.Publish(Keys({"k"})));
  // b's fill (origin read before the invalidation) ends after it: refused.
  EXPECT_THAT(b.Store(ck, "old", fill_started), StatusIs(absl::StatusCode::kAborted));
  EXPECT_FALSE(b.L2Value(ck).has_value());
  EXPECT_EQ(b.bus->Stats().fenced_stores, 1u);
  // A fill that starts once b has applied the invalidation writes.
  ASSERT_TRUE(b.WaitApplied(before));
  absl::SleepFor(absl::Milliseconds(5));
  ASSERT_OK(b.Store(ck, "new", absl::Now()));
  EXPECT_EQ(b.L2Value(ck), "new");
  // Other keys were never fenced.
  ASSERT_OK(b.Store(cache::CompositeKey("n", "other"), "v", fill_started));
}

TEST_F(RedisBusTest, PrefixFenceRefusesOldFillsUnderThePrefixOnly) {
  ASSERT_NE(redis_, nullptr);
  BusPod a(redis_->address(), prefix_, "a");
  BusPod b(redis_->address(), prefix_, "b");
  ASSERT_TRUE(b.WaitUp());
  ASSERT_TRUE(b.WaitApplied(""));
  const absl::Time fill_started = absl::Now();
  absl::SleepFor(absl::Milliseconds(5));
  ASSERT_OK(a.Publish(Keys({}, "flags/")));
  EXPECT_THAT(b.Store(cache::CompositeKey("n", "flags/a/b"), "old", fill_started),
              StatusIs(absl::StatusCode::kAborted));
  EXPECT_THAT(b.Store(cache::CompositeKey("n", "flags/"), "old", fill_started),
              StatusIs(absl::StatusCode::kAborted));
  ASSERT_OK(b.Store(cache::CompositeKey("n", "flag"), "v", fill_started));
  ASSERT_OK(b.Store(cache::CompositeKey("other", "flags/a"), "v", fill_started));
}

TEST_F(RedisBusTest, FencedWriteOfAFillOlderThanHalfTheFenceLifetimeIsNotMade) {
  ASSERT_NE(redis_, nullptr);
  BusPod b(redis_->address(), prefix_, "b");
  ASSERT_TRUE(b.WaitUp());
  EXPECT_THAT(b.Store(cache::CompositeKey("n", "slow"), "v", absl::Now() - absl::Seconds(10)),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("too old")));
  EXPECT_FALSE(b.L2Value(cache::CompositeKey("n", "slow")).has_value());
}

TEST(FencedTierTest, WriteWhileRedisIsUnavailableIsDroppedNotHandedOnUnfenced) {
  // The inner tier writes without a fence: a write the fenced tier cannot
  // check must never reach it (Redis may be back by the time it would
  // check again, and take a fill from before an invalidation).
  cache::RedisClientOptions o = ClientOptions(absl::StrCat("127.0.0.1:", PickFreePort()));
  o.start_wait = absl::ZeroDuration();
  absl::StatusOr<std::shared_ptr<cache::RedisClient>> client = cache::RedisClient::Create(o);
  ASSERT_OK(client);
  ASSERT_FALSE((*client)->Available());
  auto inner = std::make_unique<FakeTier>(cache::TierId::kL2, Clock::Real());
  FakeTier* raw = inner.get();
  std::unique_ptr<cache::Tier> fenced = cache::NewFencedTier(
      std::move(inner), *client, "p:", std::make_shared<cache::AppliedLog>(Clock::Real()),
      absl::Seconds(20));
  cache::Entry e;
  e.value = "v";
  e.fetched_at = absl::Now();
  e.fresh_until = e.fetched_at + absl::Seconds(30);
  e.expires_at = e.fetched_at + absl::Seconds(60);
  e.stale_until = e.fetched_at + absl::Hours(1);
  std::optional<absl::Status> stored;
  fenced->Store(cache::CompositeKey("n", "k"), e, [&](absl::Status s) { stored = s; });
  ASSERT_TRUE(stored.has_value());
  EXPECT_THAT(*stored, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_FALSE(raw->Contains(cache::CompositeKey("n", "k")));
  EXPECT_EQ(fenced->Stats().stores_dropped, 1u);
}

TEST(AppliedLogTest, AtAnswersThePositionAppliedAtThatTime) {
  FakeClock clock;
  cache::AppliedLog log(&clock, /*capacity=*/3);
  const absl::Time t0 = clock.Now();
  EXPECT_EQ(log.At(t0), "0-0");
  log.Applied("1-0");
  clock.Advance(absl::Seconds(1));
  log.Applied("5-0");
  clock.Advance(absl::Seconds(1));
  log.Applied("9-1");
  EXPECT_EQ(log.At(t0 - absl::Seconds(1)), "0-0");
  EXPECT_EQ(log.At(t0), "1-0");
  EXPECT_EQ(log.At(t0 + absl::Milliseconds(1500)), "5-0");
  EXPECT_EQ(log.At(t0 + absl::Seconds(5)), "9-1");
  clock.Advance(absl::Seconds(1));
  log.Applied("12-0");  // the oldest is forgotten: before it, nothing is known
  EXPECT_EQ(log.At(t0), "0-0");
  EXPECT_EQ(log.Last(), "12-0");
}

TEST(StreamIdTest, AfterComparesMillisecondsThenSequence) {
  EXPECT_TRUE(cache::StreamIdAfter("10-0", "9-5"));
  EXPECT_TRUE(cache::StreamIdAfter("10-2", "10-1"));
  EXPECT_FALSE(cache::StreamIdAfter("10-1", "10-1"));
  EXPECT_FALSE(cache::StreamIdAfter("9-9", "10-0"));
  EXPECT_TRUE(cache::StreamIdAfter("0-0", "garbage"));
}

}  // namespace
}  // namespace fanout::testing
