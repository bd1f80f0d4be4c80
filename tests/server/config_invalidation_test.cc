// invalidation and watch: cross-pod invalidation's and the Watch RPC's
// configuration.
#include "gtest/gtest.h"
#include "server/config.h"
#include "tests/testing/status_matchers.h"

namespace fanout::server {
namespace {

using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ConfigInvalidationTest, AbsentMeansDefaults) {
  absl::StatusOr<Config> c = ParseConfig("", "test.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->invalidation.max_local_ttl, absl::Seconds(5));
  EXPECT_EQ(c->invalidation.heartbeat, absl::Seconds(1));
  EXPECT_EQ(c->invalidation.dead_after, absl::Seconds(3));
  EXPECT_EQ(c->invalidation.stream_max_len, 100000);
  EXPECT_TRUE(c->invalidation.pod.empty());
  EXPECT_EQ(c->watch.max_streams, 4096);
  EXPECT_EQ(c->watch.heartbeat, absl::Seconds(5));
  EXPECT_EQ(c->watch.buffer_bytes, 1u << 20);
}

TEST(ConfigInvalidationTest, ReadsEveryKey) {
  absl::StatusOr<Config> c = ParseConfig(R"(
invalidation:
  max_local_ttl: 0s
  heartbeat: 200ms
  dead_after: 1s
  stream_max_len: 500
  pod: web-1
watch:
  max_streams: 10
  heartbeat: 1s
  buffer_bytes: 64KiB
)",
                                         "test.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->invalidation.max_local_ttl, absl::ZeroDuration());
  EXPECT_EQ(c->invalidation.heartbeat, absl::Milliseconds(200));
  EXPECT_EQ(c->invalidation.dead_after, absl::Seconds(1));
  EXPECT_EQ(c->invalidation.stream_max_len, 500);
  EXPECT_EQ(c->invalidation.pod, "web-1");
  EXPECT_EQ(c->watch.max_streams, 10);
  EXPECT_EQ(c->watch.heartbeat, absl::Seconds(1));
  EXPECT_EQ(c->watch.buffer_bytes, 64u << 10);
}

TEST(ConfigInvalidationTest, BadValuesFailNamingTheKey) {
  EXPECT_THAT(ParseConfig("invalidation: {heartbeat: 2s, dead_after: 1s}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalidation.dead_after")));
  EXPECT_THAT(ParseConfig("invalidation: {stream_max_len: 10}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("stream_max_len")));
  EXPECT_THAT(ParseConfig("invalidation: {pod: 'a b'}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalidation.pod")));
  EXPECT_THAT(ParseConfig("invalidation: {ttl: 1s}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ttl")));
  EXPECT_THAT(ParseConfig("watch: {buffer_bytes: 100}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("buffer_bytes")));
  EXPECT_THAT(ParseConfig("watch: {max_streams: -1}", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_streams")));
}

}  // namespace
}  // namespace fanout::server
