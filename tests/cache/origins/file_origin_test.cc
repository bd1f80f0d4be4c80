#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/synchronization/notification.h"
#include "cache/origins/file_origin.h"
#include "gtest/gtest.h"
#include "tests/testing/manual_executor.h"
#include "tests/testing/status_matchers.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::StatusIs;
namespace fs = std::filesystem;

class FileOriginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("fanout_file_origin_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "flags");
    fs::create_directories(root_ / "tenant-a");
    std::ofstream(root_ / "flags" / "checkout") << "on";
    std::ofstream(root_ / "tenant-a" / "limit") << "42";
    std::ofstream(root_ / "big") << std::string(2048, 'x');
    FileOriginOptions options;
    options.root = root_.string();
    options.max_value_bytes = 1024;
    origin_ = *NewFileOrigin(options, &executor_);
  }
  void TearDown() override { fs::remove_all(root_); }

  absl::StatusOr<OriginValue> Fetch(absl::string_view ns, absl::string_view key) {
    std::optional<absl::StatusOr<OriginValue>> result;
    origin_->Fetch(ns, key, {},
                   [&](absl::StatusOr<OriginValue> v) { result = std::move(v); });
    executor_.RunUntilIdle();
    EXPECT_TRUE(result.has_value());
    return *result;
  }

  fs::path root_;
  testing::ManualExecutor executor_;
  std::unique_ptr<Origin> origin_;
};

TEST_F(FileOriginTest, FetchReadsFileRelativeToRoot) {
  auto v = Fetch("", "flags/checkout");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->value, "on");
  EXPECT_GT(v->version, 0);
}

TEST_F(FileOriginTest, FetchReadsNamespaceSubdirectory) {
  auto v = Fetch("tenant-a", "limit");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->value, "42");
}

TEST_F(FileOriginTest, FetchMissingIsNotFound) {
  EXPECT_THAT(Fetch("", "flags/nope"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(Fetch("", "flags"), StatusIs(absl::StatusCode::kNotFound));  // a directory
}

TEST_F(FileOriginTest, FetchRejectsEscapingPaths) {
  EXPECT_THAT(Fetch("", "../etc/passwd"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Fetch("", "/etc/passwd"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Fetch("..", "x"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Fetch("", "a//b"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(FileOriginTest, FetchRejectsOversizedValue) {
  EXPECT_THAT(Fetch("", "big"), StatusIs(absl::StatusCode::kFailedPrecondition,
                                         ::testing::HasSubstr("max_value_bytes")));
}

TEST(NewFileOriginTest, RejectsMissingRoot) {
  testing::ManualExecutor executor;
  FileOriginOptions options;
  options.root = "/nonexistent/fanout";
  EXPECT_THAT(NewFileOrigin(options, &executor),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("origin.file.root")));
}

}  // namespace
}  // namespace fanout::cache
