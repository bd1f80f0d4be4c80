// The survival tier on real, small file systems: a tmpfs that fills up, and
// one remounted read-only. Each test re-runs itself in a child process that
// first moves into a private mount namespace (so its mounts vanish with it
// and nobody else sees them) and mounts a tmpfs there. Where the sandbox
// does not allow that (no CAP_SYS_ADMIN), the tests are skipped; the same
// faults are covered everywhere by rocksdb_tier_test's injected file system.
#include <sched.h>
#include <sys/mount.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "cache/tiers/rocksdb/rocksdb_tier.h"
#include "tests/cache/tiers/tier_contract.h"
#include "tests/testing/eventually.h"
#include "tests/testing/subprocess.h"

namespace fanout::testing {
namespace {

namespace fs = std::filesystem;
using cache::Entry;
using cache::RocksDbTier;
using cache::RocksDbTierOptions;
using ::testing::HasSubstr;

constexpr char kChildVariable[] = "FANOUT_L3_MOUNT_CHILD";
constexpr char kCannotMount[] = "cannot mount here: ";

std::string CurrentTestName() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return absl::StrCat(info->test_suite_name(), ".", info->name());
}

bool InChild() { return std::getenv(kChildVariable) != nullptr; }

// Runs this test again in a child and reports its outcome here. The child
// mounts on a directory made (and removed) here.
void RunInChild() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = absl::StrCat(base != nullptr ? base : "/tmp", "/fanout_l3mnt_XXXXXX");
  const std::string dir = ::mkdtemp(pattern.data());
  RunResult r = RunProcess(
      {"/usr/bin/env", absl::StrCat(kChildVariable, "=", dir),
       fs::read_symlink("/proc/self/exe").string(), "--gtest_filter=" + CurrentTestName()},
      absl::Seconds(120));
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (r.out.find(kCannotMount) != std::string::npos) {
    const size_t at = r.out.find(kCannotMount);
    GTEST_SKIP() << r.out.substr(at, r.out.find('\n', at) - at);
  }
  EXPECT_EQ(r.code, 0) << "child:\n" << r.out << r.err;
}

// A tmpfs of `size` mounted on the parent's directory, in this process's
// own mount namespace. Empty when that is not possible here.
std::string MountTmpfs(absl::string_view size) {
  if (::unshare(CLONE_NEWNS) != 0) {
    std::printf("%sunshare: %s\n", kCannotMount, std::strerror(errno));
    return "";
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    std::printf("%smake / private: %s\n", kCannotMount, std::strerror(errno));
    return "";
  }
  const std::string dir = std::getenv(kChildVariable);
  const std::string options = absl::StrCat("size=", size);
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, options.c_str()) != 0) {
    std::printf("%smount tmpfs: %s\n", kCannotMount, std::strerror(errno));
    return "";
  }
  return dir;
}

std::string Incompressible(size_t bytes, uint64_t seed) {
  std::string v(bytes, '\0');
  uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);
  for (char& c : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  return v;
}

TEST(RocksDbTierMountTest, FullFileSystemTurnsReadOnlyKeepsAnsweringAndResumesWhenFreed) {
  if (!InChild()) return RunInChild();
  const std::string mnt = MountTmpfs("24m");
  if (mnt.empty()) return;
  // Room that can be given back later: more than RocksDB wants free before
  // it resumes by itself (two write buffers, 2 MiB here) and than the
  // compaction of the level-0 files the fill leaves needs.
  const std::string filler = mnt + "/filler";
  std::ofstream(filler, std::ios::binary) << Incompressible(12 << 20, 99);

  RocksDbTierOptions o;
  o.path = mnt + "/l3";
  o.max_bytes = 64 << 20;  // more than the disk: the disk fills first
  o.retry_interval = absl::Milliseconds(20);
  absl::StatusOr<std::unique_ptr<RocksDbTier>> opened = RocksDbTier::Open(o);
  ASSERT_OK(opened);
  RocksDbTier& tier = **opened;
  ASSERT_OK(StoreNow(tier, Ck("ns", "first"), EntryNow("kept")));
  absl::Status failed;
  for (int i = 0; i < 1000 && failed.ok(); ++i) {
    failed = StoreNow(tier, Ck("ns", absl::StrCat("k", i)), EntryNow(Incompressible(16 << 10, i)));
  }
  ASSERT_FALSE(failed.ok()) << "the 24 MiB file system never filled";
  EXPECT_THAT(failed, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_FALSE(tier.Stats().available);
  EXPECT_THAT(tier.State().read_only_reason, HasSubstr("No space left on device"));
  absl::StatusOr<Entry> got = LookupNow(tier, Ck("ns", "first"));
  ASSERT_OK(got);
  EXPECT_EQ(got->value, "kept");

  fs::remove(filler);
  ASSERT_TRUE(Eventually([&] { return tier.Stats().available; })) << tier.State().read_only_reason;
  EXPECT_OK(StoreNow(tier, Ck("ns", "after"), EntryNow("written")));
  EXPECT_OK(LookupNow(tier, Ck("ns", "after")));
}

TEST(RocksDbTierMountTest, ReadOnlyMountIsOpenedReadOnlyAndAnswers) {
  if (!InChild()) return RunInChild();
  const std::string mnt = MountTmpfs("16m");
  if (mnt.empty()) return;
  RocksDbTierOptions o;
  o.path = mnt + "/l3";
  {
    absl::StatusOr<std::unique_ptr<RocksDbTier>> tier = RocksDbTier::Open(o);
    ASSERT_OK(tier);
    ASSERT_OK(StoreNow(**tier, Ck("ns", "k"), EntryNow("v")));
  }
  ASSERT_EQ(::mount(nullptr, mnt.c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr), 0)
      << std::strerror(errno);
  absl::StatusOr<std::unique_ptr<RocksDbTier>> tier = RocksDbTier::Open(o);
  ASSERT_OK(tier);
  EXPECT_TRUE((*tier)->State().opened_read_only);
  EXPECT_TRUE((*tier)->State().moved_aside.empty());
  absl::StatusOr<Entry> got = LookupNow(**tier, Ck("ns", "k"));
  ASSERT_OK(got);
  EXPECT_EQ(got->value, "v");
  EXPECT_THAT(StoreNow(**tier, Ck("ns", "k2"), EntryNow("x")),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST(RocksDbTierMountTest, CorruptDirectoryThatIsAMountPointHasItsContentsMovedInside) {
  // A volume mounted at the L3 path cannot be renamed (EBUSY): its contents
  // go into <path>/corrupt-<time>/ instead.
  if (!InChild()) return RunInChild();
  const std::string mnt = MountTmpfs("16m");
  if (mnt.empty()) return;
  RocksDbTierOptions o;
  o.path = mnt;
  {
    absl::StatusOr<std::unique_ptr<RocksDbTier>> tier = RocksDbTier::Open(o);
    ASSERT_OK(tier);
    ASSERT_OK(StoreNow(**tier, Ck("ns", "k"), EntryNow("v")));
  }
  std::ofstream(fs::path(mnt) / "CURRENT", std::ios::trunc) << "garbage";
  absl::StatusOr<std::unique_ptr<RocksDbTier>> tier = RocksDbTier::Open(o);
  ASSERT_OK(tier);
  const std::string moved = (*tier)->State().moved_aside;
  EXPECT_THAT(moved, HasSubstr(mnt + "/corrupt-"));
  EXPECT_TRUE(fs::exists(fs::path(moved) / "CURRENT"));
  EXPECT_THAT(LookupNow(**tier, Ck("ns", "k")), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(StoreNow(**tier, Ck("ns", "new"), EntryNow("works")));
  EXPECT_OK(LookupNow(**tier, Ck("ns", "new")));
  // A second bad start moves the new contents aside again, not the old ones.
  tier->reset();
  std::ofstream(fs::path(mnt) / "CURRENT", std::ios::trunc) << "garbage again";
  tier = RocksDbTier::Open(o);
  ASSERT_OK(tier);
  EXPECT_NE((*tier)->State().moved_aside, moved);
  EXPECT_TRUE(fs::exists(fs::path(moved) / "CURRENT"));
}

}  // namespace

// Only the helpers of tier_contract.h are used here.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TierContractTest);

}  // namespace fanout::testing
