#include "common/log.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <limits>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"

namespace fanout {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;
using ::testing::StartsWith;

class CapturingSink final : public LogSink {
 public:
  void Write(LogLevel level, absl::string_view line) override {
    absl::MutexLock l(&mu_);
    lines_.emplace_back(line);
  }
  std::vector<std::string> lines() const {
    absl::MutexLock l(&mu_);
    return lines_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

class LogTest : public ::testing::Test {
 protected:
  LogTest() : clock_(absl::FromUnixMillis(1'700'000'000'123)) {
    SetLogSink(&sink_);
    SetLogClock(&clock_);
    SetLogLevel(LogLevel::kDebug);
    SetLogRateLimit(10);
  }
  ~LogTest() override {
    SetLogSink(nullptr);
    SetLogClock(nullptr);
    SetLogFormat(LogFormat::kText);
    SetLogLevel(LogLevel::kInfo);
    SetLogRateLimit(10);
  }

  // Parses a JSON line with protobuf's strict parser.
  static google::protobuf::Struct ParseJson(const std::string& line) {
    google::protobuf::Struct s;
    auto status = google::protobuf::util::JsonStringToMessage(line, &s);
    EXPECT_TRUE(status.ok()) << status.ToString() << " in " << line;
    return s;
  }

  CapturingSink sink_;
  testing::FakeClock clock_;
};

void LogErrorFromOneSite() { FANOUT_LOG(ERROR) << "backend down"; }
void LogErrorFromAnotherSite() { FANOUT_LOG(ERROR) << "origin down"; }

TEST_F(LogTest, JsonLineCarriesTimeLevelMessageSourceAndFields) {
  SetLogFormat(LogFormat::kJson);
  FANOUT_LOG(WARNING)
          .With("backend", "gpu-b")
          .With("code", 14)
          .With("ejected", true)
          .With("ratio", 0.5)
      << "call failed after " << 3 << " tries";
  ASSERT_THAT(sink_.lines(), SizeIs(1));
  const std::string line = sink_.lines()[0];
  EXPECT_THAT(line, StartsWith("{\"time\":\"2023-11-14T22:13:20.123Z\",\"level\":\"warning\""));
  google::protobuf::Struct s = ParseJson(line);
  const auto& f = s.fields();
  EXPECT_EQ(f.at("message").string_value(), "call failed after 3 tries");
  EXPECT_THAT(f.at("source").string_value(), StartsWith("log_test.cc:"));
  const auto& fields = f.at("fields").struct_value().fields();
  EXPECT_EQ(fields.at("backend").string_value(), "gpu-b");
  EXPECT_EQ(fields.at("code").number_value(), 14);
  EXPECT_TRUE(fields.at("ejected").bool_value());
  EXPECT_EQ(fields.at("ratio").number_value(), 0.5);
}

TEST_F(LogTest, JsonEscapesQuotesControlBytesAndInvalidUtf8) {
  SetLogFormat(LogFormat::kJson);
  const std::string message =
      "q\"b\\n\nt\tc\x01 e\xC3\xA9 s\xF0\x9F\x98\x80 bad\xFF over\xC0\xAF sur\xED\xA0\x80 "
      "cut\xE2\x82";
  FANOUT_LOG(ERROR).With("key\"\n", message) << message;
  ASSERT_THAT(sink_.lines(), SizeIs(1));
  const std::string line = sink_.lines()[0];
  EXPECT_EQ(line.find('\n'), std::string::npos);
  google::protobuf::Struct s = ParseJson(line);
  const std::string want =
      "q\"b\\n\nt\tc\x01 e\xC3\xA9 s\xF0\x9F\x98\x80 bad\xEF\xBF\xBD over\xEF\xBF\xBD\xEF\xBF\xBD "
      "sur\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD cut\xEF\xBF\xBD\xEF\xBF\xBD";
  EXPECT_EQ(s.fields().at("message").string_value(), want);
  EXPECT_EQ(s.fields().at("fields").struct_value().fields().at("key\"\n").string_value(), want);
}

TEST_F(LogTest, JsonNonFiniteNumbersBecomeStrings) {
  SetLogFormat(LogFormat::kJson);
  FANOUT_LOG(INFO).With("r", std::numeric_limits<double>::infinity()) << "x";
  google::protobuf::Struct s = ParseJson(sink_.lines().at(0));
  EXPECT_EQ(s.fields().at("fields").struct_value().fields().at("r").string_value(), "inf");
}

TEST_F(LogTest, TextEscapesControlCharactersSoAMessageIsOneLine) {
  FANOUT_LOG(INFO) << "key a\n2023-01-01T00:00:00.000Z ERROR forged] \x1b[31m";
  ASSERT_THAT(sink_.lines(), SizeIs(1));
  EXPECT_THAT(sink_.lines()[0], HasSubstr("INFO log_test.cc:"));
  EXPECT_THAT(sink_.lines()[0],
              HasSubstr("] key a\\n2023-01-01T00:00:00.000Z ERROR forged] \\x1b[31m"));
}

TEST_F(LogTest, TextFieldsFollowTheMessageQuotedWhenNeeded) {
  FANOUT_LOG(INFO)
          .With("addr", "127.0.0.1:7071")
          .With("n", 3)
          .With("why", "two words")
          .With("q", "a\"b")
      << "up";
  EXPECT_THAT(sink_.lines(), ElementsAre(StartsWith("2023-11-14T22:13:20.123Z INFO log_test.cc:")));
  EXPECT_THAT(sink_.lines()[0],
              HasSubstr("] up addr=127.0.0.1:7071 n=3 why=\"two words\" q=\"a\\\"b\""));
}

TEST_F(LogTest, LevelBelowThresholdIsNotFormatted) {
  SetLogLevel(LogLevel::kWarning);
  int evaluated = 0;
  auto count = [&] { return ++evaluated; };
  FANOUT_LOG(INFO) << count();
  FANOUT_LOG(DEBUG) << count();
  EXPECT_EQ(evaluated, 0);
  EXPECT_THAT(sink_.lines(), SizeIs(0));
  FANOUT_LOG(WARNING) << count();
  EXPECT_EQ(evaluated, 1);
  EXPECT_THAT(sink_.lines(), SizeIs(1));
}

TEST_F(LogTest, LogInsideUnbracedIfElseLeavesTheElseToTheIf) {
  bool took_else = false;
  if (sink_.lines().size() > 100)
    FANOUT_LOG(INFO) << "not written";
  else
    took_else = true;
  EXPECT_TRUE(took_else);
  EXPECT_THAT(sink_.lines(), SizeIs(0));
}

TEST_F(LogTest, RateLimitSuppressesPastTheLimitAndReportsTheCountLater) {
  SetLogRateLimit(3);
  for (int i = 0; i < 10; ++i) LogErrorFromOneSite();
  EXPECT_THAT(sink_.lines(), SizeIs(3));
  clock_.Advance(absl::Milliseconds(999));
  LogErrorFromOneSite();
  EXPECT_THAT(sink_.lines(), SizeIs(3));

  clock_.Advance(absl::Milliseconds(1));
  LogErrorFromOneSite();
  const std::vector<std::string> lines = sink_.lines();
  ASSERT_THAT(lines, SizeIs(5));
  EXPECT_THAT(lines[3], HasSubstr("ERROR log_test.cc:"));
  EXPECT_THAT(lines[3], HasSubstr("suppressed 8 lines from this call site in the last 1s"));
  EXPECT_THAT(lines[3], HasSubstr("suppressed=8"));
  EXPECT_THAT(lines[4], HasSubstr("backend down"));
}

TEST_F(LogTest, RateLimitIsPerCallSite) {
  SetLogRateLimit(2);
  for (int i = 0; i < 5; ++i) {
    LogErrorFromOneSite();
    LogErrorFromAnotherSite();
  }
  const std::vector<std::string> lines = sink_.lines();
  EXPECT_EQ(std::count_if(lines.begin(), lines.end(),
                          [](const std::string& l) { return absl::StrContains(l, "backend"); }),
            2);
  EXPECT_EQ(std::count_if(lines.begin(), lines.end(),
                          [](const std::string& l) { return absl::StrContains(l, "origin"); }),
            2);
}

TEST_F(LogTest, RateLimitLeavesInfoAloneAndZeroTurnsItOff) {
  SetLogRateLimit(1);
  for (int i = 0; i < 5; ++i) FANOUT_LOG(INFO) << "info";
  EXPECT_THAT(sink_.lines(), SizeIs(5));
  SetLogRateLimit(0);
  for (int i = 0; i < 5; ++i) LogErrorFromOneSite();
  EXPECT_THAT(sink_.lines(), SizeIs(10));
}

TEST(ParseLogFormatTest, ParseLogFormatAcceptsTextAndJsonOnly) {
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  EXPECT_EQ(*ParseLogFormat("TEXT"), LogFormat::kText);
  absl::StatusOr<LogFormat> bad = ParseLogFormat("xml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("want text or json"));
}

}  // namespace
}  // namespace fanout
