#include "common/units.h"

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace fanout {
namespace {

using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ParseDurationTest, AcceptsUnits) {
  EXPECT_EQ(*ParseDuration("300ms"), absl::Milliseconds(300));
  EXPECT_EQ(*ParseDuration("2s"), absl::Seconds(2));
  EXPECT_EQ(*ParseDuration("1m30s"), absl::Seconds(90));
  EXPECT_EQ(*ParseDuration("0"), absl::ZeroDuration());
}

TEST(ParseDurationTest, RejectsBadInputNamingIt) {
  EXPECT_THAT(ParseDuration("2"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"2\"")));
  EXPECT_THAT(ParseDuration("-1s"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseDuration("soon"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseDuration("inf"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ParseByteSizeTest, AcceptsUnits) {
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_EQ(*ParseByteSize("64KiB"), 65536u);
  EXPECT_EQ(*ParseByteSize("256MiB"), 256ull << 20);
  EXPECT_EQ(*ParseByteSize("1GiB"), 1ull << 30);
  EXPECT_EQ(*ParseByteSize("10MB"), 10'000'000u);
  EXPECT_EQ(*ParseByteSize("7 B"), 7u);
}

TEST(ParseByteSizeTest, RejectsBadInput) {
  EXPECT_THAT(ParseByteSize("lots"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseByteSize("5XB"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown unit")));
  EXPECT_THAT(ParseByteSize("-5"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseByteSize("99999999999999999999GiB"), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace fanout
