// The test harness's own redis-server: later suites build on it.
#include "tests/testing/redis_server.h"

#include "gtest/gtest.h"

namespace fanout::testing {
namespace {

TEST(RedisServerTest, StartsOnAFreePortAndStoresValues) {
  std::string error;
  auto redis = RedisServer::Start(&error);
  ASSERT_NE(redis, nullptr) << error;
  EXPECT_EQ(redis->Cli({"SET", "fanout:k", "v"}).out, "OK\n");
  EXPECT_EQ(redis->Cli({"GET", "fanout:k"}).out, "v\n");
}

TEST(RedisServerTest, TwoServersAreIndependent) {
  std::string error;
  auto a = RedisServer::Start(&error);
  auto b = RedisServer::Start(&error);
  ASSERT_NE(a, nullptr) << error;
  ASSERT_NE(b, nullptr) << error;
  EXPECT_NE(a->port(), b->port());
  a->Cli({"SET", "k", "only-a"});
  EXPECT_EQ(b->Cli({"GET", "k"}).out, "\n");
}

}  // namespace
}  // namespace fanout::testing
