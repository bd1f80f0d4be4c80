#include "common/trace_context.h"

#include <string>

#include "gtest/gtest.h"

namespace fanout {
namespace {

constexpr char kValid[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(TraceContextTest, IsValidTraceparentAcceptsTheSpecificationsExample) {
  EXPECT_TRUE(IsValidTraceparent(kValid));
  EXPECT_TRUE(IsValidTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
  // A later version may append fields.
  EXPECT_TRUE(IsValidTraceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what"));
}

TEST(TraceContextTest, IsValidTraceparentRejectsMalformedValues) {
  std::string s = kValid;
  EXPECT_FALSE(IsValidTraceparent(""));
  EXPECT_FALSE(IsValidTraceparent(s.substr(0, 54)));     // short
  EXPECT_FALSE(IsValidTraceparent(s + "-x"));            // 00 has no more
  EXPECT_FALSE(IsValidTraceparent("ff" + s.substr(2)));  // version ff
  EXPECT_FALSE(IsValidTraceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
  EXPECT_FALSE(IsValidTraceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
  EXPECT_FALSE(IsValidTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
  EXPECT_FALSE(IsValidTraceparent("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
  EXPECT_FALSE(IsValidTraceparent("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"));
  EXPECT_FALSE(IsValidTraceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"));
  EXPECT_FALSE(IsValidTraceparent("cc" + s.substr(2) + "-a\nb"));  // control byte
  EXPECT_FALSE(IsValidTraceparent("cc" + s.substr(2) + "-" + std::string(300, 'a')));  // long
}

}  // namespace
}  // namespace fanout
