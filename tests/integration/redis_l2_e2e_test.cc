// End to end: fanoutd processes with cache.l2 set, sharing a real
// redis-server; and fanoutd when that Redis is missing or refuses it.
#include <stdlib.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"

namespace fanout {
namespace {

using ::fanout::testing::RedisServer;
using ::fanout::testing::RunProcess;
using ::fanout::testing::Subprocess;
using ::testing::HasSubstr;

// fanoutd on the sample keys (file origin) with `l2` as its cache.l2 section.
class Daemon {
 public:
  explicit Daemon(const std::string& l2) : config_(testing::TempPath("fanoutd.yaml")) {
    std::ofstream(config_) << "cache:\n  l2:\n" << l2;
    process_ = std::make_unique<Subprocess>(
        std::vector<std::string>{FANOUTD_PATH, "--listen=127.0.0.1:0", "--config=" + config_},
        FANOUT_SOURCE_DIR);
    if (process_->WaitForStderr("listening on ", absl::Seconds(20))) {
      const std::string err = process_->err();
      const size_t at = err.find("listening on ") + 13;
      address_ = err.substr(at, err.find('\n', at) - at);
    }
  }
  ~Daemon() { ::unlink(config_.c_str()); }
  const std::string& address() const { return address_; }
  Subprocess& process() { return *process_; }

 private:
  std::string config_;
  std::unique_ptr<Subprocess> process_;
  std::string address_;
};

testing::RunResult Get(const std::string& addr, const std::string& key) {
  return RunProcess({FANOUTCTL_PATH, "--addr=" + addr, "get", key});
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
