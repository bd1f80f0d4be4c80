#include "server/grpc_status.h"

#include <string>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fanout::server {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(ToGrpcStatusTest, KeepsCodeAndShortMessage) {
  grpc::Status s = ToGrpcStatus(absl::NotFoundError("route 'llm' not found"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "route 'llm' not found");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

TEST(ToGrpcStatusTest, CutsAMessageEchoingLargeInput) {
  // An 8 KiB route name echoed whole would pass the client's 8 KiB metadata
  // limit, and the caller would get an opaque error instead of this one.
  const std::string name(8192, 'r');
  grpc::Status s = ToGrpcStatus(absl::NotFoundError("route '" + name + "' not found"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_LE(s.error_message().size(), kMaxStatusMessageBytes + 40);
  EXPECT_THAT(s.error_message(), StartsWith("route 'rrrr"));
  EXPECT_THAT(s.error_message(), EndsWith("... [8210 bytes, cut]"));
}

TEST(ToGrpcStatusTest, CutsDetailsMessageToo) {
  absl::Status in = absl::UnavailableError(std::string(5000, 'x'));
  in.SetPayload("type.googleapis.com/fanout.v1.RouteResponse", absl::Cord("payload"));
  grpc::Status s = ToGrpcStatus(in);
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(s.error_details()));
  EXPECT_EQ(details.message(), s.error_message());
  EXPECT_LE(details.message().size(), kMaxStatusMessageBytes + 40);
  ASSERT_EQ(details.details_size(), 1);
  EXPECT_EQ(details.details(0).value(), "payload");
}

TEST(TruncateForStatusTest, NeverSplitsAUtf8Character) {
  // "é" is two bytes (C3 A9); a cut at an odd offset would split one.
  std::string text;
  for (int i = 0; i < 100; ++i) text += "\xC3\xA9";
  const std::string cut = TruncateForStatus(text, 11);
  EXPECT_THAT(cut, StartsWith(std::string(text, 0, 10) + "..."));
  EXPECT_EQ(TruncateForStatus("short", 11), "short");
}

TEST(QuoteInputTest, QuotesAndCutsCallerInput) {
  EXPECT_EQ(QuoteInput("svc"), "\"svc\"");
  const std::string quoted = QuoteInput(std::string(1000, 'a'));
  EXPECT_LT(quoted.size(), 200u);
  EXPECT_THAT(quoted, HasSubstr("1000 bytes, cut"));
}

}  // namespace
}  // namespace fanout::server
