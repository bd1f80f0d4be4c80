// cache.l2: the shared Redis tier's configuration.
#include <stdlib.h>

#include <fstream>

#include "gtest/gtest.h"
#include "server/config.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"

namespace fanout::server {
namespace {

using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ConfigL2Test, AbsentMeansNoL2WithDefaults) {
  absl::StatusOr<Config> c = ParseConfig("", "test.yaml");
  ASSERT_OK(c);
  EXPECT_TRUE(c->cache.l2.redis.empty());
  EXPECT_EQ(c->cache.l2.db, 0);
  EXPECT_EQ(c->cache.l2.timeout, absl::Milliseconds(50));
  EXPECT_EQ(c->cache.l2.connections, 2);
  EXPECT_EQ(c->cache.l2.key_prefix, "fanout:");
  EXPECT_TRUE(c->cache.l2.lease);
  EXPECT_EQ(c->cache.l2.inline_answer_bytes, 16u << 10);
  EXPECT_DOUBLE_EQ(c->cache.xfetch_beta, 1.0);
  c = ParseConfig(EmbeddedDefaultYaml(), "<embedded>");
  ASSERT_OK(c);
  EXPECT_TRUE(c->cache.l2.redis.empty());  // `make run` needs no Redis
}

TEST(ConfigL2Test, ReadsEveryKey) {
  absl::StatusOr<Config> c = ParseConfig(R"(
cache:
  l2:
    redis: unix:///run/redis.sock
    password: pw
    db: 3
    timeout: 20ms
    connections: 4
    key_prefix: "prod:"
    lease: false
    inline_answer_bytes: 0
  xfetch_beta: 0
)",
                                         "test.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->cache.l2.redis, "unix:///run/redis.sock");
  EXPECT_EQ(c->cache.l2.password, "pw");
  EXPECT_EQ(c->cache.l2.db, 3);
  EXPECT_EQ(c->cache.l2.timeout, absl::Milliseconds(20));
  EXPECT_EQ(c->cache.l2.connections, 4);
  EXPECT_EQ(c->cache.l2.key_prefix, "prod:");
  EXPECT_FALSE(c->cache.l2.lease);
  EXPECT_EQ(c->cache.l2.inline_answer_bytes, 0u);
  EXPECT_DOUBLE_EQ(c->cache.xfetch_beta, 0.0);
  c = ParseConfig("cache: {l2: {redis: '127.0.0.1:6379', key_prefix: ''}}", "test.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->cache.l2.key_prefix, "");
}

TEST(ConfigL2Test, BadValuesNameTheKey) {
  EXPECT_THAT(ParseConfig("cache: {l2: {redis: localhost}}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cache.l2.redis: \"localhost\" has no port")));
  EXPECT_THAT(ParseConfig("cache: {l2: {redis: 'h:99999'}}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.l2.redis")));
  EXPECT_THAT(ParseConfig("cache: {l2: {db: -1}}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.l2.db")));
  EXPECT_THAT(ParseConfig("cache: {l2: {timeout: 0}}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.l2.timeout")));
  EXPECT_THAT(ParseConfig("cache: {l2: {timeout: 1m}}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.l2.timeout")));
  EXPECT_THAT(ParseConfig("cache: {l2: {connections: 0}}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.l2.connections")));
  EXPECT_THAT(ParseConfig("cache: {l2: {pasword: x}}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.l2.pasword")));
  EXPECT_THAT(ParseConfig("cache: {l2: {lease: maybe}}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.l2.lease")));
  EXPECT_THAT(
      ParseConfig("cache: {l2: {inline_answer_bytes: -1}}", "t.yaml"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.l2.inline_answer_bytes")));
  EXPECT_THAT(ParseConfig("cache: {xfetch_beta: -1}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.xfetch_beta")));
  EXPECT_THAT(ParseConfig("cache: {xfetch_beta: nan}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.xfetch_beta")));
  EXPECT_THAT(ParseConfig("cache: {l2: {password: x, password_env: Y}}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at most one")));
}

TEST(ConfigL2Test, PasswordComesFromTheValueAFileOrAnEnvVar) {
  L2Section l2;
  EXPECT_EQ(*ResolveL2Password(l2), "");
  l2.password = "inline";
  EXPECT_EQ(*ResolveL2Password(l2), "inline");

  l2 = L2Section();
  l2.password_file = testing::TempPath("redis-password");
  {
    std::ofstream out(l2.password_file);
    out << "from-file\n";
  }
  EXPECT_EQ(*ResolveL2Password(l2), "from-file");
  ::unlink(l2.password_file.c_str());
  EXPECT_THAT(ResolveL2Password(l2), StatusIs(absl::StatusCode::kInvalidArgument,
                                              HasSubstr("cache.l2.password_file: cannot read")));

  l2 = L2Section();
  l2.password_env = "FANOUT_TEST_L2_PASSWORD";
  ::unsetenv("FANOUT_TEST_L2_PASSWORD");
  EXPECT_THAT(ResolveL2Password(l2),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cache.l2.password_env: environment variable "
                                 "FANOUT_TEST_L2_PASSWORD is not set")));
  ::setenv("FANOUT_TEST_L2_PASSWORD", "from-env", 1);
  EXPECT_EQ(*ResolveL2Password(l2), "from-env");
}

}  // namespace
}  // namespace fanout::server
