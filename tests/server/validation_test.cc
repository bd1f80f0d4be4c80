#include "server/validation.h"

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace fanout::server {
namespace {

using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ValidateKeyTest, AcceptsKeyAtTheLimit) {
  LimitsSection limits;
  EXPECT_OK(ValidateKey("key", std::string(limits.max_key_bytes, 'k'), limits));
}

TEST(ValidateKeyTest, RejectsEmptyNamingTheField) {
  EXPECT_THAT(ValidateKey("key", "", LimitsSection{}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("key is empty")));
}

TEST(ValidateKeyTest, RejectsOversizedNamingTheLimit) {
  LimitsSection limits;
  EXPECT_THAT(ValidateKey("keys[3]", std::string(limits.max_key_bytes + 1, 'k'), limits),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("keys[3] is 1025 bytes, over the limit of 1024 "
                                 "(limits.max_key_bytes)")));
}

TEST(ValidateKeyTest, RejectsNulByte) {
  EXPECT_THAT(ValidateKey("key", std::string("a\0b", 3), LimitsSection{}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NUL")));
}

TEST(ValidateNamespaceTest, AllowsEmptyRejectsOversized) {
  LimitsSection limits;
  EXPECT_OK(ValidateNamespace("", limits));
  EXPECT_THAT(ValidateNamespace(std::string(limits.max_namespace_bytes + 1, 'n'), limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limits.max_namespace_bytes")));
}

TEST(ValidateBatchSizeTest, EnforcesBounds) {
  LimitsSection limits;
  limits.max_batch_keys = 3;
  EXPECT_OK(ValidateBatchSize("keys", 3, limits));
  EXPECT_THAT(ValidateBatchSize("keys", 0, limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("keys is empty")));
  EXPECT_OK(ValidateBatchSize("keys", 0, limits, /*allow_empty=*/true));
  EXPECT_THAT(ValidateBatchSize("keys", 4, limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limits.max_batch_keys")));
}

}  // namespace
}  // namespace fanout::server
