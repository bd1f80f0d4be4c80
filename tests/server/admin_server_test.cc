#include "server/admin_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <sys/socket.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/http_client.h"
#include "tests/testing/loopback_listener.h"
#include "tests/testing/status_matchers.h"

namespace fanout::server {
namespace {

using ::fanout::testing::HttpRequest;
using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

using Listener = testing::LoopbackListener;  // a port taken by someone else

// A TCP connection that sends nothing.
int ConnectIdle(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  return fd;
}

class AdminServerTest : public ::testing::Test {
 protected:
  void Start(AdminServerOptions options = {}) {
    options.listen = "127.0.0.1:0";
    AdminSources sources;
    sources.ready = [this] { return ready_.load(); };
    sources.config_yaml = "server:\n  listen: 127.0.0.1:7070\n";
    sources.collectables = {&registry_};
    auto s = AdminServer::Start(options, std::move(sources));
    ASSERT_OK(s);
    server_ = *std::move(s);
  }
  std::string Url(absl::string_view path) const {
    return absl::StrCat("http://127.0.0.1:", server_->port(), path);
  }

  std::atomic<bool> ready_{true};
  prometheus::Registry registry_;
  std::unique_ptr<AdminServer> server_;
};

TEST_F(AdminServerTest, MetricsServesTheCollectablesInTextFormat) {
  auto& calls = prometheus::BuildCounter()
                    .Name("fanout_test_calls_total")
                    .Help("calls")
                    .Register(registry_)
                    .Add({{"rpc", "Get"}});
  calls.Increment(3);
  Start();
  auto r = HttpRequest(Url("/metrics"));
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_THAT(r->body, HasSubstr("# TYPE fanout_test_calls_total counter\n"
                                 "fanout_test_calls_total{rpc=\"Get\"} 3\n"));
  calls.Increment();
  EXPECT_THAT(HttpRequest(Url("/metrics"))->body,
              HasSubstr("fanout_test_calls_total{rpc=\"Get\"} 4\n"));
}

TEST_F(AdminServerTest, HealthzAnswersOkWhileRunning) {
  ready_ = false;
  Start();
  auto r = HttpRequest(Url("/healthz"));
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok\n");
}

TEST_F(AdminServerTest, ReadyzFollowsTheReadyState) {
  Start();
  EXPECT_EQ(HttpRequest(Url("/readyz"))->status, 200);
  ready_ = false;
  auto r = HttpRequest(Url("/readyz"));
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->body, "not ready\n");
  ready_ = true;
  EXPECT_EQ(HttpRequest(Url("/readyz"))->status, 200);
}

TEST_F(AdminServerTest, DebugConfigServesTheDocument) {
  Start();
  auto r = HttpRequest(Url("/debug/config"));
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "server:\n  listen: 127.0.0.1:7070\n");
}

TEST_F(AdminServerTest, HeadAnswersWithoutABody) {
  Start();
  auto r = HttpRequest(Url("/readyz"), "HEAD");
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "");
}

TEST_F(AdminServerTest, OtherPathsAreNotFoundAndNoFileIsServed) {
  Start();
  for (const char* path : {"/", "/metricsx", "/metrics/x", "/healthz/", "/debug", "/etc/passwd",
                           "/../../etc/passwd", "/CMakeLists.txt"}) {
    auto r = HttpRequest(Url(path));
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 404) << path;
    EXPECT_THAT(r->body, Not(HasSubstr("root:"))) << path;
  }
}

TEST_F(AdminServerTest, OtherMethodsAreNotAllowed) {
  Start();
  for (const char* method : {"POST", "PUT", "DELETE", "PATCH", "OPTIONS"}) {
    auto r = HttpRequest(Url("/metrics"), method);
    ASSERT_OK(r);
    EXPECT_EQ(r->status, 405) << method;
  }
}

TEST_F(AdminServerTest, IdleConnectionsAreClosedAndDoNotStarveProbes) {
  AdminServerOptions options;
  options.threads = 2;
  options.request_timeout = absl::Milliseconds(200);
  Start(options);
  // More idle connections than workers: without the request timeout they
  // would hold every worker for good.
  std::vector<int> idle;
  for (int i = 0; i < 6; ++i) idle.push_back(ConnectIdle(server_->port()));
  auto r = HttpRequest(Url("/healthz"), "GET", absl::Seconds(60));
  EXPECT_OK(r);
  if (r.ok()) {
    EXPECT_EQ(r->status, 200);
  }
  for (int fd : idle) ::close(fd);
}

// With the defaults fanoutd runs: 32 idle connections (what a port scan or
// a stuck client leaves) must not hold a probe for seconds. With 4 workers
// and a 1 s request timeout this took 8 s.
TEST_F(AdminServerTest, ThirtyTwoIdleConnectionsDelayHealthzLittleWithDefaults) {
  Start();
  std::vector<int> idle;
  for (int i = 0; i < 32; ++i) idle.push_back(ConnectIdle(server_->port()));
  const absl::Time start = absl::Now();
  auto r = HttpRequest(Url("/healthz"), "GET", absl::Seconds(60));
  const absl::Duration took = absl::Now() - start;
  EXPECT_OK(r);
  if (r.ok()) {
    EXPECT_EQ(r->status, 200);
  }
  // 1 s expected; 5 s leaves room for a loaded machine and still fails the
  // 8 s of the old defaults.
  EXPECT_LT(took, absl::Seconds(5));
  for (int fd : idle) ::close(fd);
}

TEST_F(AdminServerTest, ConcurrentScrapesAllSucceed) {
  Start();
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        auto r = HttpRequest(Url(i % 2 ? "/metrics" : "/readyz"));
        if (r.ok() && r->status == 200) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 80);
}

TEST(AdminServerStartTest, StartOnABusyPortFailsNamingAdminListen) {
  Listener busy;
  AdminServerOptions options;
  options.listen = absl::StrCat("127.0.0.1:", busy.port());
  auto s = AdminServer::Start(options, {});
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("admin.listen")));
  EXPECT_THAT(s.status().message(), HasSubstr("Address already in use"));
}

TEST(AdminServerStartTest, StartRejectsAddressesCivetwebWouldReadOtherwise) {
  for (const char* listen : {"", "7071", "127.0.0.1:0,127.0.0.1:0", "127.0.0.1:7071s",
                             "127.0.0.1:7071r", "[::1]:7071", "127.0.0.1:99999", "127.0.0.1:-1",
                             "127.0.0.1:", "example.com:80", "127.0.0.1:0x10", "unix:///tmp/a"}) {
    AdminServerOptions options;
    options.listen = listen;
    EXPECT_THAT(AdminServer::Start(options, {}),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("admin.listen")))
        << listen;
  }
}

TEST(AdminServerStartTest, StartOnLocalhostBindsLoopback) {
  AdminServerOptions options;
  options.listen = "localhost:0";
  auto s = AdminServer::Start(options, {});
  ASSERT_OK(s);
  EXPECT_EQ(HttpRequest(absl::StrCat("http://127.0.0.1:", (*s)->port(), "/healthz"))->status, 200);
  EXPECT_EQ((*s)->address(), absl::StrCat("localhost:", (*s)->port()));
}

TEST(ValidateAdminListenTest, ValidateAdminListenAcceptsIpv4AndLocalhostWithAPort) {
  EXPECT_OK(ValidateAdminListen("127.0.0.1:7071"));
  EXPECT_OK(ValidateAdminListen("0.0.0.0:0"));
  EXPECT_OK(ValidateAdminListen("localhost:65535"));
  EXPECT_THAT(ValidateAdminListen("0.0.0.0:65536"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("from 0 to 65535")));
  EXPECT_THAT(ValidateAdminListen("[::]:7071"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("IPv4")));
}

TEST(RedactConfigYamlTest, RedactConfigYamlHidesSecretKeysAtAnyDepth) {
  const std::string yaml = R"(# a comment
server:
  listen: 127.0.0.1:7070
cache:
  l2:
    redis: redis:6379
    password: hunter2
    Client_Secret: {nested: s3cr3t}
routes:
  llm:
    backends:
      - {address: 10.0.0.1:9000, auth_token: tok-123}
    method: /a.B/C
origin:
  grpc:
    target: https://user:pa55@origin.example:443/path
)";
  auto redacted = RedactConfigYaml(yaml);
  ASSERT_OK(redacted);
  for (const char* secret : {"hunter2", "s3cr3t", "tok-123", "pa55", "a comment"}) {
    EXPECT_THAT(*redacted, Not(HasSubstr(secret)));
  }
  const YAML::Node node = YAML::Load(*redacted);
  EXPECT_EQ(node["cache"]["l2"]["password"].as<std::string>(), "<redacted>");
  EXPECT_EQ(node["cache"]["l2"]["Client_Secret"].as<std::string>(), "<redacted>");
  EXPECT_EQ(node["cache"]["l2"]["redis"].as<std::string>(), "redis:6379");
  EXPECT_EQ(node["routes"]["llm"]["backends"][0]["auth_token"].as<std::string>(), "<redacted>");
  EXPECT_EQ(node["routes"]["llm"]["backends"][0]["address"].as<std::string>(), "10.0.0.1:9000");
  EXPECT_EQ(node["origin"]["grpc"]["target"].as<std::string>(),
            "https://user:<redacted>@origin.example:443/path");
  EXPECT_EQ(node["server"]["listen"].as<std::string>(), "127.0.0.1:7070");
}

TEST(RedactConfigYamlTest, RedactConfigYamlRejectsInvalidYaml) {
  EXPECT_THAT(RedactConfigYaml("a: [unclosed"), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace fanout::server
