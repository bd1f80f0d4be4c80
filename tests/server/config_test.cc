#include "server/config.h"

#include <map>
#include <string>

#include "absl/strings/ascii.h"
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
  EXPECT_EQ(c->server.shutdown_delay, absl::Seconds(5));
  EXPECT_EQ(c->server.threads, 0);
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
  shutdown_delay: 0s
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
)",
                                         "test.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->server.listen, "unix:///tmp/fanout.sock");
  EXPECT_FALSE(c->server.reflection);
  EXPECT_EQ(c->server.drain_timeout, absl::Seconds(3));
  EXPECT_EQ(c->server.shutdown_delay, absl::ZeroDuration());
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
        BadCase{"server: {listen: \"a\"\n", "not valid YAML"},
        BadCase{"server:\n  shutdown_delay: soon\n", "server.shutdown_delay"},
        // A repeated key would otherwise be ignored (yaml-cpp reads the first).
        BadCase{"server:\n  listen: 127.0.0.1:1\nserver:\n  listen: 127.0.0.1:2\n",
                "duplicate key server (lines 1 and 3)"},
        BadCase{"cache:\n  ttl: 5s\n  ttl: 6s\n", "duplicate key cache.ttl (lines 2 and 3)"},
        BadCase{"routes:\n  r:\n    method: /a.B/C\n    backends:\n      - {address: \"x:1\", "
                "address: \"y:2\"}\n",
                "duplicate key routes.r.backends[0].address"},
        // gRPC would bind port 34463, 4464 and 443 for these.
        BadCase{"server:\n  listen: 127.0.0.1:99999\n",
                "server.listen: \"127.0.0.1:99999\" has port 99999"},
        BadCase{"server:\n  listen: \":70000\"\n", "server.listen: \":70000\" has port 70000"},
        BadCase{"server:\n  listen: 127.0.0.1\n", "server.listen: \"127.0.0.1\" has no port"},
        BadCase{"origin:\n  type: grpc\n  grpc:\n    target: \"http://origin:80\"\n",
                "origin.grpc.target: \"http://origin:80\" has scheme \"http\""},
        BadCase{"origin:\n  type: grpc\n  grpc:\n    target: origin\n",
                "origin.grpc.target: \"origin\" has no port"},
        BadCase{"origin:\n  type: grpc\n  grpc:\n    target: \"origin:99999\"\n",
                "origin.grpc.target: \"origin:99999\" has port 99999"},
        BadCase{"origin:\n  type: grpc\n  grpc:\n    target: [\"127.0.0.1:1\", origin]\n",
                "origin.grpc.target[1]: \"origin\" has no port"},
        BadCase{"origin:\n  type: grpc\n  grpc:\n    target: [\"127.0.0.1:1\", {a: b}]\n",
                "origin.grpc.target[1]: must be an address"},
        BadCase{"origin:\n  type: grpc\n  grpc:\n    target: []\n",
                "origin.grpc.target: the list of targets is empty"},
        BadCase{"origin:\n  grpc:\n    policy: random\n",
                "origin.grpc.policy: \"random\" is not one of fallback, first_success, hedged"},
        BadCase{"origin:\n  grpc:\n    hedge_after: soon\n", "origin.grpc.hedge_after"},
        BadCase{"origin:\n  grpc:\n    hedge_after: 0\n",
                "origin.grpc.hedge_after: must be more than zero"}));

TEST(ParseConfigTest, OriginGrpcTargetTakesAListOfReplicasAndAPolicy) {
  absl::StatusOr<Config> defaults = ParseConfig("", "test.yaml");
  ASSERT_OK(defaults);
  EXPECT_EQ(defaults->origin.grpc_policy, cache::ReplicaPolicy::kFallback);
  EXPECT_EQ(defaults->origin.grpc_hedge_after, absl::Milliseconds(50));
  absl::StatusOr<Config> c = ParseConfig(
      "origin:\n  type: grpc\n  grpc:\n    target: [\"127.0.0.1:1\", \"dns:///o.svc:443\"]\n"
      "    policy: hedged\n    hedge_after: 80ms\n",
      "test.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->origin.grpc_targets, (std::vector<std::string>{"127.0.0.1:1", "dns:///o.svc:443"}));
  EXPECT_EQ(c->origin.grpc_target, "");
  EXPECT_EQ(c->origin.grpc_policy, cache::ReplicaPolicy::kHedged);
  EXPECT_EQ(c->origin.grpc_hedge_after, absl::Milliseconds(80));
  // A list of one is the single target.
  absl::StatusOr<Config> one =
      ParseConfig("origin:\n  type: grpc\n  grpc:\n    target: [\"127.0.0.1:1\"]\n", "test.yaml");
  ASSERT_OK(one);
  EXPECT_EQ(one->origin.grpc_target, "127.0.0.1:1");
  EXPECT_TRUE(one->origin.grpc_targets.empty());
}

TEST(LoadConfigFileTest, MissingFileIsNotFound) {
  EXPECT_THAT(LoadConfigFile("/nonexistent/fanout.yaml"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/fanout.yaml")));
}

TEST(ParseConfigFileOriginTest, ReadsSymlinksAndReadPoolKeysAndNamesBadOnes) {
  auto defaults = ParseConfig("", "empty.yaml");
  ASSERT_OK(defaults);
  EXPECT_EQ(defaults->origin.file_symlinks, cache::FileSymlinks::kWithinRoot);
  EXPECT_EQ(defaults->origin.file_io_threads, 4);
  EXPECT_EQ(defaults->origin.file_max_queued_reads, 1024);
  auto c = ParseConfig(
      "origin:\n  file:\n    symlinks: deny\n    io_threads: 2\n    max_queued_reads: 10\n",
      "file.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->origin.file_symlinks, cache::FileSymlinks::kDeny);
  EXPECT_EQ(c->origin.file_io_threads, 2);
  EXPECT_EQ(c->origin.file_max_queued_reads, 10);
  EXPECT_THAT(ParseConfig("origin:\n  file:\n    symlinks: follow\n", "bad.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("origin.file.symlinks")));
  EXPECT_THAT(ParseConfig("origin:\n  file:\n    io_threads: 0\n", "bad.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("origin.file.io_threads")));
  EXPECT_THAT(
      ParseConfig("origin:\n  file:\n    max_queued_reads: 0\n", "bad.yaml"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("origin.file.max_queued_reads")));
}

TEST(ParseConfigTest, ReadsReadPathLimitsWithDefaults) {
  absl::StatusOr<Config> defaults = ParseConfig("", "test.yaml");
  ASSERT_OK(defaults);
  EXPECT_EQ(defaults->limits.max_batch_bytes, 4ull << 20);
  EXPECT_EQ(defaults->cache.negative_ttl, absl::Seconds(5));
  EXPECT_EQ(defaults->cache.retry_backoff, absl::Seconds(1));
  EXPECT_EQ(defaults->cache.max_retry_backoff, absl::Seconds(30));
  EXPECT_EQ(defaults->cache.max_background_refreshes, 64);
  absl::StatusOr<Config> c = ParseConfig(R"(
limits:
  max_batch_bytes: 16MiB
cache:
  negative_ttl: 0
  retry_backoff: 250ms
  max_retry_backoff: 1m
  max_background_refreshes: 8
)",
                                         "test.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->limits.max_batch_bytes, 16ull << 20);
  EXPECT_EQ(c->cache.negative_ttl, absl::ZeroDuration());
  EXPECT_EQ(c->cache.retry_backoff, absl::Milliseconds(250));
  EXPECT_EQ(c->cache.max_retry_backoff, absl::Minutes(1));
  EXPECT_EQ(c->cache.max_background_refreshes, 8);
  EXPECT_THAT(ParseConfig("limits:\n  max_batch_bytes: 2GiB\n", "bad.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limits.max_batch_bytes")));
  EXPECT_THAT(
      ParseConfig("cache:\n  max_background_refreshes: 0\n", "bad.yaml"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.max_background_refreshes")));
  EXPECT_THAT(ParseConfig("cache:\n  max_retry_backoff: 0\n", "bad.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.max_retry_backoff")));
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
)",
                                         "routes.yaml");
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
                          "    backends: [\"x:1\"]\n",
                          "r.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("routes.r.policy: ")));
  EXPECT_THAT(ParseConfig("routes:\n  r:\n    method: /a.B/C\n", "r.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("backends")));
  EXPECT_THAT(ParseConfig("routes:\n  r:\n    method: nope\n    backends: [\"x:1\"]\n", "r.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("method")));
  EXPECT_THAT(
      ParseConfig("routes:\n  r:\n    method: /a.B/C\n    backends: [\"x:1\"]\n"
                  "    retries: 3\n",
                  "r.yaml"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown key routes.r.retries")));
  EXPECT_THAT(ParseConfig("routes:\n  r:\n    method: /a.B/C\n    backends:\n"
                          "      - {address: \"x:1\", weight: 2}\n",
                          "r.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown key routes.r.backends[0].weight")));
  EXPECT_THAT(
      ParseConfig("routes:\n  r:\n    method: /a.B/C\n    backends: \"x:1\"\n", "r.yaml"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("routes.r.backends: must be a list")));
}

TEST(ParseConfigRoutesTest, BadBackendAddressesFailNamingTheBackend) {
  EXPECT_THAT(ParseConfig("routes:\n  r:\n    method: /a.B/C\n"
                          "    backends: [\"x:1\", \"no port\"]\n",
                          "r.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("routes.r.backends[1]: \"no port\" contains whitespace")));
  EXPECT_THAT(ParseConfig("routes:\n  r:\n    method: /a.B/C\n"
                          "    backends: [\"cache-1\"]\n",
                          "r.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("routes.r.backends[0]: \"cache-1\" has no port")));
  EXPECT_THAT(
      ParseConfig("routes:\n  r:\n    method: /a.B/C\n    backends:\n"
                  "      - {address: \"10.0.0.1:70000\", name: a}\n",
                  "r.yaml"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("routes.r.backends[0].address: \"10.0.0.1:70000\" has port 70000")));
  EXPECT_OK(
      ParseConfig("routes:\n  r:\n    method: /a.B/C\n    backends:\n"
                  "      - dns:///cache.internal:9000\n      - unix:///run/cache.sock\n"
                  "      - ipv4:10.0.0.1:80,10.0.0.2:80\n      - \"[::1]:9000\"\n",
                  "r.yaml"));
}

}  // namespace
}  // namespace fanout::server

namespace fanout::server {
namespace {

TEST(ParseConfigTest, DeadlineMarginDefaultsTo20msAndMustBePositive) {
  absl::StatusOr<Config> defaults = ParseConfig("", "test.yaml");
  ASSERT_OK(defaults);
  EXPECT_EQ(defaults->cache.deadline_margin, absl::Milliseconds(20));
  absl::StatusOr<Config> c = ParseConfig("cache:\n  deadline_margin: 250ms\n", "test.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->cache.deadline_margin, absl::Milliseconds(250));
  EXPECT_THAT(ParseConfig("cache:\n  deadline_margin: 0\n", "bad.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.deadline_margin")));
}

// A reload compares ConfigSettings of the running and the new file: a key it
// leaves out would be changed in the file, reported as "unchanged" and
// silently not applied.
struct SettingCase {
  std::string key;
  std::string yaml;
};

void PrintTo(const SettingCase& c, std::ostream* os) { *os << c.key; }

class ConfigSettingsTest : public ::testing::TestWithParam<SettingCase> {};

TEST_P(ConfigSettingsTest, ConfigSettingsSeeTheChangedKey) {
  absl::StatusOr<Config> base = ParseConfig("", "base.yaml");
  absl::StatusOr<Config> changed = ParseConfig(GetParam().yaml, "changed.yaml");
  ASSERT_TRUE(base.ok()) << base.status();
  ASSERT_TRUE(changed.ok()) << changed.status();
  const std::map<std::string, std::string> a = ConfigSettings(*base);
  const std::map<std::string, std::string> b = ConfigSettings(*changed);
  ASSERT_TRUE(a.contains(GetParam().key)) << GetParam().key;
  EXPECT_NE(a.at(GetParam().key), b.at(GetParam().key));
  for (const auto& [key, value] : a) {
    if (key != GetParam().key) {
      EXPECT_EQ(value, b.at(key)) << key;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Keys, ConfigSettingsTest,
    ::testing::Values(
        SettingCase{"cache.ttl", "cache: {ttl: 7m}"},
        SettingCase{"cache.deadline_margin", "cache: {deadline_margin: 70ms}"},
        SettingCase{"cache.xfetch_beta", "cache: {xfetch_beta: 2.5}"},
        SettingCase{"cache.l2.lease", "cache: {l2: {lease: false}}"},
        SettingCase{"cache.l2.inline_answer_bytes", "cache: {l2: {inline_answer_bytes: 1KiB}}"},
        SettingCase{"invalidation.max_local_ttl", "invalidation: {max_local_ttl: 9s}"},
        SettingCase{"invalidation.heartbeat", "invalidation: {heartbeat: 2s}"},
        SettingCase{"invalidation.dead_after", "invalidation: {dead_after: 9s}"},
        SettingCase{"invalidation.stream_max_len", "invalidation: {stream_max_len: 5000}"},
        SettingCase{"invalidation.pod", "invalidation: {pod: pod-b}"},
        SettingCase{"watch.max_streams", "watch: {max_streams: 12}"},
        SettingCase{"watch.heartbeat", "watch: {heartbeat: 9s}"},
        SettingCase{"watch.buffer_bytes", "watch: {buffer_bytes: 64KiB}"},
        SettingCase{"origin.grpc.target",
                    "origin: {grpc: {target: [\"127.0.0.1:1\", \"127.0.0.1:2\"]}}"},
        SettingCase{"origin.push", "origin: {push: false}"},
        SettingCase{"origin.grpc.policy", "origin: {grpc: {policy: hedged}}"},
        SettingCase{"origin.grpc.hedge_after", "origin: {grpc: {hedge_after: 80ms}}"}),
    [](const ::testing::TestParamInfo<SettingCase>& info) {
      std::string name;
      bool upper = true;
      for (char c : info.param.key) {
        if (c == '.' || c == '_') {
          upper = true;
        } else {
          name += upper ? absl::ascii_toupper(c) : c;
          upper = false;
        }
      }
      return name;
    });

}  // namespace
}  // namespace fanout::server
