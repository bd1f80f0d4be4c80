// GoogleTest helpers for absl::Status / absl::StatusOr.
#ifndef FANOUT_TESTS_TESTING_STATUS_MATCHERS_H_
#define FANOUT_TESTS_TESTING_STATUS_MATCHERS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fanout::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER(IsOk, "is OK") { return ::fanout::testing::GetStatus(arg).ok(); }

MATCHER_P(StatusIs, code, "has status code " + ::testing::PrintToString(code)) {
  const absl::Status& s = ::fanout::testing::GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code;
}

MATCHER_P2(StatusIs, code, message_matcher, "") {
  const absl::Status& s = ::fanout::testing::GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(s.message()), result_listener);
}

}  // namespace fanout::testing

#define ASSERT_OK(expr) ASSERT_THAT(expr, ::fanout::testing::IsOk())
#define EXPECT_OK(expr) EXPECT_THAT(expr, ::fanout::testing::IsOk())

#endif  // FANOUT_TESTS_TESTING_STATUS_MATCHERS_H_
