#include "server/config.h"

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace fanout::server {
namespace {

using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ParseConfigTest, EmptyFileGivesDefaults) {
  absl::StatusOr<Config> c = ParseConfig("", "test.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->server.listen, "127.0.0.1:7070");
  EXPECT_TRUE(c->server.reflection);
  EXPECT_EQ(c->limits.max_key_bytes, 1024u);
  EXPECT_EQ(c->cache.l1_capacity, 256ull << 20);
  EXPECT_EQ(c->origin.type, OriginSection::Type::kFile);
}

TEST(ParseConfigTest, EmbeddedDefaultParsesAndPointsAtSamples) {
  absl::StatusOr<Config> c = ParseConfig(EmbeddedDefaultYaml(), "<embedded>");
  ASSERT_OK(c);
  EXPECT_EQ(c->origin.file_root, "deploy/examples/config.d");
  EXPECT_EQ(c->server.listen, "127.0.0.1:7070");
}

TEST(ParseConfigTest, ReadsEverySection) {
  absl::StatusOr<Config> c = ParseConfig(R"(
server:
  listen: unix:///tmp/fanout.sock
  reflection: false
  drain_timeout: 3s
  threads: 4
log:
  level: debug
limits:
  max_key_bytes: 512
  max_namespace_bytes: 64
  max_value_bytes: 64KiB
  max_batch_keys: 10
  max_in_flight: 100
  request_timeout: 5s
cache:
  l1:
    capacity: 64MiB
    max_entry_fraction: 0.05
  ttl: 30s
  refresh_ahead: 0.5
  max_stale: 10m
  stale_ttl: 48h
origin:
  type: grpc
  timeout: 500ms
  grpc:
    target: 127.0.0.1:9000
)", "test.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->server.listen, "unix:///tmp/fanout.sock");
  EXPECT_FALSE(c->server.reflection);
  EXPECT_EQ(c->server.drain_timeout, absl::Seconds(3));
  EXPECT_EQ(c->server.threads, 4);
  EXPECT_EQ(c->log_level, LogLevel::kDebug);
  EXPECT_EQ(c->limits.max_key_bytes, 512u);
  EXPECT_EQ(c->limits.max_namespace_bytes, 64u);
  EXPECT_EQ(c->limits.max_value_bytes, 65536u);
  EXPECT_EQ(c->limits.max_batch_keys, 10);
  EXPECT_EQ(c->limits.max_in_flight, 100);
  EXPECT_EQ(c->limits.request_timeout, absl::Seconds(5));
  EXPECT_EQ(c->cache.l1_capacity, 64ull << 20);
  EXPECT_DOUBLE_EQ(c->cache.l1_max_entry_fraction, 0.05);
  EXPECT_EQ(c->cache.ttl, absl::Seconds(30));
  EXPECT_DOUBLE_EQ(c->cache.refresh_ahead, 0.5);
  EXPECT_EQ(c->cache.max_stale, absl::Minutes(10));
  EXPECT_EQ(c->cache.stale_ttl, absl::Hours(48));
  EXPECT_EQ(c->origin.type, OriginSection::Type::kGrpc);
  EXPECT_EQ(c->origin.timeout, absl::Milliseconds(500));
  EXPECT_EQ(c->origin.grpc_target, "127.0.0.1:9000");
}

struct BadCase {
  const char* yaml;
  const char* expected;  // part of the message
};

class ParseConfigBadTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ParseConfigBadTest, FailsNamingTheKey) {
  EXPECT_THAT(ParseConfig(GetParam().yaml, "bad.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(GetParam().expected)));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ParseConfigBadTest,
    ::testing::Values(
        BadCase{"servr:\n  listen: x\n", "unknown key servr"},
        BadCase{"cache:\n  ttlx: 5s\n", "unknown key cache.ttlx"},
        BadCase{"cache:\n  l1:\n    size: 5MiB\n", "unknown key cache.l1.size"},
        BadCase{"cache:\n  ttl: soon\n", "cache.ttl: \"soon\" is not a duration"},
        BadCase{"cache:\n  ttl: 0\n", "cache.ttl: must be more than zero"},
        BadCase{"cache:\n  refresh_ahead: 2\n", "cache.refresh_ahead"},
        BadCase{"cache:\n  l1:\n    capacity: lots\n", "cache.l1.capacity"},
        BadCase{"cache:\n  l1:\n    capacity: 1025GiB\n", "cache.l1.capacity: must be at most"},
        BadCase{"limits:\n  max_batch_keys: -1\n", "limits.max_batch_keys"},
        BadCase{"limits:\n  max_key_bytes: 0\n", "limits.max_key_bytes: must be at least 1"},
        BadCase{"server:\n  reflection: maybe\n", "server.reflection"},
        BadCase{"server:\n  listen: [a, b]\n", "server.listen: must be a single value"},
        BadCase{"server: 5\n", "server must be a mapping"},
        BadCase{"log:\n  level: loud\n", "log.level"},
        BadCase{"origin:\n  type: ftp\n", "origin.type: \"ftp\" is not one of file, grpc"},
        BadCase{"origin:\n  type: grpc\n", "origin.grpc.target: required"},
        BadCase{"server: {listen: \"a\"\n", "not valid YAML"}));

TEST(LoadConfigFileTest, MissingFileIsNotFound) {
  EXPECT_THAT(LoadConfigFile("/nonexistent/fanout.yaml"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/fanout.yaml")));
}

}  // namespace
}  // namespace fanout::server

namespace fanout::server {
namespace {

TEST(ParseConfigRoutesTest, ReadsRoutesWithBothBackendForms) {
  absl::StatusOr<Config> c = ParseConfig(R"(
routes:
  llm:
    policy: least_loaded
    method: /llm.v1.Model/Generate
    timeout: 2s
    backends:
      - "127.0.0.1:9001"
      - {address: "127.0.0.1:9002", name: gpu-b}
  profile:
    policy: hedged
    method: /profile.v1.Profiles/Get
    timeout: 300ms
    hedge_after: 40ms
    backends: ["10.0.0.7:9000", "10.0.0.8:9000"]
    ejection:
      consecutive_failures: 3
    adaptive:
      window: 20
)", "routes.yaml");
  ASSERT_OK(c);
  ASSERT_EQ(c->routes.size(), 2u);
  const router::RouteConfig& llm = c->routes[0];
  EXPECT_EQ(llm.name, "llm");
  EXPECT_EQ(llm.policy, router::Policy::kLeastLoaded);
  EXPECT_EQ(llm.method, "/llm.v1.Model/Generate");
  EXPECT_EQ(llm.timeout, absl::Seconds(2));
  ASSERT_EQ(llm.backends.size(), 2u);
  EXPECT_EQ(llm.backends[0].address, "127.0.0.1:9001");
  EXPECT_EQ(llm.backends[1].address, "127.0.0.1:9002");
  EXPECT_EQ(llm.backends[1].name, "gpu-b");
  const router::RouteConfig& profile = c->routes[1];
  EXPECT_EQ(profile.policy, router::Policy::kHedged);
  EXPECT_EQ(profile.hedge_after, absl::Milliseconds(40));
  EXPECT_EQ(profile.ejection.consecutive_failures, 3);
  EXPECT_EQ(profile.adaptive.window, 20);
}

TEST(ParseConfigRoutesTest, BadRoutesFailNamingTheRouteAndField) {
  EXPECT_THAT(ParseConfig("routes:\n  r:\n    policy: fastest\n    method: /a.B/C\n"
                          "    backends: [\"x:1\"]\n", "r.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("routes.r.policy: ")));
  EXPECT_THAT(ParseConfig("routes:\n  r:\n    method: /a.B/C\n", "r.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("backends")));
  EXPECT_THAT(ParseConfig("routes:\n  r:\n    method: nope\n    backends: [\"x:1\"]\n", "r.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("method")));
  EXPECT_THAT(ParseConfig("routes:\n  r:\n    method: /a.B/C\n    backends: [\"x:1\"]\n"
                          "    retries: 3\n", "r.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown key routes.r.retries")));
  EXPECT_THAT(ParseConfig("routes:\n  r:\n    method: /a.B/C\n    backends:\n"
                          "      - {address: \"x:1\", weight: 2}\n", "r.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown key routes.r.backends[0].weight")));
  EXPECT_THAT(ParseConfig("routes:\n  r:\n    method: /a.B/C\n    backends: \"x:1\"\n", "r.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("routes.r.backends: must be a list")));
}

}  // namespace
}  // namespace fanout::server
