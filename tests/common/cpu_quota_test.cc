#include "common/cpu_quota.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace fanout {
namespace {

namespace fs = std::filesystem;
using ::fanout::testing::StatusIs;

TEST(ParseCgroupV2CpuMaxTest, ReadsQuotaOverPeriod) {
  EXPECT_EQ(*ParseCgroupV2CpuMax("150000 100000\n"), 1.5);
  EXPECT_EQ(*ParseCgroupV2CpuMax("50000 100000"), 0.5);
  EXPECT_EQ(*ParseCgroupV2CpuMax("max 100000\n"), std::nullopt);
}

TEST(ParseCgroupV2CpuMaxTest, RejectsMalformed) {
  EXPECT_THAT(ParseCgroupV2CpuMax(""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseCgroupV2CpuMax("max"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseCgroupV2CpuMax("lots 100000"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseCgroupV2CpuMax("100000 0"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseCgroupV2CpuMax("-5 100000"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ParseCgroupV1CpuQuotaTest, ReadsQuotaOverPeriodAndMinusOneAsNoLimit) {
  EXPECT_EQ(*ParseCgroupV1CpuQuota("200000\n", "100000\n"), 2.0);
  EXPECT_EQ(*ParseCgroupV1CpuQuota("25000", "100000"), 0.25);
  EXPECT_EQ(*ParseCgroupV1CpuQuota("-1\n", "100000\n"), std::nullopt);
  EXPECT_THAT(ParseCgroupV1CpuQuota("x", "100000"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseCgroupV1CpuQuota("1000", "0"), StatusIs(absl::StatusCode::kInvalidArgument));
}

// A fake root: proc/self/{mountinfo,cgroup} and cgroup files under it.
class CgroupCpuLimitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("fanout_cgroup_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "proc/self");
  }
  void TearDown() override { fs::remove_all(root_); }

  void Write(const std::string& relative, const std::string& text) {
    const fs::path path = root_ / relative;
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }

  fs::path root_;
};

TEST_F(CgroupCpuLimitTest, V2ReadsTheProcessCgroup) {
  Write("proc/self/mountinfo",
        "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n");
  Write("proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
  Write("sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "150000 100000\n");
  EXPECT_EQ(CgroupCpuLimit(root_.string()), 1.5);
}

TEST_F(CgroupCpuLimitTest, V2TakesTheTightestAncestor) {
  Write("proc/self/mountinfo", "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
  Write("proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
  Write("sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n");
  Write("sys/fs/cgroup/kubepods/pod1/cpu.max", "300000 100000\n");
  Write("sys/fs/cgroup/kubepods/cpu.max", "max 100000\n");
  EXPECT_EQ(CgroupCpuLimit(root_.string()), 3.0);
}

TEST_F(CgroupCpuLimitTest, V2InsideANamespacedContainer) {
  // With a cgroup namespace the process sees its own cgroup as "/".
  Write("proc/self/mountinfo", "1200 1100 0:30 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n");
  Write("proc/self/cgroup", "0::/\n");
  Write("sys/fs/cgroup/cpu.max", "200000 100000\n");
  EXPECT_EQ(CgroupCpuLimit(root_.string()), 2.0);
}

TEST_F(CgroupCpuLimitTest, V1ReadsTheCpuControllerMount) {
  Write("proc/self/mountinfo",
        "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
  Write("proc/self/cgroup", "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/docker/abc\n");
  Write("sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "50000\n");
  Write("sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
  Write("sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_quota_us", "-1\n");
  Write("sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(CgroupCpuLimit(root_.string()), 0.5);
}

TEST_F(CgroupCpuLimitTest, V1WithMountRootBeingTheContainerCgroup) {
  // Docker without a cgroup namespace: the container's cgroup is mounted
  // at the controller's mount point.
  Write("proc/self/mountinfo",
        "700 690 0:29 /docker/abc /sys/fs/cgroup/cpu ro - cgroup cgroup rw,cpu\n");
  Write("proc/self/cgroup", "3:cpu:/docker/abc\n");
  Write("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "400000\n");
  Write("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(CgroupCpuLimit(root_.string()), 4.0);
}

TEST_F(CgroupCpuLimitTest, NoQuotaNoMountsOrNoFilesIsNoLimit) {
  Write("proc/self/mountinfo", "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
  Write("proc/self/cgroup", "0::/user.slice\n");
  Write("sys/fs/cgroup/user.slice/cpu.max", "max 100000\n");
  EXPECT_EQ(CgroupCpuLimit(root_.string()), std::nullopt);

  Write("proc/self/mountinfo", "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n");
  EXPECT_EQ(CgroupCpuLimit(root_.string()), std::nullopt);

  fs::remove_all(root_ / "proc");
  EXPECT_EQ(CgroupCpuLimit(root_.string()), std::nullopt);
}

TEST_F(CgroupCpuLimitTest, MalformedQuotaFileIsIgnored) {
  Write("proc/self/mountinfo", "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
  Write("proc/self/cgroup", "0::/a\n");
  Write("sys/fs/cgroup/a/cpu.max", "garbage\n");
  Write("sys/fs/cgroup/cpu.max", "100000 100000\n");
  EXPECT_EQ(CgroupCpuLimit(root_.string()), 1.0);
}

TEST(AvailableCpusTest, IsPositiveAndAtMostTheOnlineCpus) {
  const double cpus = AvailableCpus();
  EXPECT_GT(cpus, 0.0);
  EXPECT_LE(cpus, static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN)));
}

}  // namespace
}  // namespace fanout
