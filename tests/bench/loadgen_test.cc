#include "bench/loadgen.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/executor.h"
#include "fanout/v1/sidecar.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fanout::bench {
namespace {

using ::testing::HasSubstr;

BenchOptions CountBound(int64_t count) {
  BenchOptions o;
  o.target = "unused";
  o.duration = absl::ZeroDuration();
  o.warmup = absl::ZeroDuration();
  o.count = count;
  return o;
}

// Answers on executor threads with a code chosen by the call's index.
class PatternSender final : public CallSender {
 public:
  explicit PatternSender(std::vector<grpc::StatusCode> pattern)
      : pattern_(std::move(pattern)), executor_(ThreadPoolExecutor::Create(2, "answers")) {}

  void Send(int channel, Done done) override {
    const uint64_t n = sent_.fetch_add(1);
    const grpc::StatusCode code = pattern_[n % pattern_.size()];
    executor_->Schedule([done = std::move(done), code]() mutable {
      std::move(done)(CallOutcome{code, code == grpc::StatusCode::OK ? 1 : -1});
    });
  }
  uint64_t sent() const { return sent_.load(); }

 private:
  const std::vector<grpc::StatusCode> pattern_;
  std::atomic<uint64_t> sent_{0};
  std::unique_ptr<ThreadPoolExecutor> executor_;
};

// Answers inside Send, before it returns.
class InlineSender final : public CallSender {
 public:
  void Send(int channel, Done done) override {
    ++sent;
    std::move(done)(CallOutcome{grpc::StatusCode::OK, -1});
  }
  std::atomic<uint64_t> sent{0};
};

// Holds every call until the test answers it.
class HoldingSender final : public CallSender {
 public:
  void Send(int channel, Done done) override {
    absl::MutexLock l(&mu_);
    pending_.push_back(std::move(done));
    max_pending_ = std::max(max_pending_, pending_.size());
  }
  // Waits up to 10s for `n` calls to be pending.
  bool AwaitPending(size_t n) {
    absl::MutexLock l(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pending_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
  }
  // Answers the oldest pending call; false if none.
  bool AnswerOne() {
    Done done;
    {
      absl::MutexLock l(&mu_);
      if (pending_.empty()) return false;
      done = std::move(pending_.front());
      pending_.pop_front();
    }
    std::move(done)(CallOutcome{grpc::StatusCode::OK, -1});
    return true;
  }
  size_t max_pending() {
    absl::MutexLock l(&mu_);
    return max_pending_;
  }

 private:
  absl::Mutex mu_;
  std::deque<Done> pending_ ABSL_GUARDED_BY(mu_);
  size_t max_pending_ ABSL_GUARDED_BY(mu_) = 0;
};

// Takes `cost` of busy time in every Send, then answers inline: a
// generator that cannot keep up with its schedule.
class SlowSender final : public CallSender {
 public:
  explicit SlowSender(std::chrono::nanoseconds cost) : cost_(cost) {}
  void Send(int channel, Done done) override {
    const auto until = std::chrono::steady_clock::now() + cost_;
    while (std::chrono::steady_clock::now() < until) {
    }
    std::move(done)(CallOutcome{grpc::StatusCode::OK, -1});
  }

 private:
  const std::chrono::nanoseconds cost_;
};

TEST(StatusCountsTest, AddCountsEachCodeSeparately) {
  StatusCounts c;
  c.Add(grpc::StatusCode::OK, 5);
  c.Add(grpc::StatusCode::UNAVAILABLE, 2);
  c.Add(grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(c.ok(), 5u);
  EXPECT_EQ(c.errors(), 3u);
  EXPECT_EQ(c.total(), 8u);
  EXPECT_EQ(c.of(grpc::StatusCode::UNAVAILABLE), 2u);
  EXPECT_EQ(c.of(grpc::StatusCode::NOT_FOUND), 0u);
  const std::map<std::string, uint64_t> expected = {{"DEADLINE_EXCEEDED", 1}, {"UNAVAILABLE", 2}};
  EXPECT_EQ(c.ErrorsByName(), expected);
}

TEST(StatusCountsTest, AddCountsUndefinedCodesAsUnknown) {
  StatusCounts c;
  c.Add(static_cast<grpc::StatusCode>(99));
  EXPECT_EQ(c.of(grpc::StatusCode::UNKNOWN), 1u);
  EXPECT_EQ(c.errors(), 1u);
}

TEST(StatusCodeNameTest, StatusCodeNameNamesGrpcCodes) {
  EXPECT_EQ(StatusCodeName(0), "OK");
  EXPECT_EQ(StatusCodeName(5), "NOT_FOUND");
  EXPECT_EQ(StatusCodeName(14), "UNAVAILABLE");
  EXPECT_EQ(StatusCodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(StatusCodeName(42), "CODE_42");
}

TEST(RecorderTest, CollectKeepsErrorsOutOfLatencyAndThroughput) {
  Recorder r;
  r.Record(CallOutcome{grpc::StatusCode::OK, 1}, 1000, 2'000'000'000);
  r.Record(CallOutcome{grpc::StatusCode::UNAVAILABLE, -1}, 5, 2'000'000'000);
  r.Record(CallOutcome{grpc::StatusCode::OK, 1}, 3000, 3'000'000'000);
  Report report;
  r.Collect(/*window_start_ns=*/1'000'000'000, &report);
  EXPECT_EQ(report.codes.ok(), 2u);
  EXPECT_EQ(report.codes.of(grpc::StatusCode::UNAVAILABLE), 1u);
  EXPECT_EQ(report.latency.count(), 2u);
  EXPECT_EQ(report.latency.min(), 1000u);
  EXPECT_DOUBLE_EQ(report.elapsed_seconds, 2.0);
  EXPECT_DOUBLE_EQ(report.Throughput(), 1.0);
  EXPECT_EQ(report.served_by[1], 2u);
}

TEST(RecorderTest, CollectKeepsEveryCallOnlyWhenAsked) {
  Recorder keeping(/*keep_calls=*/true);
  keeping.Record(CallOutcome{grpc::StatusCode::OK, -1, 100}, 1000, 1'500'000'000);
  keeping.Record(CallOutcome{grpc::StatusCode::UNAVAILABLE, -1, 7}, 5, 1'200'000'000);
  Report report;
  keeping.Collect(/*window_start_ns=*/1'000'000'000, &report);
  ASSERT_EQ(report.calls.size(), 2u);
  EXPECT_EQ(report.calls[0].start_ns, 500'000'000 - 1000);
  EXPECT_EQ(report.calls[0].latency_ns, 1000);
  EXPECT_EQ(report.calls[0].code, 0);
  EXPECT_EQ(report.calls[0].payload_bytes, 100);
  EXPECT_EQ(report.calls[1].code, grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(report.calls[1].latency_ns, 5);
  EXPECT_EQ(FormatCalls(report),
            "# start_ns latency_ns code payload_bytes\n"
            "199999995 5 14 7\n"
            "499999000 1000 0 100\n");

  Recorder plain;
  plain.Record(CallOutcome{grpc::StatusCode::OK, -1, 100}, 1000, 1'500'000'000);
  Report none;
  plain.Collect(1'000'000'000, &none);
  EXPECT_TRUE(none.calls.empty());
}

TEST(RunLoadTest, RunLoadClosedCountsEveryCallByCode) {
  PatternSender sender({grpc::StatusCode::OK, grpc::StatusCode::OK, grpc::StatusCode::UNAVAILABLE,
                        grpc::StatusCode::DEADLINE_EXCEEDED});
  BenchOptions o = CountBound(400);
  o.concurrency = 8;
  const Report r = RunLoad(o, &sender);
  EXPECT_EQ(sender.sent(), 400u);
  EXPECT_EQ(r.codes.total(), 400u);
  EXPECT_EQ(r.codes.ok(), 200u);
  EXPECT_EQ(r.codes.of(grpc::StatusCode::UNAVAILABLE), 100u);
  EXPECT_EQ(r.codes.of(grpc::StatusCode::DEADLINE_EXCEEDED), 100u);
  EXPECT_EQ(r.latency.count(), 200u);
  EXPECT_EQ(r.served_by[1], 200u);
  EXPECT_GT(r.Throughput(), 0);
}

TEST(RunLoadTest, RunLoadClosedKeepsConcurrencyInFlight) {
  HoldingSender sender;
  BenchOptions o = CountBound(100);
  o.concurrency = 8;
  Report r;
  std::thread run([&] { r = RunLoad(o, &sender); });
  ASSERT_TRUE(sender.AwaitPending(8));
  int answered = 0;
  while (answered < 100) {
    if (sender.AnswerOne()) {
      ++answered;
    } else {
      ASSERT_TRUE(sender.AwaitPending(1));
    }
  }
  run.join();
  EXPECT_EQ(sender.max_pending(), 8u);
  EXPECT_EQ(r.codes.ok(), 100u);
}

TEST(RunLoadTest, RunLoadClosedSurvivesAnswersInsideSend) {
  // Without the hand-over between Send and its answer, each inline answer
  // would start the next call one stack frame deeper.
  InlineSender sender;
  BenchOptions o = CountBound(300000);
  o.concurrency = 2;
  const Report r = RunLoad(o, &sender);
  EXPECT_EQ(r.codes.ok(), 300000u);
  EXPECT_EQ(sender.sent.load(), 300000u);
}

TEST(RunLoadTest, RunLoadLeavesWarmupCallsUnmeasured) {
  InlineSender sender;
  BenchOptions o;
  o.target = "unused";
  o.concurrency = 1;
  o.warmup = absl::Milliseconds(30);
  o.duration = absl::Milliseconds(30);
  const Report r = RunLoad(o, &sender);
  EXPECT_GT(r.codes.total(), 0u);
  EXPECT_LT(r.codes.total(), sender.sent.load());
  // Calls answered during the warm-up are left out (above); the measured time
  // is not compared with the wall clock, which a loaded machine stretches.
  EXPECT_GT(r.elapsed_seconds, 0.0);
  EXPECT_LT(r.elapsed_seconds, 5.0);
}

TEST(RunLoadTest, RunLoadOpenMeasuresFromArrivalTimeWhenBehind) {
  // Arrivals every 10us on average, but every send takes 1ms: the k-th call
  // is sent about k ms after it was due, and that wait is latency.
  SlowSender sender(std::chrono::milliseconds(1));
  BenchOptions o = CountBound(20);
  o.mode = LoadMode::kOpen;
  o.rate = 100000;
  o.senders = 1;
  const Report r = RunLoad(o, &sender);
  EXPECT_EQ(r.codes.ok(), 20u);
  EXPECT_GE(r.latency.max(), 15'000'000u);  // each call's own service time is ~1ms
  EXPECT_GE(r.max_send_lag_ns, 15'000'000);
  EXPECT_GE(r.late_sends, 15u);
}

TEST(RunLoadTest, RunLoadOpenWaitsAtMaxInFlight) {
  HoldingSender sender;
  BenchOptions o = CountBound(60);
  o.mode = LoadMode::kOpen;
  o.rate = 1e6;  // every arrival is due at once
  o.senders = 3;
  o.max_in_flight = 4;
  Report r;
  std::thread run([&] { r = RunLoad(o, &sender); });
  ASSERT_TRUE(sender.AwaitPending(4));
  int answered = 0;
  while (answered < 60) {
    if (sender.AnswerOne()) {
      ++answered;
    } else {
      ASSERT_TRUE(sender.AwaitPending(1));
    }
  }
  run.join();
  EXPECT_EQ(sender.max_pending(), 4u);
  EXPECT_EQ(r.codes.ok(), 60u);
}

TEST(RunLoadTest, RunLoadOpenSendsAtTheOfferedRate) {
  InlineSender sender;
  BenchOptions o;
  o.target = "unused";
  o.mode = LoadMode::kOpen;
  o.rate = 2000;
  o.warmup = absl::ZeroDuration();
  o.duration = absl::Milliseconds(500);
  const Report r = RunLoad(o, &sender);
  // 1000 arrivals expected; a Poisson count has a standard deviation of ~32.
  EXPECT_NEAR(static_cast<double>(r.codes.ok()), 1000, 150);
}

// An Echo service that fails every `fail_every`-th call with `code`.
class FlakyEcho final : public fanout::v1::Echo::CallbackService {
 public:
  FlakyEcho(int fail_every, grpc::StatusCode code) : fail_every_(fail_every), code_(code) {}
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const fanout::v1::EchoRequest* request,
                                 fanout::v1::EchoResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (++calls % fail_every_ == 0) {
      reactor->Finish(grpc::Status(code_, "injected"));
    } else {
      response->set_payload(request->payload());
      reactor->Finish(grpc::Status::OK);
    }
    return reactor;
  }
  std::atomic<int> calls{0};

 private:
  const int fail_every_;
  const grpc::StatusCode code_;
};

// A Sidecar whose Get answers from L2 and whose BatchGet misses key "k0".
class FakeSidecar final : public fanout::v1::Sidecar::CallbackService {
 public:
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context,
                                const fanout::v1::GetRequest* request,
                                fanout::v1::GetResponse* response) override {
    response->set_value("v");
    response->set_served_by(fanout::v1::TIER_L2);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  grpc::ServerUnaryReactor* BatchGet(grpc::CallbackServerContext* context,
                                     const fanout::v1::BatchGetRequest* request,
                                     fanout::v1::BatchGetResponse* response) override {
    for (const std::string& key : request->keys()) {
      fanout::v1::BatchGetItem* item = response->add_items();
      item->set_key(key);
      if (key == "k0") {
        item->set_code(grpc::StatusCode::NOT_FOUND);
      } else {
        item->set_served_by(fanout::v1::TIER_L1);
      }
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

class GrpcSenderTest : public ::testing::Test {
 protected:
  void Start(grpc::Service* service) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    target_ = "127.0.0.1:" + std::to_string(port);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }

  std::unique_ptr<grpc::Server> server_;
  std::string target_;
};

TEST_F(GrpcSenderTest, RunLoadCountsServerErrorsByCode) {
  FlakyEcho echo(4, grpc::StatusCode::RESOURCE_EXHAUSTED);
  Start(&echo);
  BenchOptions o = CountBound(200);
  o.target = target_;
  o.rpc = Rpc::kEcho;
  o.channels = 3;
  o.payload_bytes = 16;
  absl::StatusOr<std::unique_ptr<CallSender>> sender = NewGrpcSender(o);
  ASSERT_TRUE(sender.ok()) << sender.status();
  const Report r = RunLoad(o, sender->get());
  EXPECT_EQ(echo.calls.load(), 200);
  EXPECT_EQ(r.codes.ok(), 150u);
  EXPECT_EQ(r.codes.of(grpc::StatusCode::RESOURCE_EXHAUSTED), 50u);
  EXPECT_EQ(r.latency.count(), 150u);
  EXPECT_THAT(FormatJson(r), HasSubstr("\"errors_by_code\":{\"RESOURCE_EXHAUSTED\":50}"));
}

TEST_F(GrpcSenderTest, RunLoadEchoDrawsPayloadsFromTheMix) {
  FlakyEcho echo(1000000, grpc::StatusCode::OK);
  Start(&echo);
  BenchOptions o = CountBound(400);
  o.target = target_;
  o.rpc = Rpc::kEcho;
  o.payload_mix = {{10, 3}, {2000, 1}};
  o.calls_out = "unused";  // keeps every call in the report
  absl::StatusOr<std::unique_ptr<CallSender>> sender = NewGrpcSender(o);
  ASSERT_TRUE(sender.ok()) << sender.status();
  const Report r = RunLoad(o, sender->get());
  ASSERT_EQ(r.calls.size(), 400u);
  int small = 0, large = 0;
  for (const CallRecord& c : r.calls) {
    EXPECT_EQ(c.code, 0);
    EXPECT_GE(c.start_ns, 0);
    small += c.payload_bytes == 10;
    large += c.payload_bytes == 2000;
  }
  EXPECT_EQ(small + large, 400);
  EXPECT_NEAR(large, 100, 40);
}

TEST_F(GrpcSenderTest, RunLoadGetRecordsTheAnsweringTier) {
  FakeSidecar sidecar;
  Start(&sidecar);
  BenchOptions o = CountBound(50);
  o.target = target_;
  absl::StatusOr<std::unique_ptr<CallSender>> sender = NewGrpcSender(o);
  ASSERT_TRUE(sender.ok()) << sender.status();
  const Report r = RunLoad(o, sender->get());
  EXPECT_EQ(r.codes.ok(), 50u);
  EXPECT_EQ(r.served_by[fanout::v1::TIER_L2], 50u);
  EXPECT_EQ(r.served_by[fanout::v1::TIER_L1], 0u);
}

TEST_F(GrpcSenderTest, RunLoadBatchGetCountsAFailedItemAsAnError) {
  FakeSidecar sidecar;
  Start(&sidecar);
  BenchOptions o = CountBound(100);
  o.target = target_;
  o.rpc = Rpc::kBatchGet;
  o.keys = 2;  // every batch of 2 keys has k0 with probability 3/4
  o.batch_size = 2;
  absl::StatusOr<std::unique_ptr<CallSender>> sender = NewGrpcSender(o);
  ASSERT_TRUE(sender.ok()) << sender.status();
  const Report r = RunLoad(o, sender->get());
  EXPECT_EQ(r.codes.total(), 100u);
  EXPECT_GT(r.codes.of(grpc::StatusCode::NOT_FOUND), 50u);
  EXPECT_GT(r.codes.ok(), 5u);
  EXPECT_EQ(r.codes.ok(), r.served_by[fanout::v1::TIER_L1]);
}

TEST(NewGrpcSenderTest, NewGrpcSenderFailsWithoutAServer) {
  BenchOptions o = CountBound(1);
  o.target = "127.0.0.1:1";
  absl::StatusOr<std::unique_ptr<CallSender>> sender = NewGrpcSender(o, absl::Milliseconds(200));
  EXPECT_EQ(sender.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(sender.status().message()), HasSubstr("--target"));
}

}  // namespace
}  // namespace fanout::bench
