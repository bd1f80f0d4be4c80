// Route through fanoutd's Sidecar service over real gRPC, as a caller with
// gRPC's default limits (8 KiB of trailing metadata) sees it: failures with
// large payloads and large backend errors, oversized input.
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/client.h"
#include "common/executor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/router.h"
#include "server/config.h"
#include "server/fanoutd.h"
#include "tests/testing/fake_backend.h"
#include "tests/testing/route_responses.h"
#include "tests/testing/status_matchers.h"

namespace fanout::router {
namespace {

using ::fanout::testing::BranchOf;
using ::fanout::testing::CarriedRouteResponse;
using ::fanout::testing::StatusIs;
using ::fanout::v1::Branch;
using ::fanout::v1::RouteRequest;
using ::fanout::v1::RouteResponse;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

// A backend that answers every call UNAVAILABLE with `message`, after
// `delay` (an executor timer; no gRPC thread waits).
class ErrorBackend final : public grpc::CallbackGenericService {
 public:
  static std::unique_ptr<ErrorBackend> Start(std::string message, absl::Duration delay,
                                             Executor* executor) {
    auto backend =
        std::unique_ptr<ErrorBackend>(new ErrorBackend(std::move(message), delay, executor));
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterCallbackGenericService(backend.get());
    backend->server_ = builder.BuildAndStart();
    backend->address_ = absl::StrCat("127.0.0.1:", port);
    return backend;
  }
  ~ErrorBackend() override {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }

  const std::string& address() const { return address_; }

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext*) override {
    auto* reactor = new Reactor();
    auto call = reactor->call;
    const grpc::Status status(grpc::StatusCode::UNAVAILABLE, message_);
    executor_->ScheduleAfter(delay_, [call, status] { call->Finish(status); });
    return reactor;
  }

 private:
  // Finishes once: by the timer, or by a cancellation.
  struct Call {
    absl::Mutex mu;
    grpc::ServerGenericBidiReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
    void Finish(const grpc::Status& status) {
      absl::MutexLock l(&mu);
      if (reactor == nullptr) return;
      std::exchange(reactor, nullptr)->Finish(status);
    }
  };
  class Reactor final : public grpc::ServerGenericBidiReactor {
   public:
    Reactor() : call(std::make_shared<Call>()) {
      absl::MutexLock l(&call->mu);
      call->reactor = this;
    }
    void OnCancel() override { call->Finish(grpc::Status::CANCELLED); }
    void OnDone() override { delete this; }
    const std::shared_ptr<Call> call;
  };

  ErrorBackend(std::string message, absl::Duration delay, Executor* executor)
      : message_(std::move(message)), delay_(delay), executor_(executor) {}

  const std::string message_;
  const absl::Duration delay_;
  Executor* const executor_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

class RouteServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::HoldGrpcCallbackQueue();
    executor_ = ThreadPoolExecutor::Create(2, "backends");
    root_ = fs::temp_directory_path() / absl::StrCat("fanout_route_svc_", ::getpid());
    fs::create_directories(root_);
    config_.server.listen = "127.0.0.1:0";
    config_.origin.file_root = root_.string();
  }
  void TearDown() override {
    client_.reset();
    daemon_.reset();
    echoes_.clear();
    errors_.clear();
    executor_.reset();
    fs::remove_all(root_);
  }

  // Echoes the request payload at once.
  std::string AddEcho(const std::string& name) {
    testing::FakeBackendOptions options;
    options.name = name;
    options.echo = true;
    absl::StatusOr<std::unique_ptr<testing::FakeBackend>> backend =
        testing::FakeBackend::Start(options, executor_.get());
    EXPECT_OK(backend);
    echoes_.push_back(*std::move(backend));
    return echoes_.back()->address();
  }
  std::string AddError(std::string message, absl::Duration delay) {
    errors_.push_back(ErrorBackend::Start(std::move(message), delay, executor_.get()));
    return errors_.back()->address();
  }

  void StartDaemon(std::string name, Policy policy, std::vector<BackendConfig> backends) {
    RouteConfig route;
    route.name = std::move(name);
    route.policy = policy;
    route.method = "/any.Service/Call";
    route.timeout = absl::Seconds(20);
    route.backends = std::move(backends);
    config_.routes = {route};
    absl::StatusOr<std::unique_ptr<server::Fanoutd>> daemon = server::Fanoutd::Start(config_);
    ASSERT_OK(daemon);
    daemon_ = *std::move(daemon);
    client_ = *client::Client::Connect(daemon_->address(), {.timeout = absl::Seconds(30)});
  }

  fs::path root_;
  server::Config config_;
  std::unique_ptr<ThreadPoolExecutor> executor_;
  std::vector<std::unique_ptr<testing::FakeBackend>> echoes_;
  std::vector<std::unique_ptr<ErrorBackend>> errors_;
  std::unique_ptr<server::Fanoutd> daemon_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(RouteServiceTest, FailureWithLargePayloadsAndErrorsReachesCallerWithEveryBranch) {
  // Two branches answer 6 KiB at once; three fail later with 4 KiB errors.
  std::vector<BackendConfig> backends = {{AddEcho("echo-1"), "echo-1"},
                                         {AddEcho("echo-2"), "echo-2"}};
  for (int i = 0; i < 3; ++i) {
    const std::string name = absl::StrCat("broken-", i);
    backends.push_back(
        {AddError(absl::StrCat(name, ": ", std::string(4096, 'e')), absl::Milliseconds(100)),
         name});
  }
  StartDaemon("agg", Policy::kAll, backends);
  RouteRequest request;
  request.set_route("agg");
  request.set_payload(std::string(6144, 'p'));
  absl::StatusOr<RouteResponse> response = client_->Route(request);
  // Before: the trailer passed the caller's metadata limit, and the caller
  // got an opaque error without details.
  ASSERT_THAT(response, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("broken-")));
  EXPECT_LE(response.status().message().size(), kMaxRouteStatusMessageBytes);
  const RouteResponse carried = CarriedRouteResponse(response.status());
  ASSERT_EQ(carried.branches_size(), 5);
  for (const char* name : {"echo-1", "echo-2"}) {
    EXPECT_EQ(BranchOf(carried, name).outcome(), fanout::v1::OK) << name;
    EXPECT_EQ(BranchOf(carried, name).payload(), "") << name;
  }
  int errors = 0;
  for (const Branch& branch : carried.branches()) {
    if (branch.outcome() != fanout::v1::ERROR) continue;
    ++errors;
    EXPECT_EQ(branch.code(), static_cast<int>(absl::StatusCode::kUnavailable));
    EXPECT_THAT(branch.error(), HasSubstr(branch.backend()));
    EXPECT_LE(branch.error().size(), kMaxBranchErrorBytes);
  }
  EXPECT_GE(errors, 1);
}

TEST_F(RouteServiceTest, EveryBackendFailingWithLongErrorsGivesDecodableStatus) {
  std::vector<BackendConfig> backends;
  for (int i = 0; i < 4; ++i) {
    const std::string name = absl::StrCat("replica-", i);
    backends.push_back({AddError(absl::StrCat(name, " is overloaded ", std::string(4096, 'x')),
                                 absl::ZeroDuration()),
                        name});
  }
  StartDaemon("race", Policy::kFirstSuccess, backends);
  RouteRequest request;
  request.set_route("race");
  absl::StatusOr<RouteResponse> response = client_->Route(request);
  ASSERT_THAT(response,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("all 4 backends failed")));
  EXPECT_LE(response.status().message().size(), kMaxRouteStatusMessageBytes);
  const RouteResponse carried = CarriedRouteResponse(response.status());
  ASSERT_EQ(carried.branches_size(), 4);
  for (const Branch& branch : carried.branches()) {
    EXPECT_EQ(branch.outcome(), fanout::v1::ERROR) << branch.backend();
    EXPECT_THAT(branch.error(), HasSubstr(branch.backend() + " is overloaded"));
  }
}

TEST_F(RouteServiceTest, CostAboveCapIsInvalidArgumentNamingCost) {
  StartDaemon("gpu", Policy::kLeastLoaded, {{AddEcho("a"), "a"}});
  for (int64_t cost : {kMaxRouteCost + 1, std::numeric_limits<int64_t>::max()}) {
    RouteRequest request;
    request.set_route("gpu");
    request.set_cost(cost);
    EXPECT_THAT(client_->Route(request),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cost is")))
        << cost;
  }
  EXPECT_EQ(echoes_[0]->counters().calls, 0);
  RouteRequest largest;
  largest.set_route("gpu");
  largest.set_cost(kMaxRouteCost);
  EXPECT_OK(client_->Route(largest));
}

TEST_F(RouteServiceTest, LongUnknownRouteNameIsCutInTheMessage) {
  StartDaemon("gpu", Policy::kLeastLoaded, {{AddEcho("a"), "a"}});
  RouteRequest request;
  request.set_route(std::string(8192, 'r'));
  absl::StatusOr<RouteResponse> response = client_->Route(request);
  // Echoed whole, the name alone passes the caller's metadata limit.
  ASSERT_THAT(response, StatusIs(absl::StatusCode::kNotFound, HasSubstr("not found")));
  EXPECT_LE(response.status().message().size(), kMaxEchoedInputBytes + 32);
}

// The route keys as fanoutd reads them at start-up.
TEST(RouteYamlTest, MinRacesAboveWindowStopsStartUpNamingTheKey) {
  EXPECT_THAT(server::ParseConfig("routes:\n  m:\n    policy: adaptive\n    method: /a.B/C\n"
                                  "    backends: [\"127.0.0.1:1\"]\n"
                                  "    adaptive: {window: 10, min_races: 20}\n",
                                  "r.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("adaptive.min_races: 20 is more than adaptive.window (10)")));
}

TEST(RouteYamlTest, MaxEjectionPercentIsReadAndRangeChecked) {
  absl::StatusOr<server::Config> config = server::ParseConfig(
      "routes:\n  m:\n    method: /a.B/C\n    backends: [\"127.0.0.1:1\"]\n"
      "    ejection: {max_ejection_percent: 25}\n",
      "r.yaml");
  ASSERT_OK(config);
  EXPECT_EQ(config->routes[0].ejection.max_ejection_percent, 25);
  EXPECT_EQ(EjectionConfig{}.max_ejection_percent, 50);  // the documented default
  EXPECT_THAT(server::ParseConfig("routes:\n  m:\n    method: /a.B/C\n"
                                  "    backends: [\"127.0.0.1:1\"]\n"
                                  "    ejection: {max_ejection_percent: 101}\n",
                                  "r.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("routes.m.ejection.max_ejection_percent")));
}

}  // namespace
}  // namespace fanout::router
