#include "cache/tiers/redis/redis_keys.h"

#include "cache/entry.h"
#include "cache/tiers/redis/redis_address.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;

TEST(RedisKeysTest, ValuesAndLeasesLiveApartUnderThePrefix) {
  RedisKeys keys("fanout:");
  const std::string ck = CompositeKey("ns", "k");
  EXPECT_EQ(keys.Value(ck), std::string("fanout:v:ns\0k", 13));
  EXPECT_EQ(keys.Lease(ck), std::string("fanout:l:ns\0k", 13));
  // The empty namespace cannot collide with the lease space either.
  EXPECT_NE(keys.Value(CompositeKey("", "l:x")), keys.Lease(CompositeKey("", "x")));
}

TEST(RedisKeysTest, PatternEscapesGlobCharactersOfPrefixAndKeys) {
  RedisKeys keys("d*p[1]:");
  EXPECT_EQ(keys.ValuePattern(CompositeKey("ns", "f?a\\g*")),
            std::string("d\\*p\\[1\\]:v:ns\0f\\?a\\\\g\\**", 25));
}

TEST(RedisKeysTest, EscapeGlobLeavesOtherBytesAlone) {
  EXPECT_EQ(EscapeGlob(std::string("a\0b-^!", 6)), std::string("a\0b-^!", 6));
  EXPECT_EQ(EscapeGlob("*?[]\\"), "\\*\\?\\[\\]\\\\");
}

TEST(RedisAddressTest, ParsesHostPortIpv6AndUnix) {
  absl::StatusOr<RedisAddress> a = ParseRedisAddress("127.0.0.1:6379");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 6379);
  EXPECT_EQ(a->ToString(), "127.0.0.1:6379");
  a = ParseRedisAddress("[::1]:7000");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->ToString(), "[::1]:7000");
  a = ParseRedisAddress("redis.default.svc:6379");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "redis.default.svc");
  a = ParseRedisAddress("unix:///run/redis/redis.sock");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->is_unix());
  EXPECT_EQ(a->unix_path, "/run/redis/redis.sock");
  EXPECT_EQ(a->ToString(), "unix:///run/redis/redis.sock");
}

TEST(RedisAddressTest, RejectsWhatItCannotDial) {
  EXPECT_THAT(ParseRedisAddress("localhost"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no port")));
  EXPECT_THAT(ParseRedisAddress("localhost:0"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1 to 65535")));
  EXPECT_THAT(ParseRedisAddress("localhost:65536"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseRedisAddress("localhost:http"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseRedisAddress(":6379"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no host")));
  EXPECT_THAT(ParseRedisAddress("::1:6379"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("brackets")));
  EXPECT_THAT(ParseRedisAddress("unix://relative.sock"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("absolute")));
  EXPECT_THAT(ParseRedisAddress("unix://"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseRedisAddress(""), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace fanout::cache
