// End to end: the real fanoutd binary over a gRPC origin (a fake, in this
// process) that pushes its changes through fanout.v1.Origin/Watch. A change
// pushed reaches the next Get without any Invalidate call; an origin without
// Watch is asked once.
#include <signal.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "tests/testing/eventually.h"
#include "tests/testing/fake_grpc_origin.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"

namespace fanout {
namespace {

using ::fanout::testing::Eventually;
using ::testing::HasSubstr;

// fanoutd on `origin` with values fresh for an hour: without a push, a
// changed value is not seen for that long.
std::string Yaml(const testing::FakeGrpcOrigin& origin) {
  return absl::StrCat(
      "cache:\n  ttl: 1h\norigin:\n  type: grpc\n  grpc:\n    target: ", origin.address(), "\n");
}

fanout::v1::OriginChangeEvent Change(const std::string& key, const std::string& token) {
  fanout::v1::OriginChangeEvent e;
  e.add_keys(key);
  e.set_token(token);
  return e;
}

class OriginWatchE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    origin_ = testing::FakeGrpcOrigin::Start();
    origin_->EnableWatch(true);
    origin_->Set("k", "v1");
    origin_->Set("j", "v1");
    daemon_ = std::make_unique<testing::FanoutdProcess>(FANOUTD_PATH, Yaml(*origin_));
    ASSERT_FALSE(daemon_->address().empty()) << daemon_->process().err();
    auto client = client::Client::Connect(daemon_->address(), {.timeout = absl::Seconds(10)});
    ASSERT_OK(client);
    client_ = *std::move(client);
    ASSERT_TRUE(Eventually([&] { return origin_->watching() == 1; })) << daemon_->process().err();
  }

  // The value a Get answers, or the error's text.
  std::string Get(const std::string& key) {
    auto r = client_->Get(key);
    return r.ok() ? r->value() : r.status().ToString();
  }

  std::unique_ptr<testing::FakeGrpcOrigin> origin_;
  std::unique_ptr<testing::FanoutdProcess> daemon_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(OriginWatchE2eTest, APushedChangeIsServedByTheNextGet) {
  ASSERT_EQ(Get("k"), "v1");
  ASSERT_EQ(Get("j"), "v1");
  origin_->Set("k", "v2");
  origin_->Set("j", "v2");
  ASSERT_EQ(Get("k"), "v1");  // cached for an hour
  const int fetches = origin_->fetches();
  ASSERT_EQ(origin_->Push(Change("k", "1")), 1);
  EXPECT_TRUE(Eventually([&] { return Get("k") == "v2"; })) << daemon_->process().err();
  EXPECT_EQ(origin_->fetches(), fetches + 1);
  EXPECT_EQ(Get("j"), "v1");  // not named: still cached
  EXPECT_THAT(daemon_->process().err(), HasSubstr("watching the origin's changes"));
}

TEST_F(OriginWatchE2eTest, AResetIsServedByTheNextGetOfAnyKey) {
  ASSERT_EQ(Get("k"), "v1");
  ASSERT_EQ(Get("j"), "v1");
  origin_->Set("k", "v2");
  origin_->Set("j", "v2");
  fanout::v1::OriginChangeEvent reset;
  reset.set_reset(true);
  reset.set_token("7");
  ASSERT_EQ(origin_->Push(reset), 1);
  EXPECT_TRUE(Eventually([&] { return Get("k") == "v2"; })) << daemon_->process().err();
  EXPECT_EQ(Get("j"), "v2");
  EXPECT_THAT(daemon_->process().err(), HasSubstr("the origin cannot say what changed"));
}

TEST_F(OriginWatchE2eTest, AfterTheOriginRestartsTheWatchResumesAfterTheLastToken) {
  ASSERT_EQ(Get("k"), "v1");
  origin_->Push(Change("unrelated", "41"));
  origin_->EndWatches(grpc::Status(grpc::StatusCode::UNAVAILABLE, "restarting"));
  ASSERT_TRUE(Eventually([&] { return origin_->watch_calls() == 2 && origin_->watching() == 1; }))
      << daemon_->process().err();
  EXPECT_EQ(origin_->watch_requests().back().resume_after(), "41");
  origin_->Set("k", "v2");
  origin_->Push(Change("k", "42"));
  EXPECT_TRUE(Eventually([&] { return Get("k") == "v2"; })) << daemon_->process().err();
}

TEST_F(OriginWatchE2eTest, StoppingWithTheWatchOpenExitsZero) {
  ASSERT_EQ(Get("k"), "v1");
  daemon_->process().Signal(SIGINT);  // no shutdown_delay
  std::optional<int> code = daemon_->process().Wait(absl::Seconds(30));
  ASSERT_TRUE(code.has_value()) << "fanoutd did not exit";
  EXPECT_EQ(*code, 0) << daemon_->process().err();
  EXPECT_TRUE(Eventually([&] { return origin_->watching() == 0; }));
}

TEST(OriginWithoutWatchE2eTest, IsAskedOnceAndValuesLiveUntilTheirTtl) {
  auto origin = testing::FakeGrpcOrigin::Start();  // answers Watch UNIMPLEMENTED
  origin->Set("k", "v1");
  testing::FanoutdProcess d(FANOUTD_PATH, Yaml(*origin));
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  EXPECT_TRUE(
      d.process().WaitForStderr("no replica implements fanout.v1.Origin/Watch", absl::Seconds(20)))
      << d.process().err();
  auto client = client::Client::Connect(d.address(), {.timeout = absl::Seconds(10)});
  ASSERT_OK(client);
  auto r = (*client)->Get("k");
  ASSERT_OK(r);
  EXPECT_EQ(r->value(), "v1");
  EXPECT_EQ(origin->watch_calls(), 1);
}

}  // namespace
}  // namespace fanout
