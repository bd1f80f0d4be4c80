// The fake backend's own contract, over real gRPC generic calls.
#include "tests/testing/fake_backend.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/downstream.h"
#include "tests/testing/status_matchers.h"

namespace fanout::testing {
namespace {

using ::fanout::router::Downstream;
using ::fanout::router::DownstreamCall;
using ::fanout::router::NewGrpcDownstream;

struct Answer {
  absl::StatusOr<std::string> result = absl::UnknownError("no answer");
  absl::Time at;
};

class FakeBackendTest : public ::testing::Test {
 protected:
  // Downstream channels die in completion callbacks once a test has dropped
  // them: gRPC 1.51 aborts then (see HoldGrpcCallbackQueue).
  static void SetUpTestSuite() { HoldGrpcCallbackQueue(); }

  std::unique_ptr<FakeBackend> Serve(FakeBackendOptions options) {
    absl::StatusOr<std::unique_ptr<FakeBackend>> backend = FakeBackend::Start(std::move(options));
    EXPECT_OK(backend);
    absl::StatusOr<std::shared_ptr<Downstream>> downstream =
        NewGrpcDownstream((*backend)->address());
    EXPECT_OK(downstream);
    downstream_ = *std::move(downstream);
    return *std::move(backend);
  }

  // Sends `count` calls at once and waits for every answer.
  std::vector<Answer> CallAll(int count, std::string payload = "", int64_t cost = 0,
                              CancellationToken token = {}) {
    std::vector<Answer> answers(count);
    absl::BlockingCounter pending(count);
    auto bytes = std::make_shared<const std::string>(std::move(payload));
    for (int i = 0; i < count; ++i) {
      downstream_->Call(
          DownstreamCall{"/any.Service/Any", bytes, cost, absl::Now() + absl::Seconds(20), token},
          [&answers, &pending, i](absl::StatusOr<std::string> result) {
            answers[i].result = std::move(result);
            answers[i].at = absl::Now();
            pending.DecrementCount();
          });
    }
    pending.Wait();
    return answers;
  }

  std::shared_ptr<Downstream> downstream_;
};

TEST(FakeBackendCostTest, HeaderWinsOverPayloadSize) {
  EXPECT_EQ(FakeBackendCost("250", 4000), 250);
  EXPECT_EQ(FakeBackendCost("", 4000), 1000);
  EXPECT_EQ(FakeBackendCost("junk", 3), 1);
  EXPECT_EQ(FakeBackendCost("0", 400), 100);
}

TEST(FakeBackendServiceTimeTest, AddsTermsAndScalesByBothJitters) {
  const FakeBackendOptions o{.delay = absl::Milliseconds(10),
                             .delay_per_kb = absl::Milliseconds(2),
                             .delay_per_cost = absl::Milliseconds(1)};
  EXPECT_EQ(FakeBackendServiceTime(o, 2048, 5, 0.7), absl::Milliseconds(19));
  FakeBackendOptions relative = o;
  relative.jitter_ratio = 0.2;
  EXPECT_EQ(FakeBackendServiceTime(relative, 2048, 5, 1.0), absl::Milliseconds(19) * 1.2);
  EXPECT_EQ(FakeBackendServiceTime(relative, 2048, 5, -0.5), absl::Milliseconds(19) * 0.9);
  FakeBackendOptions absolute = o;
  absolute.jitter = absl::Milliseconds(4);
  EXPECT_EQ(FakeBackendServiceTime(absolute, 2048, 5, -0.5), absl::Milliseconds(17));
  absolute.jitter = absl::Milliseconds(40);
  EXPECT_EQ(FakeBackendServiceTime(absolute, 2048, 5, -1), absl::ZeroDuration());
}

TEST(FakeBackendCountersTest, ParseCountersReadsFormatCounters) {
  const FakeBackendCounters c{
      .calls = 9, .ok = 5, .failed = 1, .cancelled = 2, .in_flight = 1, .queued = 0};
  absl::StatusOr<FakeBackendCounters> parsed = ParseCounters(FormatCounters(c) + "\n");
  ASSERT_OK(parsed);
  EXPECT_EQ(parsed->calls, 9);
  EXPECT_EQ(parsed->ok, 5);
  EXPECT_EQ(parsed->failed, 1);
  EXPECT_EQ(parsed->cancelled, 2);
  EXPECT_EQ(parsed->in_flight, 1);
  EXPECT_THAT(ParseCounters("calls=1 ok=x"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseCounters("calls=1 ok=1"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(FakeBackendTest, ReadFakeBackendCountersAnswersOverGrpc) {
  std::unique_ptr<FakeBackend> backend = Serve({.fail_prob = 1.0});
  CallAll(2);
  absl::StatusOr<FakeBackendCounters> read = ReadFakeBackendCounters(backend->address());
  ASSERT_OK(read);
  EXPECT_EQ(read->calls, 2);  // the stats call itself is not counted
  EXPECT_EQ(read->failed, 2);
  EXPECT_EQ(read->in_flight, 0);
  EXPECT_THAT(ReadFakeBackendCounters("127.0.0.1:1", absl::Milliseconds(300)),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(FakeBackendTest, AnswersAnyMethodWithItsNameOrEcho) {
  std::unique_ptr<FakeBackend> named = Serve({.name = "cache-2"});
  std::vector<Answer> answers = CallAll(1, "ping");
  ASSERT_OK(answers[0].result);
  EXPECT_EQ(*answers[0].result, "cache-2");
  std::unique_ptr<FakeBackend> echo = Serve({.echo = true});
  answers = CallAll(1, "ping");
  ASSERT_OK(answers[0].result);
  EXPECT_EQ(*answers[0].result, "ping");
}

TEST_F(FakeBackendTest, FailProbabilityOneAlwaysFailsUnavailable) {
  std::unique_ptr<FakeBackend> backend = Serve({.fail_prob = 1.0});
  std::vector<Answer> answers = CallAll(3);
  for (const Answer& answer : answers) {
    EXPECT_THAT(answer.result, StatusIs(absl::StatusCode::kUnavailable));
  }
  EXPECT_EQ(backend->counters().failed, 3);
}

TEST_F(FakeBackendTest, CapacityServesKAtOnceAndQueuesTheRest) {
  std::unique_ptr<FakeBackend> backend = Serve({.delay = absl::Milliseconds(200), .capacity = 1});
  const absl::Time start = absl::Now();
  std::vector<Answer> answers = CallAll(3);
  std::vector<absl::Duration> latencies;
  for (const Answer& answer : answers) {
    ASSERT_OK(answer.result);
    latencies.push_back(answer.at - start);
  }
  std::sort(latencies.begin(), latencies.end());
  // One at a time: about 200, 400 and 600 ms; unlimited would be 200 each.
  EXPECT_GE(latencies[1], absl::Milliseconds(400));
  EXPECT_GE(latencies[2], absl::Milliseconds(600));
  EXPECT_EQ(backend->counters().ok, 3);
}

TEST_F(FakeBackendTest, DelayPerCostUsesCostMetadata) {
  std::unique_ptr<FakeBackend> backend = Serve({.delay_per_cost = absl::Milliseconds(1)});
  const absl::Time start = absl::Now();
  std::vector<Answer> answers = CallAll(1, "tiny", /*cost=*/300);
  ASSERT_OK(answers[0].result);
  EXPECT_GE(answers[0].at - start, absl::Milliseconds(300));
}

TEST_F(FakeBackendTest, CountsCancellationsOfQueuedAndServingCalls) {
  std::unique_ptr<FakeBackend> backend = Serve({.delay = absl::Seconds(5), .capacity = 1});
  CancellationSource caller;
  std::vector<Answer> answers(2);
  absl::BlockingCounter pending(2);
  for (int i = 0; i < 2; ++i) {
    downstream_->Call(DownstreamCall{"/any.Service/Any", nullptr, 0,
                                     absl::Now() + absl::Seconds(20), caller.token()},
                      [&answers, &pending, i](absl::StatusOr<std::string> result) {
                        answers[i].result = std::move(result);
                        pending.DecrementCount();
                      });
  }
  ASSERT_TRUE(backend->WaitFor(
      [](const FakeBackendCounters& c) { return c.in_flight == 2 && c.queued == 1; }));
  caller.Cancel();
  pending.Wait();
  for (const Answer& answer : answers) {
    EXPECT_THAT(answer.result, StatusIs(absl::StatusCode::kCancelled));
  }
  EXPECT_TRUE(backend->WaitFor([](const FakeBackendCounters& c) {
    return c.cancelled == 2 && c.in_flight == 0 && c.queued == 0;
  }));
}

}  // namespace
}  // namespace fanout::testing
