#include "cache/origins/grpc_origin.h"

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_grpc_origin.h"
#include "tests/testing/status_matchers.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::StatusIs;

class GrpcOriginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = testing::FakeGrpcOrigin::Start();
    GrpcOriginOptions options;
    options.target = server_->address();
    options.max_value_bytes = 64;
    origin_ = *NewGrpcOrigin(options);
  }

  absl::StatusOr<OriginValue> Fetch(absl::string_view key,
                                    absl::Duration timeout = absl::Seconds(10)) {
    absl::Notification done;
    absl::StatusOr<OriginValue> result;
    origin_->Fetch("", key, {.deadline = absl::Now() + timeout, .cancel = {}},
                   [&](absl::StatusOr<OriginValue> v) {
                     result = std::move(v);
                     done.Notify();
                   });
    done.WaitForNotification();
    return result;
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

TEST(NewGrpcOriginTest, RejectsEmptyTarget) {
  EXPECT_THAT(NewGrpcOrigin({}), StatusIs(absl::StatusCode::kInvalidArgument,
                                          ::testing::HasSubstr("origin.grpc.target")));
}

}  // namespace
}  // namespace fanout::cache
