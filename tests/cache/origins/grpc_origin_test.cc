#include "cache/origins/grpc_origin.h"

#include <atomic>

#include "absl/synchronization/notification.h"
#include "fanout/v1/sidecar.grpc.pb.h"
#include "fanout/v1/sidecar.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_backend.h"
#include "tests/testing/fake_grpc_origin.h"
#include "tests/testing/manual_executor.h"
#include "tests/testing/status_matchers.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::StatusIs;

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

// Polls `condition` for up to 20 s (generous for a loaded machine).
template <typename F>
bool Eventually(F condition) {
  const absl::Time end = absl::Now() + absl::Seconds(20);
  while (absl::Now() < end) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return condition();
}

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

}  // namespace
}  // namespace fanout::cache
