#include "cache/origins/grpc_origin.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "common/log.h"
#include "fanout/v1/sidecar.grpc.pb.h"
#include "fanout/v1/sidecar.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/eventually.h"
#include "tests/testing/fake_backend.h"
#include "tests/testing/fake_grpc_origin.h"
#include "tests/testing/manual_executor.h"
#include "tests/testing/status_matchers.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::Eventually;
using ::fanout::testing::StatusIs;

// Every log line the tests' code writes, kept (and still shown on stderr)
// so that tests can look for what was logged. Installed before any test
// runs a thread.
class LogCapture final : public LogSink {
 public:
  void Write(LogLevel level, absl::string_view line) override {
    (void)level;
    std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
    absl::MutexLock l(&mu_);
    lines_.emplace_back(line);
  }
  // How many lines containing `text` were logged.
  int Count(absl::string_view text) {
    absl::MutexLock l(&mu_);
    int n = 0;
    for (const std::string& line : lines_) n += absl::StrContains(line, text) ? 1 : 0;
    return n;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};
LogCapture* Logs() {
  static LogCapture* const capture = [] {
    auto* c = new LogCapture;
    SetLogSink(c);
    SetLogRateLimit(0);  // the tests count lines; the watch throttles its own
    return c;
  }();
  return capture;
}
class LogCaptureInstaller final : public ::testing::Environment {
 public:
  void SetUp() override { Logs(); }
};
::testing::Environment* const kLogCapture =
    ::testing::AddGlobalTestEnvironment(new LogCaptureInstaller);

// One callback-API gRPC server alive from the first test to the last. gRPC
// 1.51 tears a process-wide callback completion queue down when the last
// callback server or channel goes away, and servers or channels created
// after that can abort ("prior > 0", or a double free under ASan); these
// tests create and destroy several per test. Destroyed after the last test,
// so nothing leaks.
class GrpcCallbackAnchor final : public ::testing::Environment {
 public:
  void SetUp() override {
    auto backend = testing::FakeBackend::Start({});
    ASSERT_OK(backend);
    backend_ = *std::move(backend);
  }
  void TearDown() override { backend_.reset(); }

 private:
  std::unique_ptr<testing::FakeBackend> backend_;
};
::testing::Environment* const kGrpcCallbackAnchor =
    ::testing::AddGlobalTestEnvironment(new GrpcCallbackAnchor);

absl::StatusOr<OriginValue> FetchFrom(Origin& origin, absl::string_view key,
                                      absl::Duration timeout = absl::Seconds(10)) {
  absl::Notification done;
  absl::StatusOr<OriginValue> result;
  origin.Fetch("", key, {.deadline = absl::Now() + timeout, .cancel = {}},
               [&](absl::StatusOr<OriginValue> v) {
                 result = std::move(v);
                 done.Notify();
               });
  done.WaitForNotification();
  return result;
}

class GrpcOriginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = testing::FakeGrpcOrigin::Start();
    GrpcOriginOptions options;
    options.targets = {server_->address()};
    options.max_value_bytes = 64;
    origin_ = *NewGrpcOrigin(options);
  }

  absl::StatusOr<OriginValue> Fetch(absl::string_view key,
                                    absl::Duration timeout = absl::Seconds(10)) {
    return FetchFrom(*origin_, key, timeout);
  }

  std::unique_ptr<testing::FakeGrpcOrigin> server_;
  std::unique_ptr<Origin> origin_;
};

TEST_F(GrpcOriginTest, FetchReturnsValueAndVersion) {
  server_->Set("k", "v", 42);
  auto v = Fetch("k");
  ASSERT_OK(v);
  EXPECT_EQ(v->value, "v");
  EXPECT_EQ(v->version, 42);
}

TEST(GrpcOriginReconnectTest, OriginThatWasDownSinceStartIsAskedWithinSecondsOfComingUp) {
  // An address where nothing listens: the origin is down when the channel
  // is made (fanoutd restarted during an outage).
  std::string address;
  {
    auto gone = testing::FakeGrpcOrigin::Start();
    address = gone->address();
  }
  GrpcOriginOptions options;
  options.targets = {address};
  auto origin = NewGrpcOrigin(options);
  ASSERT_OK(origin);
  // Ten seconds of failed connects: gRPC's default backoff (1 s, × 1.6 per
  // attempt, up to 120 s) would wait about 6 s before its next attempt by
  // now; the origin's channel waits at most 1 s.
  const absl::Time outage_end = absl::Now() + absl::Seconds(10);
  while (absl::Now() < outage_end) {
    EXPECT_FALSE(FetchFrom(**origin, "k", absl::Milliseconds(200)).ok());
    absl::SleepFor(absl::Milliseconds(100));
  }
  auto server = testing::FakeGrpcOrigin::Start(address);
  server->Set("k", "back", 2);
  const absl::Time back = absl::Now();
  absl::StatusOr<OriginValue> v = absl::UnknownError("not asked");
  // Generous for a loaded machine, still under what the default would take.
  while (absl::Now() < back + absl::Milliseconds(4000)) {
    v = FetchFrom(**origin, "k", absl::Milliseconds(200));
    if (v.ok()) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_OK(v) << "not asked again within 4 s of the origin's return";
  EXPECT_EQ(v->value, "back");
}

TEST_F(GrpcOriginTest, FetchNotFoundWhenOriginSaysSo) {
  EXPECT_THAT(Fetch("absent"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(GrpcOriginTest, FetchUnavailableWhenOriginDown) {
  server_->SetDown(true);
  EXPECT_THAT(Fetch("k"), StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(GrpcOriginTest, FetchDeadlineExceededWhenSlow) {
  server_->Set("k", "v");
  server_->SetDelay(absl::Seconds(1));
  EXPECT_THAT(Fetch("k", absl::Milliseconds(100)), StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST_F(GrpcOriginTest, FetchEndsCancelledWhenItsTokenIsCancelled) {
  server_->Set("k", "v");
  server_->SetDelay(absl::Seconds(30));
  CancellationSource cancel;
  absl::Notification done;
  absl::StatusOr<OriginValue> result;
  origin_->Fetch("", "k", {.deadline = absl::Now() + absl::Seconds(60), .cancel = cancel.token()},
                 [&](absl::StatusOr<OriginValue> v) {
                   result = std::move(v);
                   done.Notify();
                 });
  cancel.Cancel();
  // Bounded by the 60 s deadline; cancellation ends it long before.
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kCancelled));
}

TEST_F(GrpcOriginTest, FetchWithAnAlreadyCancelledTokenNeverWaitsForTheOrigin) {
  server_->Set("k", "v");
  server_->SetDelay(absl::Seconds(30));
  CancellationSource cancel;
  cancel.Cancel();
  absl::Notification done;
  absl::StatusOr<OriginValue> result;
  origin_->Fetch("", "k", {.deadline = absl::Now() + absl::Seconds(60), .cancel = cancel.token()},
                 [&](absl::StatusOr<OriginValue> v) {
                   result = std::move(v);
                   done.Notify();
                 });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kCancelled));
}

TEST_F(GrpcOriginTest, FetchRefusesOversizedValue) {
  server_->Set("big", std::string(65, 'x'));
  EXPECT_THAT(Fetch("big"), StatusIs(absl::StatusCode::kFailedPrecondition,
                                     ::testing::HasSubstr("limits.max_value_bytes")));
}

TEST_F(GrpcOriginTest, FetchRefusesAValueOverTheChannelLimitNamingTheLimit) {
  // Far over the limit: the channel's receive limit refuses it before it is
  // decoded, with RESOURCE_EXHAUSTED, which is no outage.
  server_->Set("huge", std::string(64 << 10, 'x'));
  EXPECT_THAT(Fetch("huge"), StatusIs(absl::StatusCode::kFailedPrecondition,
                                      ::testing::HasSubstr("limits.max_value_bytes")));
  server_->Set("k", "v");
  EXPECT_OK(Fetch("k"));  // the channel is still good
}

// An origin answering fixed bytes to any method: a generic gRPC service
// registered for every method name, the Origin's included.
class RawAnswerTest : public ::testing::Test {
 protected:
  absl::StatusOr<OriginValue> FetchAnswering(const std::string& bytes) {
    testing::FakeBackendOptions options;
    options.name = bytes;  // the reply payload
    auto backend = testing::FakeBackend::Start(options);
    EXPECT_OK(backend);
    if (!backend.ok()) return backend.status();
    GrpcOriginOptions o;
    o.targets = {(*backend)->address()};
    auto origin = NewGrpcOrigin(o);
    EXPECT_OK(origin);
    if (!origin.ok()) return origin.status();
    return FetchFrom(**origin, "k");
  }
};

std::string Encode(const fanout::v1::FetchResponse& response) {
  return response.SerializeAsString();
}

TEST_F(RawAnswerTest, UndecodableBytesAreAnOriginFailureNotNotFound) {
  EXPECT_THAT(FetchAnswering("\xff\xff\xff\xff\xff"),
              StatusIs(absl::StatusCode::kInternal, ::testing::HasSubstr("FetchResponse")));
  // Starts as a valid "found: true", then breaks off: nothing of it is used.
  fanout::v1::FetchResponse found;
  found.set_found(true);
  found.set_value("partial");
  EXPECT_THAT(FetchAnswering(Encode(found) + "\x0a\x7f"), StatusIs(absl::StatusCode::kInternal));
}

TEST_F(RawAnswerTest, AnAnswerWithoutFoundIsAnOriginFailure) {
  EXPECT_THAT(FetchAnswering(""),
              StatusIs(absl::StatusCode::kInternal, ::testing::HasSubstr("found")));
  EXPECT_THAT(FetchAnswering("\x78\x01"),  // only an unknown field (15)
              StatusIs(absl::StatusCode::kInternal, ::testing::HasSubstr("found")));
  fanout::v1::FetchResponse no_found;
  no_found.set_value("v");
  no_found.set_version(3);
  EXPECT_THAT(FetchAnswering(Encode(no_found)), StatusIs(absl::StatusCode::kInternal));
}

TEST_F(RawAnswerTest, OnlyAnExplicitFoundFalseIsNotFound) {
  fanout::v1::FetchResponse missing;
  missing.set_found(false);
  ASSERT_EQ(Encode(missing), std::string("\x18\x00", 2));  // present on the wire
  EXPECT_THAT(FetchAnswering(Encode(missing)), StatusIs(absl::StatusCode::kNotFound));
  fanout::v1::FetchResponse found;
  found.set_found(true);
  found.set_value("v");
  found.set_version(7);
  found.set_ttl_ms(-5);
  auto v = FetchAnswering(Encode(found));
  ASSERT_OK(v);
  EXPECT_EQ(v->value, "v");
  EXPECT_EQ(v->version, 7);
  EXPECT_EQ(v->ttl, absl::ZeroDuration());
}

// A fanout.v1.Origin that accepts every Fetch and answers none until the
// call is cancelled (by the client, its deadline or shutdown); counts the
// calls and the cancellations it saw. Thread-safe.
class HungOrigin final : public fanout::v1::Origin::CallbackService {
 public:
  HungOrigin() {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    address_ = absl::StrCat("127.0.0.1:", port);
  }
  ~HungOrigin() override {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }

  const std::string& address() const { return address_; }
  int calls() const { return calls_.load(); }
  int cancelled() const { return cancelled_.load(); }

  grpc::ServerUnaryReactor* Fetch(grpc::CallbackServerContext*, const fanout::v1::FetchRequest*,
                                  fanout::v1::FetchResponse*) override {
    calls_.fetch_add(1);
    return new Reactor(this);
  }

 private:
  class Reactor final : public grpc::ServerUnaryReactor {
   public:
    explicit Reactor(HungOrigin* owner) : owner_(owner) {}
    void OnCancel() override {
      owner_->cancelled_.fetch_add(1);
      Finish(grpc::Status::CANCELLED);
    }
    void OnDone() override { delete this; }

   private:
    HungOrigin* const owner_;
  };

  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::atomic<int> calls_{0};
  std::atomic<int> cancelled_{0};
};

// An address where nothing listens any more.
std::string StoppedAddress() {
  auto gone = testing::FakeGrpcOrigin::Start();
  return gone->address();
}

// One fetch in flight; its answer is awaited with a generous bound.
class PendingFetch {
 public:
  PendingFetch(Origin& origin, absl::string_view key, absl::Time deadline,
               const CancellationToken& cancel = {}) {
    origin.Fetch("", key, {.deadline = deadline, .cancel = cancel},
                 [this](absl::StatusOr<OriginValue> v) {
                   result_ = std::move(v);
                   done_.Notify();
                 });
  }
  bool done() const { return done_.HasBeenNotified(); }
  absl::StatusOr<OriginValue> Wait() {
    if (!done_.WaitForNotificationWithTimeout(absl::Seconds(30))) {
      return absl::UnknownError("the fetch never ended");
    }
    return result_;
  }

 private:
  absl::Notification done_;
  absl::StatusOr<OriginValue> result_;
};

// Replicas under a manual executor whose clock starts at the real time (the
// attempts' gRPC deadlines come from it), so the tests move the attempt
// timeouts and hedges; the calls themselves are real.
class ReplicaTest : public ::testing::Test {
 protected:
  void SetUp() override { executor_.fake_clock().Set(absl::Now()); }

  std::unique_ptr<Origin> Make(std::vector<std::string> targets, ReplicaPolicy policy) {
    GrpcOriginOptions options;
    options.targets = std::move(targets);
    options.policy = policy;
    options.hedge_after = absl::Milliseconds(50);
    options.executor = &executor_;
    auto origin = NewGrpcOrigin(options);
    EXPECT_OK(origin);
    return origin.ok() ? *std::move(origin) : nullptr;
  }
  absl::Time In(absl::Duration d) { return executor_.clock()->Now() + d; }

  testing::ManualExecutor executor_;
};

TEST_F(ReplicaTest, FetchFallbackSkipsAStoppedReplica) {
  auto live = testing::FakeGrpcOrigin::Start();
  live->Set("k", "v", 3);
  auto origin = Make({StoppedAddress(), live->address()}, ReplicaPolicy::kFallback);
  PendingFetch fetch(*origin, "k", In(absl::Seconds(60)));
  auto v = fetch.Wait();
  ASSERT_OK(v);
  EXPECT_EQ(v->value, "v");
  EXPECT_EQ(v->version, 3);
  EXPECT_EQ(live->fetches(), 1);
}

TEST_F(ReplicaTest, FetchFallbackMovesOnFromAHungReplicaAfterItsShareOfTheDeadline) {
  HungOrigin hung;
  auto live = testing::FakeGrpcOrigin::Start();
  live->Set("k", "v");
  auto origin = Make({hung.address(), live->address()}, ReplicaPolicy::kFallback);
  // Two replicas, 60 s: each is given 30 s.
  PendingFetch fetch(*origin, "k", In(absl::Seconds(60)));
  ASSERT_TRUE(Eventually([&] { return hung.calls() == 1; }));
  executor_.AdvanceTime(absl::Seconds(29));
  EXPECT_FALSE(fetch.done());
  EXPECT_EQ(live->fetches(), 0);
  executor_.AdvanceTime(absl::Seconds(1));
  auto v = fetch.Wait();
  ASSERT_OK(v);
  EXPECT_EQ(v->value, "v");
  EXPECT_TRUE(Eventually([&] { return hung.cancelled() == 1; }));
}

TEST_F(ReplicaTest, FetchFallbackMovesOnFromAnUndecodableAnswer) {
  testing::FakeBackendOptions garbage;
  garbage.name = "\xff\xff\xff\xff\xff";  // the reply payload
  auto broken = testing::FakeBackend::Start(garbage);
  ASSERT_OK(broken);
  auto live = testing::FakeGrpcOrigin::Start();
  live->Set("k", "v");
  auto origin = Make({(*broken)->address(), live->address()}, ReplicaPolicy::kFallback);
  PendingFetch fetch(*origin, "k", In(absl::Seconds(60)));
  auto v = fetch.Wait();
  ASSERT_OK(v);
  EXPECT_EQ(v->value, "v");
}

TEST_F(ReplicaTest, FetchFallbackTakesNotFoundAsTheAnswer) {
  auto first = testing::FakeGrpcOrigin::Start();
  auto second = testing::FakeGrpcOrigin::Start();
  second->Set("k", "v");
  auto origin = Make({first->address(), second->address()}, ReplicaPolicy::kFallback);
  PendingFetch fetch(*origin, "k", In(absl::Seconds(60)));
  EXPECT_THAT(fetch.Wait(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(first->fetches(), 1);
  EXPECT_EQ(second->fetches(), 0);
}

TEST_F(ReplicaTest, FetchFirstSuccessAnswersFromTheFastReplicaAndCancelsTheSlow) {
  HungOrigin hung;
  auto live = testing::FakeGrpcOrigin::Start();
  live->Set("k", "fast");
  // Long enough for the call to the hung replica to reach it (one the
  // client cancels before it is sent is never seen there).
  live->SetDelay(absl::Milliseconds(300));
  auto origin = Make({hung.address(), live->address()}, ReplicaPolicy::kFirstSuccess);
  PendingFetch fetch(*origin, "k", In(absl::Seconds(60)));
  auto v = fetch.Wait();
  ASSERT_OK(v);
  EXPECT_EQ(v->value, "fast");
  EXPECT_TRUE(Eventually([&] { return hung.cancelled() == 1; }));
}

TEST_F(ReplicaTest, FetchFirstSuccessTakesTheFirstNotFoundAsTheAnswer) {
  HungOrigin hung;
  auto empty = testing::FakeGrpcOrigin::Start();
  empty->SetDelay(absl::Milliseconds(300));  // the hung replica's call reaches it first
  auto origin = Make({hung.address(), empty->address()}, ReplicaPolicy::kFirstSuccess);
  PendingFetch fetch(*origin, "k", In(absl::Seconds(60)));
  EXPECT_THAT(fetch.Wait(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_TRUE(Eventually([&] { return hung.cancelled() == 1; }));
}

TEST_F(ReplicaTest, FetchHedgedAsksTheSecondOnlyAfterHedgeAfter) {
  HungOrigin hung;
  auto live = testing::FakeGrpcOrigin::Start();
  live->Set("k", "hedge");
  auto origin = Make({hung.address(), live->address()}, ReplicaPolicy::kHedged);
  PendingFetch fetch(*origin, "k", In(absl::Seconds(60)));
  ASSERT_TRUE(Eventually([&] { return hung.calls() == 1; }));
  executor_.AdvanceTime(absl::Milliseconds(49));
  EXPECT_FALSE(fetch.done());
  EXPECT_EQ(live->fetches(), 0);
  executor_.AdvanceTime(absl::Milliseconds(1));
  auto v = fetch.Wait();
  ASSERT_OK(v);
  EXPECT_EQ(v->value, "hedge");
  EXPECT_EQ(live->fetches(), 1);
  EXPECT_TRUE(Eventually([&] { return hung.cancelled() == 1; }));
}

TEST_F(ReplicaTest, FetchUnavailableNamingEveryReplicaWhenAllFail) {
  auto down = testing::FakeGrpcOrigin::Start();
  down->SetDown(true);
  const std::string stopped = StoppedAddress();
  for (ReplicaPolicy policy :
       {ReplicaPolicy::kFallback, ReplicaPolicy::kFirstSuccess, ReplicaPolicy::kHedged}) {
    auto origin = Make({down->address(), stopped}, policy);
    PendingFetch fetch(*origin, "k", In(absl::Seconds(60)));
    auto v = fetch.Wait();
    EXPECT_THAT(v, StatusIs(absl::StatusCode::kUnavailable, ::testing::HasSubstr(down->address())))
        << ReplicaPolicyName(policy);
    EXPECT_THAT(v, StatusIs(absl::StatusCode::kUnavailable, ::testing::HasSubstr(stopped)))
        << ReplicaPolicyName(policy);
  }
}

TEST_F(ReplicaTest, FetchDeadlineExceededWhenEveryReplicaHangs) {
  HungOrigin a;
  HungOrigin b;
  auto origin = Make({a.address(), b.address()}, ReplicaPolicy::kFirstSuccess);
  PendingFetch fetch(*origin, "k", In(absl::Seconds(60)));
  ASSERT_TRUE(Eventually([&] { return a.calls() == 1 && b.calls() == 1; }));
  executor_.AdvanceTime(absl::Seconds(60));
  EXPECT_THAT(fetch.Wait(), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_TRUE(Eventually([&] { return a.cancelled() == 1 && b.cancelled() == 1; }));
}

TEST_F(ReplicaTest, FetchEndsCancelledWhenItsTokenIsCancelled) {
  HungOrigin a;
  HungOrigin b;
  auto origin = Make({a.address(), b.address()}, ReplicaPolicy::kFirstSuccess);
  CancellationSource cancel;
  PendingFetch fetch(*origin, "k", In(absl::Seconds(60)), cancel.token());
  ASSERT_TRUE(Eventually([&] { return a.calls() == 1 && b.calls() == 1; }));
  cancel.Cancel();
  EXPECT_THAT(fetch.Wait(), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_TRUE(Eventually([&] { return a.cancelled() == 1 && b.cancelled() == 1; }));
}

TEST_F(ReplicaTest, DestroyingTheOriginCancelsItsFetchesInFlight) {
  HungOrigin a;
  HungOrigin b;
  auto origin = Make({a.address(), b.address()}, ReplicaPolicy::kFallback);
  PendingFetch fetch(*origin, "k", In(absl::Seconds(60)));
  ASSERT_TRUE(Eventually([&] { return a.calls() == 1; }));
  origin.reset();
  // The destructor waited for the fetch to end.
  EXPECT_TRUE(fetch.done());
  EXPECT_THAT(fetch.Wait(), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(b.calls(), 0);
  EXPECT_TRUE(Eventually([&] { return a.cancelled() == 1; }));
}

TEST(NewGrpcOriginTest, RejectsSeveralTargetsWithoutAnExecutor) {
  GrpcOriginOptions options;
  options.targets = {"127.0.0.1:1", "127.0.0.1:2"};
  EXPECT_THAT(NewGrpcOrigin(options), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(NewGrpcOriginTest, RejectsAnEmptyTargetInTheListNamingIt) {
  testing::ManualExecutor executor;
  GrpcOriginOptions options;
  options.targets = {"127.0.0.1:1", ""};
  options.executor = &executor;
  EXPECT_THAT(NewGrpcOrigin(options), StatusIs(absl::StatusCode::kInvalidArgument,
                                               ::testing::HasSubstr("origin.grpc.target[1]")));
}

TEST(ReplicaPolicyTest, ParseReplicaPolicyNamesTheChoices) {
  EXPECT_EQ(*ParseReplicaPolicy("hedged"), ReplicaPolicy::kHedged);
  EXPECT_EQ(*ParseReplicaPolicy("first_success"), ReplicaPolicy::kFirstSuccess);
  EXPECT_EQ(*ParseReplicaPolicy("fallback"), ReplicaPolicy::kFallback);
  EXPECT_THAT(ParseReplicaPolicy("random"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("first_success")));
}

TEST(NewGrpcOriginTest, RejectsEmptyTarget) {
  EXPECT_THAT(NewGrpcOrigin({}), StatusIs(absl::StatusCode::kInvalidArgument,
                                          ::testing::HasSubstr("origin.grpc.target")));
}

// ---- WatchChanges ------------------------------------------------------------

fanout::v1::OriginChangeEvent Event(std::string ns, std::vector<std::string> keys,
                                    std::string prefix = "", std::string token = "",
                                    bool reset = false) {
  fanout::v1::OriginChangeEvent e;
  e.set_namespace_(std::move(ns));
  for (std::string& k : keys) e.add_keys(std::move(k));
  e.set_prefix(std::move(prefix));
  e.set_token(std::move(token));
  e.set_reset(reset);
  return e;
}

// What a watch reported, and whether any report overlapped another or came
// after Close (the watch's destructor returned). Thread-safe.
class ChangeLog {
 public:
  Origin::ChangeSink Sink() {
    return [this](OriginChange change) { Add(std::move(change)); };
  }
  void Add(OriginChange change) {
    if (in_sink_.fetch_add(1) != 0) overlaps_.fetch_add(1);
    {
      absl::MutexLock l(&mu_);
      if (closed_) ++after_close_;
      changes_.push_back(std::move(change));
    }
    in_sink_.fetch_sub(1);
  }
  void Close() {
    absl::MutexLock l(&mu_);
    closed_ = true;
  }
  size_t size() {
    absl::MutexLock l(&mu_);
    return changes_.size();
  }
  std::vector<OriginChange> changes() {
    absl::MutexLock l(&mu_);
    return changes_;
  }
  int after_close() {
    absl::MutexLock l(&mu_);
    return after_close_;
  }
  int overlaps() const { return overlaps_.load(); }

 private:
  std::atomic<int> in_sink_{0};
  std::atomic<int> overlaps_{0};
  absl::Mutex mu_;
  std::vector<OriginChange> changes_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  int after_close_ ABSL_GUARDED_BY(mu_) = 0;
};

// Real streams from fake origins; the reconnect timers on a manual executor,
// so that a test says when a pause is over.
class WatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    executor_.fake_clock().Set(absl::Now());
    server_ = testing::FakeGrpcOrigin::Start();
    server_->EnableWatch(true);
  }
  void TearDown() override {
    watch_.reset();
    log_.Close();
    EXPECT_EQ(log_.after_close(), 0);
    EXPECT_EQ(log_.overlaps(), 0);
  }

  void Watch(std::vector<std::string> targets) {
    GrpcOriginOptions options;
    options.targets = std::move(targets);
    options.max_value_bytes = 64;
    options.max_key_bytes = 16;
    options.max_namespace_bytes = 8;
    options.executor = &executor_;
    auto origin = NewGrpcOrigin(options);
    ASSERT_OK(origin);
    origin_ = *std::move(origin);
    auto watch = origin_->WatchChanges(log_.Sink());
    ASSERT_OK(watch);
    watch_ = *std::move(watch);
  }
  void Watch() { Watch({server_->address()}); }

  // Ends the watch (as the destructor of its owner does).
  void Unwatch() {
    watch_.reset();
    log_.Close();
  }

  // Waits for the reconnect timer, then moves the clock to it, and not
  // beyond: a timer the call it starts may set must not fire with it.
  bool Reconnect() {
    if (!Eventually([&] { return executor_.pending_timers() == 1; })) return false;
    executor_.AdvanceTime(Pause());
    return true;
  }
  // How long the pending reconnect timer waits from now.
  absl::Duration Pause() { return executor_.next_timer() - executor_.clock()->Now(); }

  testing::ManualExecutor executor_;
  std::unique_ptr<testing::FakeGrpcOrigin> server_;
  std::unique_ptr<Origin> origin_;
  ChangeLog log_;
  std::unique_ptr<OriginWatch> watch_;
};

TEST_F(WatchTest, WatchChangesReportsWhatTheOriginPushes) {
  Watch();
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  ASSERT_EQ(server_->Push(Event("ns", {"a", "b"}, "cfg/", "t1")), 1);
  server_->Push(Event("", {"c"}));
  ASSERT_TRUE(Eventually([&] { return log_.size() == 2; }));
  std::vector<OriginChange> changes = log_.changes();
  EXPECT_EQ(changes[0].ns, "ns");
  EXPECT_THAT(changes[0].keys, ::testing::ElementsAre("a", "b"));
  EXPECT_EQ(changes[0].prefix, "cfg/");
  EXPECT_FALSE(changes[0].all);
  EXPECT_EQ(changes[1].ns, "");
  EXPECT_THAT(changes[1].keys, ::testing::ElementsAre("c"));
  // Every namespace, from now on.
  std::vector<fanout::v1::OriginWatchRequest> requests = server_->watch_requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].namespaces_size(), 0);
  EXPECT_EQ(requests[0].resume_after(), "");
}

TEST_F(WatchTest, WatchChangesAnEventWithOnlyATokenReportsNothing) {
  Watch();
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  server_->Push(Event("", {}, "", "t7"));
  server_->Push(Event("", {"k"}));
  ASSERT_TRUE(Eventually([&] { return log_.size() >= 1; }));
  ASSERT_EQ(log_.size(), 1u);
  EXPECT_THAT(log_.changes()[0].keys, ::testing::ElementsAre("k"));
}

TEST_F(WatchTest, WatchChangesStopsWithoutRetryingWhenTheOriginHasNoWatch) {
  server_->EnableWatch(false);
  const int logged = Logs()->Count("no replica implements fanout.v1.Origin/Watch");
  Watch();
  ASSERT_TRUE(Eventually(
      [&] { return Logs()->Count("no replica implements fanout.v1.Origin/Watch") == logged + 1; }));
  // Nothing is scheduled: the origin is not asked again, however long.
  EXPECT_EQ(executor_.pending_timers(), 0u);
  executor_.AdvanceTime(absl::Minutes(10));
  EXPECT_EQ(server_->watch_calls(), 1);
  EXPECT_EQ(log_.size(), 0u);
}

TEST_F(WatchTest, WatchChangesAsksEachReplicaOnceWhenNoneHasWatch) {
  server_->EnableWatch(false);
  auto second = testing::FakeGrpcOrigin::Start();
  const int logged = Logs()->Count("no replica implements fanout.v1.Origin/Watch");
  Watch({server_->address(), second->address()});
  ASSERT_TRUE(Eventually(
      [&] { return Logs()->Count("no replica implements fanout.v1.Origin/Watch") == logged + 1; }));
  EXPECT_EQ(executor_.pending_timers(), 0u);
  executor_.AdvanceTime(absl::Minutes(10));
  EXPECT_EQ(server_->watch_calls(), 1);
  EXPECT_EQ(second->watch_calls(), 1);
}

TEST_F(WatchTest, WatchChangesReconnectsResumingAfterTheLastToken) {
  Watch();
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  server_->Push(Event("", {"a"}, "", "t1"));
  server_->Push(Event("", {"b"}, "", "t2"));
  server_->Push(Event("", {"c"}));  // no token: the position stays at t2
  ASSERT_TRUE(Eventually([&] { return log_.size() == 3; }));
  server_->EndWatches(grpc::Status(grpc::StatusCode::UNAVAILABLE, "restarting"));
  ASSERT_TRUE(Reconnect());
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  std::vector<fanout::v1::OriginWatchRequest> requests = server_->watch_requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].resume_after(), "t2");
  server_->Push(Event("", {"d"}, "", "t3"));
  ASSERT_TRUE(Eventually([&] { return log_.size() == 4; }));
  // With a token, nothing is lost: no change of every key.
  EXPECT_THAT(log_.changes()[3].keys, ::testing::ElementsAre("d"));
  // A stream the origin ends cleanly is called again too.
  server_->EndWatches();
  ASSERT_TRUE(Reconnect());
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  EXPECT_EQ(server_->watch_requests().back().resume_after(), "t3");
  for (const OriginChange& c : log_.changes()) EXPECT_FALSE(c.all);
}

TEST_F(WatchTest, WatchChangesWaitsLongerAfterEachFailedRound) {
  Watch();
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  server_->SetDown(true);
  server_->EndWatches(grpc::Status(grpc::StatusCode::UNAVAILABLE, "going down"));
  // Each pause is between half and all of 100ms, 200ms, 400ms, ... 5s.
  const absl::Duration ceilings[] = {absl::Milliseconds(100),  absl::Milliseconds(200),
                                     absl::Milliseconds(400),  absl::Milliseconds(800),
                                     absl::Milliseconds(1600), absl::Milliseconds(3200),
                                     absl::Seconds(5),         absl::Seconds(5)};
  int calls = 1;
  for (absl::Duration ceiling : ceilings) {
    ASSERT_TRUE(Eventually([&] { return executor_.pending_timers() == 1; }));
    const absl::Duration pause = Pause();
    EXPECT_GE(pause, ceiling / 2);
    EXPECT_LE(pause, ceiling);
    EXPECT_EQ(server_->watch_calls(), calls);
    executor_.AdvanceTime(pause);
    ++calls;
    ASSERT_TRUE(Eventually([&] { return server_->watch_calls() == calls; }));
  }
  // Back up: a stream that delivers resets the pause.
  server_->SetDown(false);
  ASSERT_TRUE(Reconnect());
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  server_->Push(Event("", {"a"}, "", "t1"));
  ASSERT_TRUE(Eventually([&] { return log_.size() == 1; }));
  server_->EndWatches(grpc::Status(grpc::StatusCode::UNAVAILABLE, "again"));
  ASSERT_TRUE(Eventually([&] { return executor_.pending_timers() == 1; }));
  EXPECT_GE(Pause(), absl::Milliseconds(50));
  EXPECT_LE(Pause(), absl::Milliseconds(100));
}

TEST_F(WatchTest, WatchChangesReportsAResetAsAChangeOfEveryKey) {
  Watch();
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  server_->Push(Event("ns", {}, "", "t9", /*reset=*/true));
  ASSERT_TRUE(Eventually([&] { return log_.size() == 1; }));
  OriginChange change = log_.changes()[0];
  EXPECT_TRUE(change.all);
  EXPECT_EQ(change.ns, "ns");
  EXPECT_TRUE(change.keys.empty());
  EXPECT_EQ(change.prefix, "");
  // The reset's token is where the next stream resumes.
  server_->EndWatches(grpc::Status(grpc::StatusCode::UNAVAILABLE, "x"));
  ASSERT_TRUE(Reconnect());
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  EXPECT_EQ(server_->watch_requests().back().resume_after(), "t9");
  EXPECT_EQ(log_.size(), 1u);
}

TEST_F(WatchTest, WatchChangesReportsEveryKeyWhenItReconnectsWithoutAToken) {
  Watch();
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  server_->Push(Event("ns", {"a"}));  // an origin without tokens
  ASSERT_TRUE(Eventually([&] { return log_.size() == 1; }));
  server_->EndWatches(grpc::Status(grpc::StatusCode::UNAVAILABLE, "x"));
  ASSERT_TRUE(Reconnect());
  // Once the new stream answers: whatever changed in between is unknown.
  ASSERT_TRUE(Eventually([&] { return log_.size() == 2; }));
  OriginChange change = log_.changes()[1];
  EXPECT_TRUE(change.all);
  EXPECT_EQ(change.ns, "");
  EXPECT_EQ(server_->watch_requests().back().resume_after(), "");
}

TEST_F(WatchTest, WatchChangesDoesNotReportEveryKeyWhenNoEventWasEverSent) {
  Watch();
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  server_->EndWatches(grpc::Status(grpc::StatusCode::UNAVAILABLE, "x"));
  ASSERT_TRUE(Reconnect());
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  server_->Push(Event("", {"k"}));
  ASSERT_TRUE(Eventually([&] { return log_.size() >= 1; }));
  ASSERT_EQ(log_.size(), 1u);
  EXPECT_FALSE(log_.changes()[0].all);
}

TEST_F(WatchTest, WatchChangesDropsEventsThatBreakTheLimitsNamingTheField) {
  Watch();
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  const int oversized = Logs()->Count("keys[1] is 17 bytes, over the limit of 16");
  const int bad_ns = Logs()->Count("namespace contains a NUL byte");
  const int bad_prefix = Logs()->Count("prefix is 17 bytes");
  const int bad_token = Logs()->Count("token is 4097 bytes");
  const int empty_key = Logs()->Count("keys[0] is empty");
  server_->Push(Event("", {"ok", std::string(17, 'k')}, "", "t-bad"));
  server_->Push(Event(std::string("n\0s", 3), {"a"}));
  server_->Push(Event("", {}, std::string(17, 'p')));
  server_->Push(Event("", {"a"}, "", std::string(4097, 't')));
  server_->Push(Event("", {""}));
  server_->Push(Event("", {std::string(16, 'k')}, std::string(16, 'p'), "t-ok"));
  ASSERT_TRUE(Eventually([&] { return log_.size() >= 1; }));
  ASSERT_EQ(log_.size(), 1u);
  EXPECT_THAT(log_.changes()[0].keys, ::testing::ElementsAre(std::string(16, 'k')));
  EXPECT_EQ(Logs()->Count("keys[1] is 17 bytes, over the limit of 16 (limits.max_key_bytes)"),
            oversized + 1);
  EXPECT_EQ(Logs()->Count("namespace contains a NUL byte"), bad_ns + 1);
  EXPECT_EQ(Logs()->Count("prefix is 17 bytes"), bad_prefix + 1);
  EXPECT_EQ(Logs()->Count("token is 4097 bytes"), bad_token + 1);
  EXPECT_EQ(Logs()->Count("keys[0] is empty"), empty_key + 1);
  // A dropped event does not move the position.
  server_->EndWatches(grpc::Status(grpc::StatusCode::UNAVAILABLE, "x"));
  ASSERT_TRUE(Reconnect());
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  EXPECT_EQ(server_->watch_requests().back().resume_after(), "t-ok");
}

TEST_F(WatchTest, WatchChangesDropsAnUndecodableEvent) {
  testing::FakeBackendOptions garbage;
  garbage.name = "\xff\xff\xff\xff\xff";  // one event of these bytes, then OK
  auto broken = testing::FakeBackend::Start(garbage);
  ASSERT_OK(broken);
  const int logged = Logs()->Count("not a fanout.v1.OriginChangeEvent");
  Watch({(*broken)->address()});
  ASSERT_TRUE(
      Eventually([&] { return Logs()->Count("not a fanout.v1.OriginChangeEvent") == logged + 1; }));
  // The stream ended at once, having given nothing: called again later.
  ASSERT_TRUE(Eventually([&] { return executor_.pending_timers() == 1; }));
  EXPECT_EQ(log_.size(), 0u);
}

TEST_F(WatchTest, WatchChangesTakesEmptyEventsFromAnOriginAnsweringAnythingForNothing) {
  // A server that answers every method with the same bytes, then OK: here
  // a FetchResponse{value: "good"}, which decodes as an event naming only a
  // namespace.
  fanout::v1::FetchResponse answer;
  answer.set_found(true);
  answer.set_value("good");
  testing::FakeBackendOptions anything;
  anything.name = answer.SerializeAsString();
  auto backend = testing::FakeBackend::Start(anything);
  ASSERT_OK(backend);
  Watch({(*backend)->address()});
  // Each stream ends at once having said nothing: the pauses grow, and no
  // reconnect reports every key as changed.
  ASSERT_TRUE(Reconnect());
  ASSERT_TRUE(Reconnect());
  ASSERT_TRUE(Eventually([&] { return executor_.pending_timers() == 1; }));
  EXPECT_GE(Pause(), absl::Milliseconds(200));
  EXPECT_EQ(log_.size(), 0u);
}

TEST_F(WatchTest, WatchChangesReportsEveryKeyAfterAnEventOverTheReceiveLimit) {
  Watch();
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  server_->Push(Event("", {"a"}, "", "t1"));
  ASSERT_TRUE(Eventually([&] { return log_.size() == 1; }));
  // max_value_bytes 64: the channel takes messages of up to 64 + 4096 bytes.
  std::vector<std::string> many(400, std::string(16, 'k'));
  server_->Push(Event("", many, "", "t2"));
  ASSERT_TRUE(Reconnect());
  ASSERT_TRUE(Eventually([&] { return log_.size() == 2; }));
  EXPECT_TRUE(log_.changes()[1].all);
  // That event's place is lost with it: from now on.
  EXPECT_EQ(server_->watch_requests().back().resume_after(), "");
}

TEST_F(WatchTest, WatchChangesMovesToTheNextReplicaAtOnceWhenOneCannotBeReached) {
  auto second = testing::FakeGrpcOrigin::Start();
  second->EnableWatch(true);
  Watch({StoppedAddress(), second->address()});
  ASSERT_TRUE(Eventually([&] { return second->watching() == 1; }));
  EXPECT_EQ(executor_.pending_timers(), 0u);  // no pause before the second
  second->Push(Event("", {"k"}));
  ASSERT_TRUE(Eventually([&] { return log_.size() == 1; }));
  EXPECT_THAT(log_.changes()[0].keys, ::testing::ElementsAre("k"));
}

TEST_F(WatchTest, WatchChangesMovesToTheNextReplicaWithTheLastToken) {
  auto second = testing::FakeGrpcOrigin::Start();
  second->EnableWatch(true);
  Watch({server_->address(), second->address()});
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  EXPECT_EQ(second->watch_calls(), 0);  // one replica at a time
  server_->Push(Event("", {"a"}, "", "t5"));
  ASSERT_TRUE(Eventually([&] { return log_.size() == 1; }));
  // The first goes down: asked again after a pause, it fails, and the
  // second is asked at once, from where the first was.
  server_->SetDown(true);
  server_->EndWatches(grpc::Status(grpc::StatusCode::UNAVAILABLE, "going down"));
  ASSERT_TRUE(Reconnect());
  ASSERT_TRUE(Eventually([&] { return second->watching() == 1; }));
  EXPECT_EQ(server_->watch_calls(), 2);
  EXPECT_EQ(second->watch_requests().back().resume_after(), "t5");
  second->Push(Event("", {"b"}, "", "t6"));
  ASSERT_TRUE(Eventually([&] { return log_.size() == 2; }));
  EXPECT_THAT(log_.changes()[1].keys, ::testing::ElementsAre("b"));
}

TEST_F(WatchTest, DestroyingTheWatchWhileConnectedCancelsTheStream) {
  Watch();
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  // Events keep coming while the watch goes away.
  std::atomic<bool> stop{false};
  std::thread pusher([&] {
    for (int i = 0; !stop.load() && i < 100000; ++i) server_->Push(Event("", {"k"}));
  });
  EXPECT_TRUE(Eventually([&] { return log_.size() > 10; }));
  Unwatch();
  const size_t reported = log_.size();
  EXPECT_TRUE(Eventually([&] { return server_->watching() == 0; }));
  stop.store(true);
  pusher.join();
  EXPECT_EQ(log_.size(), reported);
  EXPECT_EQ(executor_.pending_timers(), 0u);
  EXPECT_EQ(server_->watch_calls(), 1);
}

TEST_F(WatchTest, DestroyingTheWatchWhileWaitingToReconnectCancelsTheTimer) {
  Watch();
  ASSERT_TRUE(Eventually([&] { return server_->watching() == 1; }));
  server_->EndWatches(grpc::Status(grpc::StatusCode::UNAVAILABLE, "x"));
  ASSERT_TRUE(Eventually([&] { return executor_.pending_timers() == 1; }));
  Unwatch();
  EXPECT_EQ(executor_.pending_timers(), 0u);
  executor_.AdvanceTime(absl::Minutes(1));
  EXPECT_EQ(server_->watch_calls(), 1);
}

TEST_F(WatchTest, DestroyingTheWatchRightAfterItStartsReturns) {
  Watch();
  Unwatch();
  EXPECT_EQ(executor_.pending_timers(), 0u);
  EXPECT_TRUE(Eventually([&] { return server_->watching() == 0; }));
}

TEST(WatchChangesTest, NeedsAnExecutor) {
  auto server = testing::FakeGrpcOrigin::Start();
  GrpcOriginOptions options;
  options.targets = {server->address()};
  auto origin = NewGrpcOrigin(options);
  ASSERT_OK(origin);
  EXPECT_THAT((*origin)->WatchChanges([](OriginChange) {}),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::HasSubstr("executor")));
}

}  // namespace
}  // namespace fanout::cache
