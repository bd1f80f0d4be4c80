// fanoutd with the survival tier (L3), in-process through the client
// library: the cache.l3 configuration, a restart answering from L3, warming
// L1 from L3 before SERVING, and an L3 directory that cannot be used.
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "cache/tiers/rocksdb/rocksdb_tier.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "server/config.h"
#include "server/fanoutd.h"
#include "tests/testing/fake_backend.h"
#include "tests/testing/status_matchers.h"

namespace fanout::server {
namespace {

using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

TEST(L3ConfigTest, AbsentSectionMeansNoL3) {
  absl::StatusOr<Config> c = ParseConfig("cache:\n  ttl: 5s\n", "test.yaml");
  ASSERT_OK(c);
  EXPECT_TRUE(c->cache.l3_path.empty());
}

TEST(L3ConfigTest, ReadsEveryKeyWithDefaults) {
  absl::StatusOr<Config> c = ParseConfig("cache:\n  l3:\n    path: /var/lib/fanout/l3\n", "t");
  ASSERT_OK(c);
  EXPECT_EQ(c->cache.l3_path, "/var/lib/fanout/l3");
  EXPECT_EQ(c->cache.l3_max_bytes, 1ull << 30);
  EXPECT_FALSE(c->cache.l3_sync);
  EXPECT_FALSE(c->cache.l3_warm_l1);
  c = ParseConfig(
      "cache:\n  l3:\n    path: l3\n    max_bytes: 64MiB\n    sync: true\n    warm_l1: true\n",
      "t");
  ASSERT_OK(c);
  EXPECT_EQ(c->cache.l3_max_bytes, 64ull << 20);
  EXPECT_TRUE(c->cache.l3_sync);
  EXPECT_TRUE(c->cache.l3_warm_l1);
}

TEST(L3ConfigTest, BadValuesNameTheKey) {
  EXPECT_THAT(ParseConfig("cache:\n  l3:\n    max_bytes: 1GiB\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.l3.path")));
  EXPECT_THAT(ParseConfig("cache:\n  l3:\n    path: x\n    max_bytes: 1MiB\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.l3.max_bytes")));
  EXPECT_THAT(ParseConfig("cache:\n  l3:\n    path: x\n    sync: maybe\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.l3.sync")));
  EXPECT_THAT(ParseConfig("cache:\n  l3:\n    path: x\n    pth: y\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.l3.pth")));
}

TEST(L3ConfigTest, EmbeddedDefaultTurnsL3OnUnderTheWorkingDirectory) {
  absl::StatusOr<Config> c = ParseConfig(EmbeddedDefaultYaml(), "<embedded>");
  ASSERT_OK(c);
  EXPECT_EQ(c->cache.l3_path, ".fanout/l3");
  EXPECT_FALSE(fs::path(c->cache.l3_path).is_absolute());
}

class FanoutdL3Test : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::HoldGrpcCallbackQueue();
    dir_ = fs::temp_directory_path() / absl::StrCat("fanout_l3d_", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "origin" / "flags");
    std::ofstream(dir_ / "origin" / "flags" / "a") << "A";
    std::ofstream(dir_ / "origin" / "flags" / "b") << "B";
    config_.server.listen = "127.0.0.1:0";
    config_.origin.file_root = (dir_ / "origin").string();
    config_.cache.l3_path = (dir_ / "l3").string();
    config_.cache.l3_max_bytes = 64ull << 20;
  }
  void TearDown() override {
    Stop();
    fs::remove_all(dir_);
  }
  void Start() {
    auto d = Fanoutd::Start(config_);
    ASSERT_OK(d);
    daemon_ = *std::move(d);
    client_ = *client::Client::Connect(daemon_->address());
  }
  // As on SIGTERM: the daemon and its tiers are torn down (L3's queued
  // writes are applied).
  void Stop() {
    client_.reset();
    daemon_.reset();
  }

  fs::path dir_;
  Config config_;
  std::unique_ptr<Fanoutd> daemon_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(FanoutdL3Test, RestartAnswersFromL3BeforeTheOriginIsAsked) {
  Start();
  auto first = client_->Get("flags/a");
  ASSERT_OK(first);
  EXPECT_EQ(first->served_by(), fanout::v1::TIER_ORIGIN);
  Stop();
  // The origin loses the key; the restarted daemon still has it, from L3.
  fs::remove(dir_ / "origin" / "flags" / "a");
  Start();
  auto again = client_->Get("flags/a");
  ASSERT_OK(again);
  EXPECT_EQ(again->served_by(), fanout::v1::TIER_L3);
  EXPECT_EQ(again->value(), "A");
  EXPECT_EQ(again->version(), first->version());
  EXPECT_FALSE(again->stale());
  auto l1 = client_->Get("flags/a");
  ASSERT_OK(l1);
  EXPECT_EQ(l1->served_by(), fanout::v1::TIER_L1);
}

TEST_F(FanoutdL3Test, WarmL1LoadsL1FromL3BeforeServing) {
  Start();
  ASSERT_OK(client_->Get("flags/a"));
  ASSERT_OK(client_->Get("flags/b"));
  Stop();

  config_.cache.l3_warm_l1 = true;
  Start();
  cache::Entry e;
  EXPECT_EQ(daemon_->read_path()->l1().Lookup(cache::CompositeKey("", "flags/a"), absl::Now(), &e),
            cache::Freshness::kFresh);
  EXPECT_EQ(e.value, "A");
  auto got = client_->Get("flags/b");
  ASSERT_OK(got);
  EXPECT_EQ(got->served_by(), fanout::v1::TIER_L1);
  Stop();

  config_.cache.l3_warm_l1 = false;
  Start();
  EXPECT_FALSE(
      daemon_->read_path()->l1().Lookup(cache::CompositeKey("", "flags/a"), absl::Now(), &e));
}

TEST_F(FanoutdL3Test, WarmL1StopsAtHalfOfL1sBudget) {
  {
    cache::RocksDbTierOptions o;
    o.path = config_.cache.l3_path;
    auto l3 = cache::RocksDbTier::Open(o);
    ASSERT_OK(l3);
    const absl::Time now = absl::Now();
    cache::Entry e;
    e.value = std::string(500, 'v');
    e.fetched_at = now;
    e.fresh_until = now + absl::Minutes(1);
    e.expires_at = now + absl::Minutes(2);
    e.stale_until = now + absl::Hours(1);
    for (int i = 0; i < 200; ++i) {
      (*l3)->Store(cache::CompositeKey("", absl::StrCat("k", i)), e, [](absl::Status) {});
    }
  }
  config_.cache.l3_warm_l1 = true;
  // About 850 bytes charged each (value, key and the per-entry overhead):
  // 200 of them are more than half of 256 KiB.
  config_.cache.l1_capacity = 256 << 10;
  Start();
  const cache::L1Stats stats = daemon_->read_path()->l1().Stats();
  EXPECT_GT(stats.bytes, 0u);
  EXPECT_LT(stats.entries, 200u);
  EXPECT_LE(stats.bytes, config_.cache.l1_capacity / 2 + 2000);
}

TEST_F(FanoutdL3Test, UnusableL3DirectoryLeavesTheDaemonServingWithoutIt) {
  std::ofstream(dir_ / "l3") << "a file where the L3 directory should be";
  Start();
  auto got = client_->Get("flags/a");
  ASSERT_OK(got);
  EXPECT_EQ(got->served_by(), fanout::v1::TIER_ORIGIN);
  EXPECT_TRUE(fs::is_regular_file(dir_ / "l3"));
}

}  // namespace
}  // namespace fanout::server
