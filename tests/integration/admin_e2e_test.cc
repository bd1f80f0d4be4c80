// End to end: the real fanoutd binary with JSON logs and its admin endpoint.
#include <arpa/inet.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/http_client.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"

namespace fanout {
namespace {

using ::fanout::testing::HttpRequest;
using ::fanout::testing::Subprocess;
using ::testing::HasSubstr;

std::string WriteConfig(const std::string& yaml) {
  const std::string path = testing::TempPath("config.yaml");
  std::ofstream(path) << yaml;
  return path;
}

// Every stderr line as a JSON object; fails the test for a line that is not.
std::vector<google::protobuf::Struct> JsonLines(const std::string& err) {
  std::vector<google::protobuf::Struct> out;
  for (absl::string_view line : absl::StrSplit(err, '\n', absl::SkipEmpty())) {
    google::protobuf::Struct s;
    auto status = google::protobuf::util::JsonStringToMessage(std::string(line), &s);
    EXPECT_TRUE(status.ok()) << "not a JSON line: " << line;
    out.push_back(std::move(s));
  }
  return out;
}

// The value after `prefix` in the first message that has it.
std::string FindInMessages(const std::vector<google::protobuf::Struct>& lines,
                           const std::string& prefix) {
  for (const auto& l : lines) {
    const std::string& m = l.fields().at("message").string_value();
    const size_t at = m.find(prefix);
    if (at != std::string::npos) return m.substr(at + prefix.size());
  }
  return "";
}

TEST(AdminE2eTest, RealBinaryWritesJsonLinesAndServesItsAdminEndpoint) {
  const std::string config = WriteConfig(absl::StrCat(
      "server: {listen: \"127.0.0.1:0\", drain_timeout: 5s}\n",
      "admin: {listen: \"127.0.0.1:0\"}\n", "log: {format: json}\n", "origin: {file: {root: \"",
      FANOUT_SOURCE_DIR, "/deploy/examples/config.d\"}}\n"));
  Subprocess p({FANOUTD_PATH, "--config=" + config});
  ASSERT_TRUE(p.WaitForStderr("listening on ", absl::Seconds(20))) << p.err();
  auto lines = JsonLines(p.err());
  const std::string admin = FindInMessages(lines, "admin endpoint on ");
  const std::string grpc_address = FindInMessages(lines, "fanoutd listening on ");
  ASSERT_FALSE(admin.empty()) << p.err();
  ASSERT_FALSE(grpc_address.empty()) << p.err();
  for (const auto& l : lines) {
    EXPECT_EQ(l.fields().at("level").string_value(), "info");
    EXPECT_FALSE(l.fields().at("time").string_value().empty());
  }

  auto client = client::Client::Connect(grpc_address);
  ASSERT_OK(client);
  ASSERT_OK((*client)->Get("flags/new-checkout"));
  auto metrics = HttpRequest(admin + "/metrics");
  ASSERT_OK(metrics);
  EXPECT_THAT(metrics->body,
              HasSubstr("fanout_requests_total{code=\"OK\",rpc=\"fanout.v1.Sidecar/Get\"} 1\n"));
  EXPECT_EQ(HttpRequest(admin + "/readyz")->status, 200);
  auto config_page = HttpRequest(admin + "/debug/config");
  ASSERT_OK(config_page);
  EXPECT_THAT(config_page->body, HasSubstr("format: json"));

  client->reset();  // an idle open connection holds the drain to its end
  p.Signal(SIGTERM);
  ASSERT_EQ(p.Wait(absl::Seconds(30)), 0) << p.err();
  lines = JsonLines(p.err());
  EXPECT_EQ(lines.back().fields().at("message").string_value(), "fanoutd stopped") << p.err();
  ::unlink(config.c_str());
}

TEST(AdminE2eTest, ExitsNamingAdminListenWhenTheConfiguredPortIsBusy) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string config = WriteConfig(absl::StrCat(
      "server: {listen: \"127.0.0.1:0\"}\nadmin: {listen: \"127.0.0.1:", ntohs(addr.sin_port),
      "\"}\norigin: {file: {root: \"", FANOUT_SOURCE_DIR, "/deploy/examples/config.d\"}}\n"));
  auto r = testing::RunProcess({FANOUTD_PATH, "--config=" + config});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("admin.listen: cannot listen on \"127.0.0.1:"));
  EXPECT_THAT(r.err, HasSubstr("Address already in use"));
  ::close(fd);
  ::unlink(config.c_str());
}

}  // namespace
}  // namespace fanout
