#include "cache/origins/file_origin.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/testing/manual_blocking_pool.h"
#include "tests/testing/manual_executor.h"
#include "tests/testing/status_matchers.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

// A fresh directory under the temp dir, removed on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "fanout_file_origin_XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void Write(const fs::path& path, const std::string& content) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << content;
}

// Every test runs over both resolvers: the kernel's (openat2) and the
// portable one used where the kernel or a seccomp profile lacks it.
class FileOriginTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    root_ = dir_.path() / "root";
    outside_ = dir_.path() / "outside";
    Write(root_ / "flags" / "checkout", "on");
    Write(root_ / "@ns" / "tenant-a" / "limit", "42");
    Write(root_ / "big", std::string(2048, 'x'));
    Write(outside_ / "secret", "top secret");
    origin_ = MakeOrigin(root_.string());
  }

  std::unique_ptr<Origin> MakeOrigin(const std::string& root,
                                     FileSymlinks symlinks = FileSymlinks::kWithinRoot,
                                     uint64_t max_value_bytes = 1024) {
    FileOriginOptions options;
    options.root = root;
    options.symlinks = symlinks;
    options.max_value_bytes = max_value_bytes;
    options.use_openat2 = GetParam();
    absl::StatusOr<std::unique_ptr<Origin>> origin = NewFileOrigin(options, &io_, &executor_);
    EXPECT_OK(origin);
    return origin.ok() ? *std::move(origin) : nullptr;
  }

  // Fetches with no deadline, running the read and the answer to completion.
  absl::StatusOr<OriginValue> Fetch(Origin& origin, absl::string_view ns, absl::string_view key) {
    std::optional<absl::StatusOr<OriginValue>> result;
    int answers = 0;
    origin.Fetch(ns, key, {}, [&](absl::StatusOr<OriginValue> v) {
      result = std::move(v);
      ++answers;
    });
    io_.RunAll();
    executor_.RunUntilIdle();
    EXPECT_EQ(answers, 1);
    if (!result.has_value()) return absl::InternalError("no answer");
    return *std::move(result);
  }
  absl::StatusOr<OriginValue> Fetch(absl::string_view ns, absl::string_view key) {
    return Fetch(*origin_, ns, key);
  }

  void Link(const std::string& target, const fs::path& link) {
    fs::create_directories(link.parent_path());
    ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0) << link;
  }

  TempDir dir_;
  fs::path root_;
  fs::path outside_;
  testing::ManualBlockingPool io_;
  testing::ManualExecutor executor_;
  std::unique_ptr<Origin> origin_;
};

INSTANTIATE_TEST_SUITE_P(Resolvers, FileOriginTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Openat2" : "Portable";
                         });

TEST_P(FileOriginTest, FetchReadsFileRelativeToRoot) {
  auto v = Fetch("", "flags/checkout");
  ASSERT_OK(v);
  EXPECT_EQ(v->value, "on");
  EXPECT_GT(v->version, 0);
}

TEST_P(FileOriginTest, FetchValueCarriesNoSpareCapacity) {
  // The value is cached as it is: read buffers must not come with it.
  Write(root_ / "small", std::string(100, 's'));
  auto origin = MakeOrigin(root_.string(), FileSymlinks::kWithinRoot, /*max_value_bytes=*/1 << 20);
  auto v = Fetch(*origin, "", "small");
  ASSERT_OK(v);
  EXPECT_EQ(v->value, std::string(100, 's'));
  EXPECT_LT(v->value.capacity(), 1024u);
}

TEST_P(FileOriginTest, FetchReadsNamespaceFromTheNamespaceFolder) {
  auto v = Fetch("tenant-a", "limit");
  ASSERT_OK(v);
  EXPECT_EQ(v->value, "42");
}

TEST_P(FileOriginTest, FetchMapsEachNamespaceAndKeyToItsOwnFile) {
  // A default-namespace key shaped like a namespace path is a file of its
  // own, not an alias of the namespace's key.
  Write(root_ / "tenant-a" / "limit", "default namespace");
  auto in_namespace = Fetch("tenant-a", "limit");
  ASSERT_OK(in_namespace);
  EXPECT_EQ(in_namespace->value, "42");
  auto in_default = Fetch("", "tenant-a/limit");
  ASSERT_OK(in_default);
  EXPECT_EQ(in_default->value, "default namespace");
  // The namespace folder cannot be reached from the default namespace, and a
  // namespace is one segment, so "a/b"+"c" cannot alias "a"+"b/c".
  EXPECT_THAT(Fetch("", "@ns/tenant-a/limit"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("namespace field")));
  EXPECT_THAT(Fetch("tenant-a/x", "limit"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("single path segment")));
}

TEST_P(FileOriginTest, FetchMissingIsNotFound) {
  EXPECT_THAT(Fetch("", "flags/nope"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(Fetch("", "flags"), StatusIs(absl::StatusCode::kNotFound));  // a directory
  EXPECT_THAT(Fetch("", "flags/checkout/x"),                               // through a file
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("flags/checkout/x")));
  EXPECT_THAT(Fetch("tenant-b", "limit"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_P(FileOriginTest, FetchRejectsEscapingAndHiddenPaths) {
  for (const char* key : {"../etc/passwd", "/etc/passwd", "a//b", "flags/", ".hidden",
                          "flags/.git/config", "..data/key", "flags/./checkout"}) {
    EXPECT_THAT(Fetch("", key), StatusIs(absl::StatusCode::kInvalidArgument)) << key;
  }
  EXPECT_THAT(Fetch("..", "x"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Fetch(".hidden", "x"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Fetch("", std::string("a\0b", 3)), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_P(FileOriginTest, FetchOfTooLongNamesIsInvalidArgumentNamingTheKey) {
  // Permanent: retrying cannot help, so never Unavailable.
  const std::string segment(256, 's');
  EXPECT_THAT(Fetch("", "flags/" + segment),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("flags/sss")));
  EXPECT_THAT(Fetch("", std::string(1024, 'k')), StatusIs(absl::StatusCode::kInvalidArgument));
  std::string deep;
  for (int i = 0; i < 21; ++i) absl::StrAppend(&deep, i == 0 ? "" : "/", std::string(200, 'd'));
  EXPECT_THAT(Fetch("", deep), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("4095")));
  EXPECT_THAT(Fetch(std::string(256, 'n'), "k"), StatusIs(absl::StatusCode::kInvalidArgument));
  // 255 bytes is a legal name: just missing.
  EXPECT_THAT(Fetch("", std::string(255, 'k')), StatusIs(absl::StatusCode::kNotFound));
}

TEST_P(FileOriginTest, FetchRefusesSymlinksLeavingTheRoot) {
  Link("/", root_ / "rootlink");
  Link("/etc/passwd", root_ / "passwd");
  Link("/proc/self/environ", root_ / "environ");
  Link("../outside/secret", root_ / "up");
  Link("../../outside/secret", root_ / "flags" / "up");
  Link("../outside", root_ / "outdir");
  Link((root_ / "flags" / "checkout").string(), root_ / "absolute");  // absolute, even inside
  for (const char* key : {"rootlink/etc/passwd", "passwd", "environ", "up", "flags/up",
                          "outdir/secret", "absolute"}) {
    auto v = Fetch("", key);
    EXPECT_THAT(v, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(key))) << key;
    EXPECT_THAT(v.status().message(), Not(HasSubstr("root:")));
  }
}

TEST_P(FileOriginTest, FetchFollowsSymlinksInsideTheRoot) {
  Link("flags/checkout", root_ / "alias");
  Link("flags", root_ / "dirlink");
  Link("../flags/checkout", root_ / "ratelimits" / "sibling");
  auto alias = Fetch("", "alias");
  ASSERT_OK(alias);
  EXPECT_EQ(alias->value, "on");
  auto through_dir = Fetch("", "dirlink/checkout");
  ASSERT_OK(through_dir);
  EXPECT_EQ(through_dir->value, "on");
  auto sibling = Fetch("", "ratelimits/sibling");
  ASSERT_OK(sibling);
  EXPECT_EQ(sibling->value, "on");
}

TEST_P(FileOriginTest, FetchOfASymlinkLoopIsFailedPrecondition) {
  Link("loop-b", root_ / "loop-a");
  Link("loop-a", root_ / "loop-b");
  Link("self", root_ / "self");
  EXPECT_THAT(Fetch("", "loop-a"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("loop")));
  EXPECT_THAT(Fetch("", "self/x"), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_P(FileOriginTest, FetchReadsAConfigMapShapedRoot) {
  // What the kubelet writes for a ConfigMap volume, and how it updates it.
  const fs::path cm = dir_.path() / "configmap";
  Write(cm / "..2026_01_01_00_00_00.000000001" / "flags", "v1");
  Link("..2026_01_01_00_00_00.000000001", cm / "..data");
  Link("..data/flags", cm / "flags");
  auto origin = MakeOrigin(cm.string());
  auto v1 = Fetch(*origin, "", "flags");
  ASSERT_OK(v1);
  EXPECT_EQ(v1->value, "v1");

  Write(cm / "..2026_01_02_00_00_00.000000002" / "flags", "v2");
  Link("..2026_01_02_00_00_00.000000002", cm / "..data_tmp");
  fs::rename(cm / "..data_tmp", cm / "..data");
  fs::remove_all(cm / "..2026_01_01_00_00_00.000000001");
  auto v2 = Fetch(*origin, "", "flags");
  ASSERT_OK(v2);
  EXPECT_EQ(v2->value, "v2");
  // The kubelet's own names are not keys.
  EXPECT_THAT(Fetch(*origin, "", "..data/flags"), StatusIs(absl::StatusCode::kInvalidArgument));

  auto strict = MakeOrigin(cm.string(), FileSymlinks::kDeny);
  EXPECT_THAT(Fetch(*strict, "", "flags"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("symlinks: deny")));
}

TEST_P(FileOriginTest, FetchWithSymlinksDeniedRefusesEveryLinkButReadsFiles) {
  Link("flags/checkout", root_ / "alias");
  Link("flags", root_ / "dirlink");
  auto strict = MakeOrigin(root_.string(), FileSymlinks::kDeny);
  EXPECT_THAT(Fetch(*strict, "", "alias"), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(Fetch(*strict, "", "dirlink/checkout"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  auto plain = Fetch(*strict, "", "flags/checkout");
  ASSERT_OK(plain);
  EXPECT_EQ(plain->value, "on");
}

TEST_P(FileOriginTest, FetchServesRegularFilesOnly) {
  ASSERT_EQ(::mkfifo((root_ / "fifo").c_str(), 0600), 0);
  // Opening must not wait for a writer.
  EXPECT_THAT(Fetch("", "fifo"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("regular file")));
}

TEST_P(FileOriginTest, FetchRejectsOversizedValue) {
  EXPECT_THAT(Fetch("", "big"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("limits.max_value_bytes")));
  Write(root_ / "exact", std::string(1024, 'e'));
  Write(root_ / "over", std::string(1025, 'o'));
  auto exact = Fetch("", "exact");
  ASSERT_OK(exact);
  EXPECT_EQ(exact->value.size(), 1024u);
  EXPECT_THAT(Fetch("", "over"), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_P(FileOriginTest, FetchLimitsProcfsFilesByTheBytesRead) {
  // procfs says st_size 0 for files of any length.
  auto procfs = MakeOrigin("/proc/self", FileSymlinks::kWithinRoot, /*max_value_bytes=*/64);
  EXPECT_THAT(Fetch(*procfs, "", "maps"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("limits.max_value_bytes")));
  auto sysctl = MakeOrigin("/proc/sys/kernel", FileSymlinks::kWithinRoot, 64);
  auto ostype = Fetch(*sysctl, "", "ostype");
  ASSERT_OK(ostype);
  EXPECT_EQ(ostype->value, "Linux\n");
}

TEST_P(FileOriginTest, FetchWhenTheRootVanishedIsUnavailable) {
  fs::remove_all(root_);
  EXPECT_THAT(Fetch("", "flags/checkout"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("origin.file.root")));
  Write(root_, "now a file");
  EXPECT_THAT(Fetch("tenant-a", "limit"), StatusIs(absl::StatusCode::kUnavailable));
  fs::remove(root_);
  Write(root_ / "flags" / "checkout", "back");
  auto back = Fetch("", "flags/checkout");
  ASSERT_OK(back);
  EXPECT_EQ(back->value, "back");
}

TEST_P(FileOriginTest, FetchFollowsARootSymlinkRepointed) {
  const fs::path v1 = dir_.path() / "rev1";
  const fs::path v2 = dir_.path() / "rev2";
  Write(v1 / "k", "one");
  Write(v2 / "k", "two");
  Link(v1.string(), dir_.path() / "current");
  auto origin = MakeOrigin((dir_.path() / "current").string());
  auto first = Fetch(*origin, "", "k");
  ASSERT_OK(first);
  EXPECT_EQ(first->value, "one");
  Link(v2.string(), dir_.path() / "next");
  fs::rename(dir_.path() / "next", dir_.path() / "current");
  auto second = Fetch(*origin, "", "k");
  ASSERT_OK(second);
  EXPECT_EQ(second->value, "two");
}

TEST_P(FileOriginTest, FetchStillQueuedEndsAtItsDeadline) {
  std::optional<absl::StatusOr<OriginValue>> result;
  int answers = 0;
  const absl::Time deadline = executor_.clock()->Now() + absl::Seconds(1);
  origin_->Fetch("", "flags/checkout", {.deadline = deadline, .cancel = {}},
                 [&](absl::StatusOr<OriginValue> v) {
                   result = std::move(v);
                   ++answers;
                 });
  executor_.AdvanceTime(absl::Milliseconds(999));
  EXPECT_FALSE(result.has_value());
  executor_.AdvanceTime(absl::Milliseconds(1));
  ASSERT_TRUE(result.has_value());
  EXPECT_THAT(*result, StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("flags/checkout")));
  EXPECT_EQ(io_.queued(), 0u);  // withdrawn: it will not read for nobody
  io_.RunAll();
  executor_.RunUntilIdle();
  EXPECT_EQ(answers, 1);
}

TEST_P(FileOriginTest, FetchStillQueuedEndsWhenCancelled) {
  CancellationSource cancel;
  std::optional<absl::StatusOr<OriginValue>> result;
  origin_->Fetch(
      "", "flags/checkout",
      {.deadline = executor_.clock()->Now() + absl::Seconds(10), .cancel = cancel.token()},
      [&](absl::StatusOr<OriginValue> v) { result = std::move(v); });
  cancel.Cancel();
  EXPECT_FALSE(result.has_value());  // never inline on the cancelling thread
  executor_.RunUntilIdle();
  ASSERT_TRUE(result.has_value());
  EXPECT_THAT(*result, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(io_.queued(), 0u);
  EXPECT_EQ(executor_.pending_timers(), 0u);
}

TEST_P(FileOriginTest, FetchPastItsDeadlineOrCancelledNeverQueues) {
  CancellationSource cancel;
  cancel.Cancel();
  std::optional<absl::StatusOr<OriginValue>> result;
  origin_->Fetch("", "flags/checkout",
                 {.deadline = absl::InfiniteFuture(), .cancel = cancel.token()},
                 [&](absl::StatusOr<OriginValue> v) { result = std::move(v); });
  EXPECT_THAT(result.value(), StatusIs(absl::StatusCode::kCancelled));
  result.reset();
  origin_->Fetch("", "flags/checkout", {.deadline = executor_.clock()->Now(), .cancel = {}},
                 [&](absl::StatusOr<OriginValue> v) { result = std::move(v); });
  EXPECT_THAT(result.value(), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(io_.queued(), 0u);
}

TEST_P(FileOriginTest, FetchAnsweredByTheReadCancelsItsTimer) {
  std::optional<absl::StatusOr<OriginValue>> result;
  origin_->Fetch("", "flags/checkout",
                 {.deadline = executor_.clock()->Now() + absl::Seconds(5), .cancel = {}},
                 [&](absl::StatusOr<OriginValue> v) { result = std::move(v); });
  EXPECT_EQ(executor_.pending_timers(), 1u);
  io_.RunAll();
  executor_.RunUntilIdle();
  ASSERT_TRUE(result.has_value());
  ASSERT_OK(*result);
  EXPECT_EQ(executor_.pending_timers(), 0u);
}

TEST_P(FileOriginTest, FetchRefusedWhenTheReadQueueIsFull) {
  testing::ManualBlockingPool small(/*max_queued=*/1);
  FileOriginOptions options;
  options.root = root_.string();
  options.use_openat2 = GetParam();
  auto origin = *NewFileOrigin(options, &small, &executor_);
  origin->Fetch("", "flags/checkout", {}, [](absl::StatusOr<OriginValue>) {});
  std::optional<absl::StatusOr<OriginValue>> refused;
  origin->Fetch("", "flags/checkout", {}, [&](absl::StatusOr<OriginValue> v) { refused = v; });
  ASSERT_TRUE(refused.has_value());
  EXPECT_THAT(*refused, StatusIs(absl::StatusCode::kResourceExhausted,
                                 HasSubstr("origin.file.max_queued_reads")));
  small.RunAll();
  executor_.RunUntilIdle();
}

TEST_P(FileOriginTest, ReadsQueuedWhenTheOriginIsDestroyedStillAnswer) {
  std::optional<absl::StatusOr<OriginValue>> result;
  origin_->Fetch("", "flags/checkout", {},
                 [&](absl::StatusOr<OriginValue> v) { result = std::move(v); });
  origin_.reset();
  io_.RunAll();
  executor_.RunUntilIdle();
  ASSERT_TRUE(result.has_value());
  EXPECT_OK(*result);
}

// Real threads: a disk that hangs holds the I/O threads, not the executor,
// so timers (hedge delays, deadlines) keep firing and queued reads end at
// their deadline.
TEST(FileOriginThreadsTest, AStuckDiskDelaysNeitherTimersNorDeadlines) {
  TempDir dir;
  Write(dir.path() / "k", "v");
  auto io = ThreadBlockingPool::Create({.threads = 1, .max_queued = 8, .name = "test-io"});
  auto executor = ThreadPoolExecutor::Create(1, "test");
  absl::Notification stuck, release;
  ASSERT_OK(io->TrySchedule([&] {  // a read that does not come back
    stuck.Notify();
    release.WaitForNotification();
  }));
  stuck.WaitForNotification();
  FileOriginOptions options;
  options.root = dir.path().string();
  auto origin = *NewFileOrigin(options, io.get(), executor.get());

  absl::Notification timer_fired;
  executor->ScheduleAfter(absl::Milliseconds(1), [&] { timer_fired.Notify(); });
  absl::Notification answered;
  absl::StatusOr<OriginValue> result;
  origin->Fetch("", "k", {.deadline = absl::Now() + absl::Milliseconds(100), .cancel = {}},
                [&](absl::StatusOr<OriginValue> v) {
                  result = std::move(v);
                  answered.Notify();
                });
  // Generous bounds for a loaded machine; both happen while the disk hangs.
  EXPECT_TRUE(timer_fired.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_TRUE(answered.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(io->queued(), 0);
  release.Notify();
}

TEST(NewFileOriginTest, RejectsMissingRoot) {
  testing::ManualBlockingPool io;
  testing::ManualExecutor executor;
  FileOriginOptions options;
  options.root = "/nonexistent/fanout";
  EXPECT_THAT(NewFileOrigin(options, &io, &executor),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("origin.file.root")));
}

TEST(ParseFileSymlinksTest, AcceptsBothSpellingsAndNamesTheKeyOtherwise) {
  EXPECT_EQ(*ParseFileSymlinks("within_root"), FileSymlinks::kWithinRoot);
  EXPECT_EQ(*ParseFileSymlinks("deny"), FileSymlinks::kDeny);
  EXPECT_THAT(ParseFileSymlinks("follow"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("origin.file.symlinks")));
}

TEST(FileOriginPathTest, MapsNamespacesBelowTheNamespaceFolder) {
  EXPECT_EQ(*FileOriginPath("", "flags/x"), "flags/x");
  EXPECT_EQ(*FileOriginPath("tenant-acme", "flags/x"), "@ns/tenant-acme/flags/x");
  EXPECT_THAT(FileOriginPath("", "@ns/tenant-acme/flags/x"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // "@ns" deeper in a key is an ordinary folder.
  EXPECT_EQ(*FileOriginPath("", "flags/@ns/x"), "flags/@ns/x");
}

}  // namespace
}  // namespace fanout::cache
