#include "common/log_throttle.h"

#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "fanout/v1/sidecar.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/subprocess.h"

namespace fanout {
namespace {

using ::testing::HasSubstr;

TEST(LogThrottleTest, AdmitsBurstPerWindowAndCountsTheRest) {
  testing::FakeClock clock;
  LogThrottle throttle(/*burst=*/2, absl::Seconds(10), &clock);
  int64_t suppressed = -1;
  EXPECT_TRUE(throttle.Admit(&suppressed));
  EXPECT_EQ(suppressed, 0);
  EXPECT_TRUE(throttle.Admit(&suppressed));
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(throttle.Admit(&suppressed));
  clock.Advance(absl::Seconds(9));
  EXPECT_FALSE(throttle.Admit(&suppressed));
  clock.Advance(absl::Seconds(1));
  EXPECT_TRUE(throttle.Admit(&suppressed));
  EXPECT_EQ(suppressed, 6);
  EXPECT_TRUE(throttle.Admit(&suppressed));
  EXPECT_EQ(suppressed, 0);
  EXPECT_FALSE(throttle.Admit(&suppressed));
}

// Runs `body` with fd 2 sent to a file; returns what was written there.
template <typename F>
std::string CaptureStderr(F body) {
  const std::string path = testing::TempPath("stderr");
  const int saved = ::dup(2);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ::dup2(fd, 2);
  ::close(fd);
  body();
  ::dup2(saved, 2);
  ::close(saved);
  std::string text = testing::ReadFile(path);
  ::unlink(path.c_str());
  return text;
}

int CountLines(const std::string& text, absl::string_view needle) {
  int n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) n += absl::StrContains(line, needle);
  return n;
}

TEST(RouteProtobufLogsTest, InvalidUtf8ParsesLogThroughFanoutAtMostBurstPerWindow) {
  testing::FakeClock clock;
  RouteProtobufLogs(/*burst=*/3, absl::Seconds(10), &clock);
  // A GetRequest whose key (field 1, a proto3 string) is not UTF-8.
  const std::string bad("\x0a\x02\xff\xfe", 4);
  int failed = 0;
  std::string text = CaptureStderr([&] {
    for (int i = 0; i < 100; ++i) {
      fanout::v1::GetRequest request;
      failed += !request.ParseFromString(bad);
    }
  });
  EXPECT_EQ(failed, 100);
  EXPECT_EQ(CountLines(text, "invalid UTF-8"), 3) << text;
  EXPECT_THAT(text, HasSubstr("ERROR"));
  EXPECT_THAT(text, HasSubstr("libprotobuf"));

  clock.Advance(absl::Seconds(10));
  text = CaptureStderr([&] {
    fanout::v1::GetRequest request;
    EXPECT_FALSE(request.ParseFromString(bad));
  });
  EXPECT_EQ(CountLines(text, "invalid UTF-8"), 1) << text;
  EXPECT_THAT(text, HasSubstr("(97 earlier libprotobuf lines not logged)"));
}

}  // namespace
}  // namespace fanout
