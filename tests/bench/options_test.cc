#include "bench/options.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fanout::bench {
namespace {

using ::testing::HasSubstr;

absl::Status ErrorOf(const std::vector<std::string>& args) { return ParseBenchArgs(args).status(); }

TEST(ParseBenchArgsTest, ParseBenchArgsTargetOnlyGivesDefaults) {
  absl::StatusOr<BenchOptions> o = ParseBenchArgs({"--target=127.0.0.1:7070"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->target, "127.0.0.1:7070");
  EXPECT_EQ(o->rpc, Rpc::kGet);
  EXPECT_EQ(o->mode, LoadMode::kClosed);
  EXPECT_EQ(o->concurrency, 16);
  EXPECT_EQ(o->duration, absl::Seconds(10));
  EXPECT_EQ(o->channels, 1);
  EXPECT_FALSE(o->json);
}

TEST(ParseBenchArgsTest, ParseBenchArgsAcceptsEqualsAndSpaceForms) {
  absl::StatusOr<BenchOptions> o = ParseBenchArgs(
      {"--target",          "h:1",   "--rpc=batchget", "--concurrency", "64", "--duration=500ms",
       "--warmup",          "0",     "--channels=4",   "--keys",        "50", "--zipf=0.99",
       "--batch_size",      "5",     "--count=1000",   "--seed",        "9",  "--namespace=ns",
       "--key_prefix=key-", "--json"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->target, "h:1");
  EXPECT_EQ(o->rpc, Rpc::kBatchGet);
  EXPECT_EQ(o->concurrency, 64);
  EXPECT_EQ(o->duration, absl::Milliseconds(500));
  EXPECT_EQ(o->warmup, absl::ZeroDuration());
  EXPECT_EQ(o->channels, 4);
  EXPECT_EQ(o->keys, 50);
  EXPECT_DOUBLE_EQ(o->zipf, 0.99);
  EXPECT_EQ(o->batch_size, 5);
  EXPECT_EQ(o->count, 1000);
  EXPECT_EQ(o->seed, 9u);
  EXPECT_EQ(o->ns, "ns");
  EXPECT_EQ(o->key_prefix, "key-");
  EXPECT_TRUE(o->json);
}

TEST(ParseBenchArgsTest, ParseBenchArgsOpenLoopTakesRate) {
  absl::StatusOr<BenchOptions> o = ParseBenchArgs(
      {"--target=h:1", "--mode=open", "--rate=2500.5", "--max_in_flight=7", "--senders=3"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->mode, LoadMode::kOpen);
  EXPECT_DOUBLE_EQ(o->rate, 2500.5);
  EXPECT_EQ(o->max_in_flight, 7);
  EXPECT_EQ(o->senders, 3);
}

TEST(ParseBenchArgsTest, ParseBenchArgsRouteAndEcho) {
  absl::StatusOr<BenchOptions> route = ParseBenchArgs(
      {"--target=h:1", "--rpc=route", "--route=llm", "--payload_bytes=512", "--cost=30"});
  ASSERT_TRUE(route.ok()) << route.status();
  EXPECT_EQ(route->rpc, Rpc::kRoute);
  EXPECT_EQ(route->route, "llm");
  EXPECT_EQ(route->payload_bytes, 512);
  EXPECT_EQ(route->cost, 30);
  absl::StatusOr<BenchOptions> echo = ParseBenchArgs({"--target=h:1", "--rpc=echo"});
  ASSERT_TRUE(echo.ok()) << echo.status();
  EXPECT_EQ(echo->rpc, Rpc::kEcho);
}

TEST(ParseBenchArgsTest, ParseBenchArgsPayloadMixAndCallsOut) {
  absl::StatusOr<BenchOptions> o =
      ParseBenchArgs({"--target=h:1", "--rpc=route", "--route=llm",
                      "--payload_mix=128:0.5,14000:0.25,38000", "--calls_out=/tmp/c.txt"});
  ASSERT_TRUE(o.ok()) << o.status();
  ASSERT_EQ(o->payload_mix.size(), 3u);
  EXPECT_EQ(o->payload_mix[0].bytes, 128);
  EXPECT_DOUBLE_EQ(o->payload_mix[0].weight, 0.5);
  EXPECT_EQ(o->payload_mix[1].bytes, 14000);
  EXPECT_DOUBLE_EQ(o->payload_mix[1].weight, 0.25);
  EXPECT_EQ(o->payload_mix[2].bytes, 38000);
  EXPECT_DOUBLE_EQ(o->payload_mix[2].weight, 1.0);
  EXPECT_EQ(o->calls_out, "/tmp/c.txt");
  EXPECT_TRUE(ParseBenchArgs({"--target=h:1", "--rpc=echo", "--payload_mix=1,2"}).ok());
}

TEST(ParseBenchArgsTest, ParseBenchArgsBoolFlagTakesExplicitValue) {
  absl::StatusOr<BenchOptions> o = ParseBenchArgs({"--json", "--target=h:1", "--json=false"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(o->json);
  EXPECT_THAT(ErrorOf({"--target=h:1", "--json=maybe"}).message(), HasSubstr("--json"));
}

TEST(ParseBenchArgsTest, ParseBenchArgsHelpStopsBeforeValidation) {
  absl::StatusOr<BenchOptions> o = ParseBenchArgs({"--help"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->help);
}

TEST(ParseBenchArgsTest, ParseBenchArgsErrorsNameTheBadFlag) {
  struct Case {
    std::vector<std::string> args;
    std::string names;
  };
  const std::vector<Case> cases = {
      {{"--target=h:1", "--bogus=1"}, "--bogus"},
      {{"--rpc=get"}, "--target"},
      {{"--target=h:1", "--rpc=put"}, "--rpc"},
      {{"--target=h:1", "--mode=half"}, "--mode"},
      {{"--target=h:1", "--duration=10"}, "--duration"},
      {{"--target=h:1", "--warmup=-1s"}, "--warmup"},
      {{"--target=h:1", "--concurrency=0"}, "--concurrency"},
      {{"--target=h:1", "--concurrency=many"}, "--concurrency"},
      {{"--target=h:1", "--channels=0"}, "--channels"},
      {{"--target=h:1", "--count=-5"}, "--count"},
      {{"--target=h:1", "--zipf=-1"}, "--zipf"},
      {{"--target=h:1", "--keys"}, "--keys"},
      {{"--target=h:1", "--rate=100"}, "--rate"},
      {{"--target=h:1", "--max_in_flight=100"}, "--max_in_flight"},
      {{"--target=h:1", "--senders=2"}, "--senders"},
      {{"--target=h:1", "--mode=open", "--rate=10", "--senders=0"}, "--senders"},
      {{"--target=h:1", "--mode=open"}, "--rate"},
      {{"--target=h:1", "--mode=open", "--rate=10", "--concurrency=3"}, "--concurrency"},
      {{"--target=h:1", "--rpc=route"}, "--route"},
      {{"--target=h:1", "--route=r"}, "--route"},
      {{"--target=h:1", "--batch_size=3"}, "--batch_size"},
      {{"--target=h:1", "--rpc=batchget", "--keys=2", "--batch_size=3"}, "--batch_size"},
      {{"--target=h:1", "--duration=0"}, "--duration"},
      {{"--target=h:1", "stray"}, "stray"},
      {{"--target=h:1", "--rpc=echo", "--payload_mix="}, "--payload_mix"},
      {{"--target=h:1", "--rpc=echo", "--payload_mix=10:0"}, "--payload_mix"},
      {{"--target=h:1", "--rpc=echo", "--payload_mix=10:x"}, "--payload_mix"},
      {{"--target=h:1", "--rpc=echo", "--payload_mix=-3:1"}, "--payload_mix"},
      {{"--target=h:1", "--rpc=echo", "--payload_mix=10,,20"}, "--payload_mix"},
      {{"--target=h:1", "--payload_mix=10:1"}, "--payload_mix"},
      {{"--target=h:1", "--rpc=echo", "--payload_mix=10", "--payload_bytes=3"}, "--payload_mix"},
  };
  for (const Case& c : cases) {
    const absl::Status s = ErrorOf(c.args);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.names;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.names));
  }
}

}  // namespace
}  // namespace fanout::bench
