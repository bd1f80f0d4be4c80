// The Redis L2 tier against a real redis-server: the tier contract, and what
// is particular to Redis (expiry, round trips, undecodable values, the
// supersede script, key prefixes).
#include "cache/tiers/redis/redis_tier.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "cache/tiers/envelope.h"
#include "cache/tiers/redis/redis_keys.h"
#include "gmock/gmock.h"
#include "tests/cache/tiers/redis/redis_test_env.h"
#include "tests/cache/tiers/tier_contract.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/manual_executor.h"

namespace fanout::testing {
namespace {

using ::testing::HasSubstr;

struct RedisTierEnv {
  std::unique_ptr<cache::Tier> Make() {
    RedisServer* server = SharedRedis();
    if (server == nullptr) return nullptr;
    cache::RedisTierOptions t;
    t.key_prefix = UniquePrefix();
    auto tier = cache::NewRedisTier(ClientOptions(server->address()), t, Clock::Real());
    EXPECT_TRUE(tier.ok()) << tier.status();
    if (!tier.ok()) return nullptr;
    return *std::move(tier);
  }
};

INSTANTIATE_TYPED_TEST_SUITE_P(Redis, TierContractTest, ::testing::Types<RedisTierEnv>);

class RedisTierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = SharedRedis();
    ASSERT_NE(server_, nullptr);
    tier_ = MakeTier(Clock::Real());
    ASSERT_NE(tier_, nullptr);
  }

  std::unique_ptr<cache::RedisTier> MakeTier(Clock* clock, int batch = 1000,
                                             std::string prefix = "") {
    cache::RedisTierOptions t;
    t.key_prefix = prefix.empty() ? UniquePrefix() : prefix;
    t.batch = batch;
    auto tier = cache::NewRedisTier(ClientOptions(server_->address()), t, clock);
    EXPECT_TRUE(tier.ok()) << tier.status();
    return tier.ok() ? *std::move(tier) : nullptr;
  }

  // A raw command on the tier's own client.
  absl::StatusOr<cache::RedisReply> Raw(cache::RedisTier& tier, cache::RedisClient::Command cmd) {
    return RunNow(*tier.client(), std::move(cmd));
  }

  RedisServer* server_ = nullptr;
  std::unique_ptr<cache::RedisTier> tier_;
};

TEST_F(RedisTierTest, StoreSetsRedisExpiryAtStaleUntil) {
  cache::Entry e = EntryNow("v", absl::Seconds(10));  // stale until +40 s
  ASSERT_OK(StoreNow(*tier_, Ck("ns", "k"), e));
  absl::StatusOr<cache::RedisReply> pttl =
      Raw(*tier_, {"PTTL", tier_->keys().Value(Ck("ns", "k"))});
  ASSERT_OK(pttl);
  ASSERT_EQ(pttl->type, cache::RedisReply::Type::kInteger);
  EXPECT_GT(pttl->integer, 30'000);
  EXPECT_LE(pttl->integer, 40'000);
}

TEST_F(RedisTierTest, StoreOfAnEntryWithoutEndKeepsItWithoutExpiry) {
  cache::Entry e = EntryNow("v");
  e.stale_until = absl::InfiniteFuture();
  ASSERT_OK(StoreNow(*tier_, Ck("ns", "k"), e));
  absl::StatusOr<cache::RedisReply> pttl =
      Raw(*tier_, {"PTTL", tier_->keys().Value(Ck("ns", "k"))});
  ASSERT_OK(pttl);
  EXPECT_EQ(pttl->integer, -1);
  absl::StatusOr<cache::Entry> got = LookupNow(*tier_, Ck("ns", "k"));
  ASSERT_OK(got);
  EXPECT_EQ(got->stale_until, absl::InfiniteFuture());
}

TEST_F(RedisTierTest, StoreOfAnEntryPastStaleUntilRemovesTheOldOne) {
  ASSERT_OK(StoreNow(*tier_, Ck("ns", "k"), EntryNow("old")));
  cache::Entry dead = EntryNow("dead");
  dead.fetched_at -= absl::Hours(1);
  dead.fresh_until = dead.expires_at = dead.stale_until = absl::Now() - absl::Seconds(1);
  ASSERT_OK(StoreNow(*tier_, Ck("ns", "k"), dead));
  EXPECT_THAT(LookupNow(*tier_, Ck("ns", "k")), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(tier_->Stats().stores, 1u);
}

TEST_F(RedisTierTest, LookupManyIsOneRoundTrip) {
  std::vector<std::string> keys;
  for (int i = 0; i < 100; ++i) {
    keys.push_back(Ck("ns", absl::StrCat("k", i)));
    if (i % 2 == 0) {
      ASSERT_OK(StoreNow(*tier_, keys.back(), EntryNow(absl::StrCat("v", i))));
    }
  }
  ASSERT_OK(Raw(*tier_, {"CONFIG", "RESETSTAT"}));
  std::vector<absl::StatusOr<cache::Entry>> got = LookupManyNow(*tier_, keys);
  ASSERT_EQ(got.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    if (i % 2 == 0) {
      ASSERT_OK(got[i]);
      EXPECT_EQ(got[i]->value, absl::StrCat("v", i));
    } else {
      EXPECT_THAT(got[i], StatusIs(absl::StatusCode::kNotFound));
    }
  }
  absl::StatusOr<cache::RedisReply> info = Raw(*tier_, {"INFO", "commandstats"});
  ASSERT_OK(info);
  EXPECT_THAT(info->str, HasSubstr("cmdstat_mget:calls=1,"));
  EXPECT_THAT(info->str, ::testing::Not(HasSubstr("cmdstat_get:")));
}

TEST_F(RedisTierTest, UndecodableValuesAreMissesCountedAndLoggedOnce) {
  const std::string garbage_key = Ck("ns", "garbage");
  const std::string list_key = Ck("ns", "list");
  ASSERT_OK(Raw(*tier_, {"SET", tier_->keys().Value(garbage_key), "not an envelope"}));
  ASSERT_OK(Raw(*tier_, {"RPUSH", tier_->keys().Value(list_key), "x"}));
  cache::Entry e = EntryNow("v");
  std::string wrong_format = cache::EncodeEnvelope(e);
  wrong_format[0] = 9;
  ASSERT_OK(Raw(*tier_, {"SET", tier_->keys().Value(Ck("ns", "format9")), wrong_format}));
  std::string truncated = cache::EncodeEnvelope(e);
  truncated.pop_back();
  ASSERT_OK(Raw(*tier_, {"SET", tier_->keys().Value(Ck("ns", "short")), truncated}));

  ::testing::internal::CaptureStderr();
  EXPECT_THAT(LookupNow(*tier_, garbage_key), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(LookupNow(*tier_, list_key), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(LookupNow(*tier_, Ck("ns", "format9")), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(LookupNow(*tier_, Ck("ns", "short")), StatusIs(absl::StatusCode::kNotFound));
  std::vector<absl::StatusOr<cache::Entry>> many =
      LookupManyNow(*tier_, {garbage_key, list_key, Ck("ns", "absent")});
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(many.size(), 3u);
  for (const auto& r : many) EXPECT_THAT(r, StatusIs(absl::StatusCode::kNotFound));

  const cache::TierStats s = tier_->Stats();
  // MGET answers nil for a key of another type: there it is a plain miss.
  EXPECT_EQ(s.undecodable, 5u);
  EXPECT_EQ(s.misses, 7u);
  EXPECT_EQ(s.errors, 0u);
  EXPECT_THAT(log, HasSubstr("does not decode"));
  EXPECT_THAT(log, HasSubstr("garbage"));
  size_t lines = 0;
  for (size_t at = log.find("does not decode"); at != std::string::npos;
       at = log.find("does not decode", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u) << log;
}

TEST_F(RedisTierTest, KeyPrefixesSeparateDeployments) {
  std::unique_ptr<cache::RedisTier> other = MakeTier(Clock::Real());
  ASSERT_NE(other, nullptr);
  ASSERT_OK(StoreNow(*tier_, Ck("ns", "k"), EntryNow("mine")));
  ASSERT_OK(StoreNow(*other, Ck("ns", "k2"), EntryNow("theirs")));
  EXPECT_THAT(LookupNow(*other, Ck("ns", "k")), StatusIs(absl::StatusCode::kNotFound));
  absl::StatusOr<uint64_t> n = EraseNow(*other, {}, Ck("ns", ""));
  ASSERT_OK(n);
  EXPECT_EQ(*n, 1u);
  EXPECT_OK(LookupNow(*tier_, Ck("ns", "k")));
}

TEST_F(RedisTierTest, KeyPrefixWithGlobCharactersMatchesOnlyItself) {
  // A prefix "a*" must not let a prefix erase reach keys of prefix "ab".
  const std::string base = UniquePrefix();
  std::unique_ptr<cache::RedisTier> star = MakeTier(Clock::Real(), 1000, base + "a*");
  std::unique_ptr<cache::RedisTier> ab = MakeTier(Clock::Real(), 1000, base + "ab");
  ASSERT_NE(star, nullptr);
  ASSERT_NE(ab, nullptr);
  ASSERT_OK(StoreNow(*star, Ck("ns", "k"), EntryNow("star")));
  ASSERT_OK(StoreNow(*ab, Ck("ns", "k"), EntryNow("ab")));
  ASSERT_OK(EraseNow(*star, {}, Ck("ns", "")));
  EXPECT_THAT(LookupNow(*star, Ck("ns", "k")), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_OK(LookupNow(*ab, Ck("ns", "k")));
}

TEST_F(RedisTierTest, ErasePrefixWalksEveryScanBatch) {
  std::unique_ptr<cache::RedisTier> tier = MakeTier(Clock::Real(), /*batch=*/10);
  std::vector<std::string> listed;
  for (int i = 0; i < 95; ++i) {
    ASSERT_OK(StoreNow(*tier, Ck("ns", absl::StrCat("p/", i)), EntryNow("v")));
  }
  for (int i = 0; i < 25; ++i) {
    listed.push_back(Ck("ns", absl::StrCat("q/", i)));
    ASSERT_OK(StoreNow(*tier, listed.back(), EntryNow("v")));
  }
  ASSERT_OK(StoreNow(*tier, Ck("ns", "r"), EntryNow("v")));
  absl::StatusOr<uint64_t> n = EraseNow(*tier, listed, Ck("ns", "p/"));
  ASSERT_OK(n);
  EXPECT_EQ(*n, 120u);
  EXPECT_EQ(tier->Stats().erased, 120u);
  absl::StatusOr<cache::RedisReply> left =
      Raw(*tier, {"KEYS", absl::StrCat(cache::EscapeGlob(tier->keys().prefix()), "*")});
  ASSERT_OK(left);
  EXPECT_EQ(left->elements.size(), 1u);
}

// Supersede through the Lua script gives exactly what envelope.cc's
// Supersede gives, including times before 1970 and the infinite ends.
TEST_F(RedisTierTest, SupersedeScriptMatchesTheEnvelopeRule) {
  FakeClock clock(absl::FromUnixMicros(absl::ToUnixMicros(absl::Now())));
  std::unique_ptr<cache::RedisTier> tier = MakeTier(&clock);
  const absl::Time now = clock.Now();
  struct Case {
    const char* name;
    cache::Entry entry;
  };
  std::vector<Case> cases;
  {
    cache::Entry e = EntryNow("fresh");
    cases.push_back({"fresh", e});
  }
  {
    cache::Entry e = EntryNow("expired");
    e.fetched_at -= absl::Minutes(10);
    e.fresh_until -= absl::Minutes(10);
    e.expires_at -= absl::Minutes(10);
    cases.push_back({"expired", e});
  }
  {
    cache::Entry e = EntryNow("future");  // fetched after `now` (another pod's clock)
    e.fetched_at = now + absl::Seconds(5);
    e.fresh_until = now + absl::Seconds(6);
    e.expires_at = now + absl::Seconds(7);
    cases.push_back({"future", e});
  }
  {
    cache::Entry e = EntryNow("infinite");
    e.fetched_at = absl::InfinitePast();
    e.fresh_until = absl::InfiniteFuture();
    e.expires_at = absl::InfiniteFuture();
    e.stale_until = absl::InfiniteFuture();
    cases.push_back({"infinite", e});
  }
  {
    cache::Entry e = EntryNow("before1970");
    e.fetched_at = absl::FromUnixSeconds(-100);
    e.fresh_until = absl::FromUnixSeconds(-50);
    e.expires_at = absl::InfiniteFuture();
    e.stale_until = absl::InfiniteFuture();
    cases.push_back({"before1970", e});
  }
  std::vector<std::string> keys;
  for (const Case& c : cases) {
    keys.push_back(Ck("ns", c.name));
    ASSERT_OK(StoreNow(*tier, keys.back(), c.entry));
  }
  absl::StatusOr<uint64_t> n = EraseNow(*tier, keys, "", cache::EraseMode::kSupersede);
  ASSERT_OK(n);
  EXPECT_EQ(*n, cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].name);
    absl::StatusOr<cache::RedisReply> raw = Raw(*tier, {"GET", tier->keys().Value(keys[i])});
    ASSERT_OK(raw);
    absl::StatusOr<cache::Envelope> env = cache::DecodeEnvelope(raw->str);
    ASSERT_OK(env);
    EXPECT_TRUE(env->superseded);
    const cache::Entry want = cache::Supersede(cases[i].entry, now);
    EXPECT_EQ(env->entry.fetched_at, want.fetched_at);
    EXPECT_EQ(env->entry.fresh_until, want.fresh_until);
    EXPECT_EQ(env->entry.expires_at, want.expires_at);
    EXPECT_EQ(env->entry.stale_until, want.stale_until);
    EXPECT_EQ(env->entry.value, cases[i].entry.value);
    EXPECT_EQ(env->entry.version, cases[i].entry.version);
  }
  // The key keeps its expiry.
  absl::StatusOr<cache::RedisReply> pttl = Raw(*tier, {"PTTL", tier->keys().Value(keys[0])});
  ASSERT_OK(pttl);
  EXPECT_GT(pttl->integer, 0);
}

TEST_F(RedisTierTest, SupersedeLeavesForeignValuesAlone) {
  ASSERT_OK(Raw(*tier_, {"SET", tier_->keys().Value(Ck("ns", "foreign")), "plain text"}));
  ASSERT_OK(StoreNow(*tier_, Ck("ns", "ours"), EntryNow("v")));
  absl::StatusOr<uint64_t> n = EraseNow(*tier_, {}, Ck("ns", ""), cache::EraseMode::kSupersede);
  ASSERT_OK(n);
  EXPECT_EQ(*n, 1u);
  absl::StatusOr<cache::RedisReply> raw =
      Raw(*tier_, {"GET", tier_->keys().Value(Ck("ns", "foreign"))});
  ASSERT_OK(raw);
  EXPECT_EQ(raw->str, "plain text");
}

TEST_F(RedisTierTest, WithoutRedisEveryCallAnswersUnavailableAtOnce) {
  cache::RedisClientOptions o = ClientOptions(absl::StrCat("127.0.0.1:", PickFreePort()));
  o.start_wait = absl::Seconds(2);
  auto tier = cache::NewRedisTier(o, cache::RedisTierOptions{}, Clock::Real());
  ASSERT_OK(tier);
  EXPECT_FALSE((*tier)->Stats().available);
  EXPECT_THAT(LookupNow(**tier, Ck("ns", "k")), StatusIs(absl::StatusCode::kUnavailable));
  std::vector<absl::StatusOr<cache::Entry>> many =
      LookupManyNow(**tier, {Ck("ns", "a"), Ck("ns", "b")});
  ASSERT_EQ(many.size(), 2u);
  EXPECT_THAT(many[1], StatusIs(absl::StatusCode::kUnavailable, HasSubstr("127.0.0.1")));
  EXPECT_THAT(StoreNow(**tier, Ck("ns", "k"), EntryNow("v")),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(EraseNow(**tier, {Ck("ns", "k")}, ""), StatusIs(absl::StatusCode::kUnavailable));
  const cache::TierStats s = (*tier)->Stats();
  EXPECT_EQ(s.stores_dropped, 1u);
  EXPECT_EQ(s.errors, 4u);  // the lookup, both slots of the batch, the erase
}

TEST_F(RedisTierTest, LookupWithAPassedDeadlineIsDeadlineExceeded) {
  absl::Notification done;
  absl::Status status;
  tier_->Lookup(Ck("ns", "k"), absl::Now() - absl::Seconds(1), [&](absl::StatusOr<cache::Entry> e) {
    status = e.status();
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(tier_->Stats().timeouts, 1u);
}

TEST_F(RedisTierTest, LargeValuesRoundTrip) {
  const std::string big(4 << 20, 'x');
  ASSERT_OK(StoreNow(*tier_, Ck("ns", "big"), EntryNow(big)));
  absl::StatusOr<cache::Entry> got = LookupNow(*tier_, Ck("ns", "big"));
  ASSERT_OK(got);
  EXPECT_EQ(got->value.size(), big.size());
}

TEST_F(RedisTierTest, LookupsAnswerOnTheExecutorWhenGivenOne) {
  ManualExecutor executor;
  cache::RedisTierOptions t;
  t.key_prefix = UniquePrefix();
  t.executor = &executor;
  auto tier = cache::NewRedisTier(ClientOptions(server_->address()), t, Clock::Real());
  ASSERT_OK(tier);
  ASSERT_OK(StoreNow(**tier, Ck("ns", "k"), EntryNow("v")));
  std::atomic<int> answered{0};
  std::thread::id on;
  std::string value;
  (*tier)->Lookup(Ck("ns", "k"), absl::Now() + absl::Seconds(5),
                  [&](absl::StatusOr<cache::Entry> e) {
                    on = std::this_thread::get_id();
                    value = e.ok() ? e->value.ToString() : e.status().ToString();
                    ++answered;
                  });
  (*tier)->LookupMany({Ck("ns", "k"), Ck("ns", "other")}, absl::Now() + absl::Seconds(5),
                      [&](std::vector<absl::StatusOr<cache::Entry>> found) {
                        EXPECT_TRUE(found.size() == 2 && found[0].ok());
                        ++answered;
                      });
  // Nothing is answered on the I/O thread: the answers wait for the
  // executor, which runs them here.
  EXPECT_TRUE(PollUntil([&] {
    executor.RunUntilIdle();
    return answered.load() == 2;
  }));
  EXPECT_EQ(on, std::this_thread::get_id());
  EXPECT_EQ(value, "v");

  // Answers up to inline_bytes stay on the I/O thread.
  t.inline_bytes = 1 << 20;
  auto small = cache::NewRedisTier(ClientOptions(server_->address()), t, Clock::Real());
  ASSERT_OK(small);
  absl::Notification done;
  (*small)->Lookup(Ck("ns", "k"), absl::Now() + absl::Seconds(5),
                   [&](absl::StatusOr<cache::Entry> e) {
                     EXPECT_OK(e);
                     on = std::this_thread::get_id();
                     done.Notify();
                   });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_NE(on, std::this_thread::get_id());
  EXPECT_EQ(executor.RunUntilIdle(), 0);
}

}  // namespace
}  // namespace fanout::testing
