// The operations keys of the configuration: admin.* and log.format.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/config.h"
#include "server/fanoutd.h"
#include "tests/testing/fake_backend.h"
#include "tests/testing/status_matchers.h"

namespace fanout::server {
namespace {

using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ConfigAdminTest, ParseConfigDefaultsToLoopbackAdminAndTextLogs) {
  auto c = ParseConfig("", "test.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->admin.listen, "127.0.0.1:7071");
  EXPECT_FALSE(c->admin.listen_set);
  EXPECT_EQ(c->log_format, LogFormat::kText);
  EXPECT_EQ(c->log_rate_limit, 10);
}

TEST(ConfigAdminTest, ParseConfigReadsAdminListenAndLogKeys) {
  auto c = ParseConfig("admin: {listen: 0.0.0.0:9090}\nlog: {format: json, rate_limit: 0}\n",
                       "test.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->admin.listen, "0.0.0.0:9090");
  EXPECT_TRUE(c->admin.listen_set);
  EXPECT_EQ(c->log_format, LogFormat::kJson);
  EXPECT_EQ(c->log_rate_limit, 0);
}

TEST(ConfigAdminTest, ParseConfigEmptyAdminListenTurnsItOff) {
  auto c = ParseConfig("admin: {listen: \"\"}\n", "test.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->admin.listen, "");
}

TEST(ConfigAdminTest, ParseConfigRejectsBadOperationsValuesNamingTheKey) {
  EXPECT_THAT(ParseConfig("admin: {listen: \"[::]:7071\"}\n", "test.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("test.yaml: admin.listen")));
  EXPECT_THAT(ParseConfig("admin: {listen: \"127.0.0.1:7071,0.0.0.0:80\"}\n", "test.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("admin.listen")));
  EXPECT_THAT(ParseConfig("admin: {port: 7071}\n", "test.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown key admin.port")));
  EXPECT_THAT(ParseConfig("log: {format: xml}\n", "test.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("log.format")));
  EXPECT_THAT(ParseConfig("log: {rate_limit: -1}\n", "test.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("log.rate_limit")));
}

TEST(ConfigAdminTest, ParseConfigKeepsTheDocumentAndItsName) {
  const std::string yaml = "cache: {ttl: 5s}\n";
  auto c = ParseConfig(yaml, "config.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->document, yaml);
  EXPECT_EQ(c->document_source, "config.yaml");
}

TEST(ConfigAdminTest, TheContainerImageConfigurationParses) {
  auto c = LoadConfigFile(FANOUT_SOURCE_DIR "/deploy/config/container.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->admin.listen, "0.0.0.0:7071");
  EXPECT_EQ(c->log_format, LogFormat::kJson);
}

TEST(ConfigAdminTest, StartAppliesTheLogFormatAndRateLimit) {
  testing::HoldGrpcCallbackQueue();
  auto c = ParseConfig(
      "server: {listen: \"127.0.0.1:0\"}\nadmin: {listen: \"\"}\n"
      "log: {format: json, rate_limit: 3}\norigin: {file: {root: /}}\n",
      "test.yaml");
  ASSERT_OK(c);
  auto d = Fanoutd::Start(*c);
  ASSERT_OK(d);
  EXPECT_EQ(GetLogFormat(), LogFormat::kJson);
  EXPECT_EQ(GetLogRateLimit(), 3);
  SetLogFormat(LogFormat::kText);
  SetLogRateLimit(10);
}

}  // namespace
}  // namespace fanout::server
