// fanoutd with the Redis L2 tier, in-process through the client library,
// several daemons sharing one real redis-server: BatchGet's single round trip
// and the fill lease between daemons.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "server/config.h"
#include "server/fanoutd.h"
#include "tests/testing/fake_backend.h"
#include "tests/testing/fake_grpc_origin.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/status_matchers.h"

namespace fanout::server {
namespace {

namespace fs = std::filesystem;

// `calls` of command `name` in Redis's INFO commandstats (0 if never run).
int64_t CommandCalls(const testing::RedisServer& redis, const std::string& name) {
  const testing::RunResult info = redis.Cli({"INFO", "commandstats"});
  const std::string prefix = absl::StrCat("cmdstat_", name, ":calls=");
  for (absl::string_view line : absl::StrSplit(info.out, '\n')) {
    if (!absl::StartsWith(line, prefix)) continue;
    line.remove_prefix(prefix.size());
    int64_t n = 0;
    if (absl::SimpleAtoi(line.substr(0, line.find(',')), &n)) return n;
  }
  return 0;
}

// Polls `pred` every 10 ms until it holds or `bound` passes.
template <typename Pred>
bool PollUntil(Pred pred, absl::Duration bound = absl::Seconds(20)) {
  const absl::Time give_up = absl::Now() + bound;
  while (absl::Now() < give_up) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return pred();
}

class FanoutdL2Test : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::HoldGrpcCallbackQueue();
    std::string error;
    redis_ = testing::RedisServer::Start(&error);
    ASSERT_NE(redis_, nullptr) << error;
    root_ = fs::temp_directory_path() / ("fanout_l2_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
    for (int i = 0; i < 5; ++i) std::ofstream(root_ / absl::StrCat("k", i)) << "v" << i;
    config_.server.listen = "127.0.0.1:0";
    config_.admin.listen = "";  // several daemons in one process
    config_.origin.file_root = root_.string();
    config_.cache.l2.redis = redis_->address();
    config_.cache.l2.key_prefix = "l2test:";
    config_.cache.l2.timeout = absl::Seconds(2);  // a loaded machine is not an outage
  }
  void TearDown() override { fs::remove_all(root_); }

  struct Pod {
    std::unique_ptr<Fanoutd> daemon;
    std::unique_ptr<client::Client> client;
  };
  Pod StartPod() {
    Pod p;
    auto d = Fanoutd::Start(config_);
    EXPECT_OK(d);
    if (!d.ok()) return p;
    p.daemon = *std::move(d);
    p.client = *client::Client::Connect(p.daemon->address());
    return p;
  }

  std::unique_ptr<testing::RedisServer> redis_;
  fs::path root_;
  Config config_;
};

TEST_F(FanoutdL2Test, BatchGetLooksUpEveryL1MissInOneRoundTrip) {
  Pod a = StartPod();
  ASSERT_NE(a.daemon, nullptr);
  for (int i = 0; i < 5; ++i) ASSERT_OK(a.client->Get(absl::StrCat("k", i)));
  // The L2 writes are asynchronous: wait (bounded) until all five are there.
  ASSERT_TRUE(PollUntil([&] { return absl::StrContains(redis_->Cli({"DBSIZE"}).out, "5"); }))
      << redis_->Cli({"--scan"}).out;
  Pod b = StartPod();  // an empty L1
  ASSERT_NE(b.daemon, nullptr);
  redis_->Cli({"CONFIG", "RESETSTAT"});
  fanout::v1::BatchGetRequest request;
  for (const char* k : {"k0", "k1", "k2", "k3", "k4", "k1"}) request.add_keys(k);
  auto response = b.client->BatchGet(request);
  ASSERT_OK(response);
  ASSERT_EQ(response->items_size(), 6);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(response->items(i).code(), 0) << response->items(i).error();
    EXPECT_EQ(response->items(i).served_by(), fanout::v1::TIER_L2);
  }
  EXPECT_EQ(response->items(3).value(), "v3");
  EXPECT_EQ(response->items(5).value(), "v1");
  // One MGET for the five distinct keys, no GET of its own.
  EXPECT_EQ(CommandCalls(*redis_, "mget"), 1);
  EXPECT_EQ(CommandCalls(*redis_, "get"), 0);
  EXPECT_EQ(b.daemon->read_path()->Stats().batch_lookups, 1u);
  EXPECT_EQ(b.daemon->read_path()->Stats().origin_fetches, 0u);
}

// Two daemons, one slow origin: daemon B's cold reads of a key daemon A is
// fetching wait for A's value instead of asking the origin (lease_on), or
// each daemon asks (lease off).
class FanoutdL2LeaseTest : public FanoutdL2Test, public ::testing::WithParamInterface<bool> {};

TEST_P(FanoutdL2LeaseTest, ColdReadsOnTwoDaemonsAskTheOriginOnceWithTheLease) {
  const bool lease = GetParam();
  auto origin = testing::FakeGrpcOrigin::Start();
  origin->Set("hot", "value", 7);
  origin->SetDelay(absl::Milliseconds(500));
  config_.origin.type = OriginSection::Type::kGrpc;
  config_.origin.grpc_target = origin->address();
  config_.origin.timeout = absl::Seconds(10);
  config_.cache.l2.lease = lease;
  Pod a = StartPod();
  Pod b = StartPod();
  ASSERT_NE(a.daemon, nullptr);
  ASSERT_NE(b.daemon, nullptr);

  std::thread first([&] {
    auto got = a.client->Get("hot");
    EXPECT_OK(got);
  });
  // B asks while A's fetch is under way.
  ASSERT_TRUE(PollUntil([&] { return origin->in_flight() == 1; }));
  std::vector<std::thread> readers;
  std::atomic<int> from_l2{0};
  for (int i = 0; i < 3; ++i) {
    readers.emplace_back([&] {
      auto got = b.client->Get("hot");
      ASSERT_OK(got);
      EXPECT_EQ(got->value(), "value");
      EXPECT_EQ(got->version(), 7);
      if (got->served_by() == fanout::v1::TIER_L2) ++from_l2;
    });
  }
  first.join();
  for (auto& t : readers) t.join();
  const cache::ReadPathStats stats = b.daemon->read_path()->Stats();
  if (lease) {
    EXPECT_EQ(origin->fetches(), 1);
    EXPECT_EQ(from_l2.load(), 3);
    EXPECT_EQ(stats.lease_waits, 1u);
    EXPECT_EQ(stats.lease_wait_filled, 1u);
    EXPECT_EQ(a.daemon->read_path()->Stats().lease_acquired, 1u);
  } else {
    EXPECT_EQ(origin->fetches(), 2);
    EXPECT_EQ(stats.lease_waits, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Lease, FanoutdL2LeaseTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "On" : "Off";
                         });

}  // namespace
}  // namespace fanout::server
