// End to end: fanoutd processes with cache.l2 set, sharing a real
// redis-server (one answers what another filled, stale copies from L2 during
// an origin outage, one origin call for a key read cold on three pods); and
// fanoutd when that Redis is missing or refuses it.
#include <stdlib.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_backend.h"
#include "tests/testing/fake_grpc_origin.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"

namespace fanout {
namespace {

using ::fanout::testing::RedisServer;
using ::fanout::testing::RunProcess;
using ::fanout::testing::Subprocess;
using ::testing::HasSubstr;

// fanoutd on the sample keys (file origin) with `l2` as its cache.l2 section;
// `cache` adds lines to the cache section, `rest` top-level sections.
class Daemon : public testing::FanoutdProcess {
 public:
  explicit Daemon(const std::string& l2, const std::string& cache = "",
                  const std::string& rest = "")
      : FanoutdProcess(FANOUTD_PATH, absl::StrCat("cache:\n  l2:\n", l2, cache, rest),
                       FANOUT_SOURCE_DIR) {}
};

testing::RunResult Get(const std::string& addr, const std::string& key,
                       const std::string& max_stale = "") {
  std::vector<std::string> argv = {FANOUTCTL_PATH, "--addr=" + addr, "get", key};
  if (!max_stale.empty()) argv.push_back("--max_stale=" + max_stale);
  return RunProcess(argv);
}

// The config of a pod on `origin` (a gRPC origin) sharing `redis`, without
// an admin endpoint (several pods on one machine).
struct GrpcPodConfig {
  std::string l2;
  std::string cache;
  std::string rest;
};
GrpcPodConfig PodConfig(const testing::RedisServer& redis, const testing::FakeGrpcOrigin& origin,
                        const std::string& cache = "") {
  return {absl::StrCat("    redis: ", redis.address(), "\n    key_prefix: \"pods:\"\n",
                       // A loaded machine is not an outage.
                       "    timeout: 1s\n"),
          cache,
          absl::StrCat("origin:\n  type: grpc\n  timeout: 10s\n  grpc:\n    target: ",
                       origin.address(), "\nadmin:\n  listen: \"\"\n")};
}

TEST(RedisL2E2eTest, ASecondDaemonAnswersFromL2WhatTheFirstFilled) {
  std::string error;
  auto redis = RedisServer::Start(&error);
  ASSERT_NE(redis, nullptr) << error;
  const std::string l2 =
      absl::StrCat("    redis: ", redis->address(), "\n    key_prefix: \"e2e:\"\n");
  Daemon a(l2);
  Daemon b(l2);
  ASSERT_FALSE(a.address().empty()) << a.process().err();
  ASSERT_FALSE(b.address().empty()) << b.process().err();

  auto first = Get(a.address(), "flags/new-checkout");
  EXPECT_EQ(first.code, 0) << first.err;
  EXPECT_THAT(first.err, HasSubstr("served_by=TIER_ORIGIN"));
  // The L2 write is asynchronous: wait (bounded) until it is in Redis.
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (redis->Cli({"--scan", "--pattern", "e2e:v:*"}).out.empty() && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  auto second = Get(b.address(), "flags/new-checkout");
  EXPECT_EQ(second.code, 0) << second.err;
  EXPECT_THAT(second.err, HasSubstr("served_by=TIER_L2"));
  EXPECT_EQ(second.out, first.out);
}

TEST(RedisL2E2eTest, ADaemonServesAStaleL2CopyDuringAnOriginOutage) {
  testing::HoldGrpcCallbackQueue();
  std::string error;
  auto redis = RedisServer::Start(&error);
  ASSERT_NE(redis, nullptr) << error;
  auto origin = testing::FakeGrpcOrigin::Start();
  origin->Set("cfg", "v1", 4);
  const GrpcPodConfig c = PodConfig(*redis, *origin, "  ttl: 1s\n");
  Daemon a(c.l2, c.cache, c.rest);
  Daemon b(c.l2, c.cache, c.rest);
  ASSERT_FALSE(a.address().empty()) << a.process().err();
  ASSERT_FALSE(b.address().empty()) << b.process().err();

  auto first = Get(a.address(), "cfg");
  ASSERT_EQ(first.code, 0) << first.err;
  ASSERT_THAT(first.err, HasSubstr("served_by=TIER_ORIGIN"));
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (redis->Cli({"--scan", "--pattern", "pods:v:*"}).out.empty() && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  origin->SetDown(true);
  // Poll pod A until its copy has expired (ttl 1 s): it then answers stale.
  // L2 holds the same copy, with the same times.
  testing::RunResult on_a;
  do {
    absl::SleepFor(absl::Milliseconds(100));
    on_a = Get(a.address(), "cfg", "1h");
  } while (on_a.err.find("stale=true") == std::string::npos && absl::Now() < give_up);
  ASSERT_THAT(on_a.err, HasSubstr("stale=true")) << on_a.err;

  // Pod B never had it: the freshest copy any tier holds is L2's.
  auto on_b = Get(b.address(), "cfg", "1h");
  EXPECT_EQ(on_b.code, 0) << on_b.err;
  EXPECT_EQ(on_b.out, first.out);
  EXPECT_THAT(on_b.err, HasSubstr("served_by=TIER_L2 stale=true"));
  EXPECT_THAT(on_b.err, HasSubstr("version=4"));
  // Not within a caller's max_stale: no answer.
  auto strict = Get(b.address(), "cfg", "1ms");
  EXPECT_NE(strict.code, 0);
  EXPECT_THAT(strict.err, HasSubstr("UNAVAILABLE"));
}

TEST(RedisL2E2eTest, ColdReadsOfOneKeyOnThreePodsAskTheOriginOnce) {
  testing::HoldGrpcCallbackQueue();
  std::string error;
  auto redis = RedisServer::Start(&error);
  ASSERT_NE(redis, nullptr) << error;
  auto origin = testing::FakeGrpcOrigin::Start();
  origin->SetDelay(absl::Milliseconds(300));
  const GrpcPodConfig c = PodConfig(*redis, *origin);
  std::vector<std::unique_ptr<Daemon>> pods;
  std::vector<std::unique_ptr<client::Client>> clients;
  for (int i = 0; i < 3; ++i) {
    pods.push_back(std::make_unique<Daemon>(c.l2, c.cache, c.rest));
    ASSERT_FALSE(pods.back()->address().empty()) << pods.back()->process().err();
    client::ClientOptions o;
    o.timeout = absl::Seconds(30);
    clients.push_back(*client::Client::Connect(pods.back()->address(), o));
  }
  for (int round = 0; round < 3; ++round) {
    const std::string key = absl::StrCat("hot-", round);
    origin->Set(key, absl::StrCat("value-", round));
    const int before = origin->fetches();
    // 30 concurrent cold Gets, 10 on each pod.
    std::atomic<int> ok{0};
    std::vector<std::thread> callers;
    for (int i = 0; i < 30; ++i) {
      callers.emplace_back([&, i] {
        auto got = clients[i % 3]->Get(key);
        if (got.ok() && got->value() == absl::StrCat("value-", round)) ++ok;
        EXPECT_OK(got);
      });
    }
    for (auto& t : callers) t.join();
    EXPECT_EQ(ok.load(), 30);
    EXPECT_EQ(origin->fetches() - before, 1) << "round " << round;
  }
}

TEST(RedisL2E2eTest, UnreachableRedisNeitherStopsStartNorFailsGets) {
  Daemon d(absl::StrCat("    redis: 127.0.0.1:", testing::PickFreePort(), "\n"));
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  auto got = Get(d.address(), "flags/new-checkout");
  EXPECT_EQ(got.code, 0) << got.err;
  EXPECT_THAT(got.err, HasSubstr("served_by=TIER_ORIGIN"));
  EXPECT_THAT(d.process().err(), HasSubstr("Connection refused"));
}

TEST(RedisL2E2eTest, RefusedPasswordStopsStartWithTheReason) {
  std::string error;
  testing::RedisServerOptions o;
  o.password = "right";
  auto redis = RedisServer::Start(&error, o);
  ASSERT_NE(redis, nullptr) << error;
  Daemon d(absl::StrCat("    redis: ", redis->address(), "\n    password: wrong\n"));
  EXPECT_TRUE(d.address().empty());
  const std::optional<int> code = d.process().Wait(absl::Seconds(20));
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_THAT(d.process().err(), HasSubstr("cache.l2.password"));
  EXPECT_THAT(d.process().err(), HasSubstr("WRONGPASS"));
}

TEST(RedisL2E2eTest, PasswordFromTheEnvironment) {
  std::string error;
  testing::RedisServerOptions o;
  o.password = "from-env";
  auto redis = RedisServer::Start(&error, o);
  ASSERT_NE(redis, nullptr) << error;
  ::setenv("FANOUT_E2E_REDIS_PASSWORD", "from-env", 1);
  Daemon d(absl::StrCat("    redis: ", redis->address(),
                        "\n    password_env: FANOUT_E2E_REDIS_PASSWORD\n"));
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  auto got = Get(d.address(), "flags/new-checkout");
  EXPECT_EQ(got.code, 0) << got.err;
}

}  // namespace
}  // namespace fanout
