// Reading Route answers in tests: a branch by backend name, and the
// RouteResponse that a failed Route carries in its status.
#ifndef FANOUT_TESTS_TESTING_ROUTE_RESPONSES_H_
#define FANOUT_TESTS_TESTING_ROUTE_RESPONSES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "fanout/v1/sidecar.pb.h"
#include "gtest/gtest.h"

namespace fanout::testing {

inline constexpr char kRouteResponseUrl[] = "type.googleapis.com/fanout.v1.RouteResponse";

// The branch of `backend`; a test failure (and an empty branch) if none.
inline const fanout::v1::Branch& BranchOf(const fanout::v1::RouteResponse& response,
                                          absl::string_view backend) {
  for (const fanout::v1::Branch& branch : response.branches()) {
    if (branch.backend() == backend) return branch;
  }
  ADD_FAILURE() << "no branch " << backend;
  static const fanout::v1::Branch* const kNone = new fanout::v1::Branch();
  return *kNone;
}

// The RouteResponse a failed Route carries; a test failure if none.
inline fanout::v1::RouteResponse CarriedRouteResponse(const absl::Status& status) {
  fanout::v1::RouteResponse response;
  const auto payload = status.GetPayload(kRouteResponseUrl);
  EXPECT_TRUE(payload.has_value()) << status;
  if (payload.has_value()) {
    EXPECT_TRUE(response.ParseFromString(std::string(*payload)));
  }
  return response;
}

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_ROUTE_RESPONSES_H_
