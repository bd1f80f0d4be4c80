#include "cache/origins/file_watch.h"

#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::StatusIs;
using ::fanout::testing::TempDir;
using ::fanout::testing::WriteFile;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

// How long a change may take to be reported on a loaded machine (the
// watch's own delay is tens of milliseconds).
constexpr absl::Duration kPatience = absl::Seconds(20);

// What a watch reported, as "ns/key" ("/key" in the default namespace).
class Recorder {
 public:
  void Add(const OriginChange& change) {
    absl::MutexLock l(&mu_);
    EXPECT_TRUE(change.prefix.empty());
    for (const std::string& key : change.keys) seen_.insert(absl::StrCat(change.ns, "/", key));
  }
  void Rescanned(bool root_found) {
    absl::MutexLock l(&mu_);
    ++rescans_;
    if (!root_found) ++missing_;
  }

  // Waits until `name` was reported (bounded); whether it was.
  bool WaitFor(const std::string& name) {
    struct Wanted {
      Recorder* recorder;
      const std::string* name;
      static bool Seen(Wanted* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return w->recorder->seen_.contains(*w->name);  // under mu_: Await holds it
      }
    } wanted{this, &name};
    absl::MutexLock l(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&Wanted::Seen, &wanted), kPatience);
  }
  // Waits until a rescan found the root missing (bounded).
  bool WaitForMissingRoot() {
    absl::MutexLock l(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(this, &Recorder::RootMissingLocked), kPatience);
  }
  std::set<std::string> Seen() {
    absl::MutexLock l(&mu_);
    return seen_;
  }
  void Clear() {
    absl::MutexLock l(&mu_);
    seen_.clear();
  }

 private:
  bool RootMissingLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return missing_ > 0; }

  absl::Mutex mu_;
  std::set<std::string> seen_ ABSL_GUARDED_BY(mu_);
  int rescans_ ABSL_GUARDED_BY(mu_) = 0;
  int missing_ ABSL_GUARDED_BY(mu_) = 0;
};

// Every test runs over both resolvers: the kernel's (openat2) and the
// portable one.
class FileWatchTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    root_ = dir_.path() / "root";
    WriteFile(root_ / "flags" / "checkout", "on");
    WriteFile(root_ / "flags" / "search", "off");
    WriteFile(root_ / "@ns" / "tenant-a" / "limit", "42");
    WriteFile(dir_.path() / "outside" / "secret", "s");
  }

  FileWatchOptions Options() {
    FileWatchOptions o;
    o.root = root_.string();
    o.use_openat2 = GetParam();
    o.debounce = absl::Milliseconds(10);
    o.max_delay = absl::Milliseconds(100);
    o.root_retry = absl::Milliseconds(20);
    o.on_rescan = [this](bool found) { recorder_.Rescanned(found); };
    return o;
  }

  void Start() { Start(Options()); }
  void Start(FileWatchOptions o) {
    absl::StatusOr<std::unique_ptr<OriginWatch>> watch =
        StartFileWatch(std::move(o), [this](OriginChange c) { recorder_.Add(c); });
    ASSERT_OK(watch);
    watch_ = *std::move(watch);
  }

  // Writes a file nobody cares about but the watch, and waits for its
  // report: every change made before it has been rescanned by then.
  void Settle() {
    const std::string name = absl::StrCat("sentinel-", ++sentinels_);
    WriteFile(root_ / name, "x");
    ASSERT_TRUE(recorder_.WaitFor("/" + name)) << name;
  }

  // Replaces `path` atomically, as editors and deploy tools do.
  static void Replace(const fs::path& path, const std::string& content) {
    const fs::path tmp = path.parent_path() / (".tmp." + path.filename().string());
    WriteFile(tmp, content);
    fs::rename(tmp, path);
  }

  // Keys reported other than the sentinels.
  std::set<std::string> Reported() {
    std::set<std::string> out;
    for (const std::string& s : recorder_.Seen()) {
      if (s.rfind("/sentinel-", 0) != 0) out.insert(s);
    }
    return out;
  }

  TempDir dir_{"fanout_file_watch"};
  fs::path root_;
  Recorder recorder_;
  int sentinels_ = 0;
  std::unique_ptr<OriginWatch> watch_;
};

INSTANTIATE_TEST_SUITE_P(Resolvers, FileWatchTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Openat2" : "Portable";
                         });

TEST_P(FileWatchTest, StartReportsNothingForTheFilesAlreadyThere) {
  Start();
  Settle();
  EXPECT_TRUE(Reported().empty());
}

TEST_P(FileWatchTest, EditInPlaceReportsTheKey) {
  Start();
  WriteFile(root_ / "flags" / "checkout", "off");
  ASSERT_TRUE(recorder_.WaitFor("/flags/checkout"));
  Settle();
  EXPECT_EQ(Reported(), std::set<std::string>{"/flags/checkout"});
}

TEST_P(FileWatchTest, CreateAndDeleteReportTheKey) {
  Start();
  WriteFile(root_ / "flags" / "new", "1");
  ASSERT_TRUE(recorder_.WaitFor("/flags/new"));
  recorder_.Clear();
  fs::remove(root_ / "flags" / "search");
  ASSERT_TRUE(recorder_.WaitFor("/flags/search"));
  Settle();
  EXPECT_EQ(Reported(), std::set<std::string>{"/flags/search"});
}

TEST_P(FileWatchTest, AtomicRenameReportsOnlyTheKeyNotItsTemporaryFile) {
  Start();
  Replace(root_ / "flags" / "checkout", "off");
  ASSERT_TRUE(recorder_.WaitFor("/flags/checkout"));
  Settle();
  EXPECT_EQ(Reported(), std::set<std::string>{"/flags/checkout"});
}

TEST_P(FileWatchTest, KeysOfANamespaceAreReportedInIt) {
  Start();
  WriteFile(root_ / "@ns" / "tenant-a" / "limit", "43");
  WriteFile(root_ / "@ns" / "tenant-b" / "limit", "7");
  ASSERT_TRUE(recorder_.WaitFor("tenant-a/limit"));
  ASSERT_TRUE(recorder_.WaitFor("tenant-b/limit"));
  Settle();
  EXPECT_EQ(Reported(), (std::set<std::string>{"tenant-a/limit", "tenant-b/limit"}));
}

TEST_P(FileWatchTest, FilesInANewDirectoryAreWatchedFromThen) {
  Start();
  WriteFile(root_ / "deep" / "er" / "key", "1");
  ASSERT_TRUE(recorder_.WaitFor("/deep/er/key"));
  recorder_.Clear();
  WriteFile(root_ / "deep" / "er" / "key", "2");
  ASSERT_TRUE(recorder_.WaitFor("/deep/er/key"));
  // A directory renamed away takes its keys with it.
  recorder_.Clear();
  fs::rename(root_ / "deep", root_ / ".trash");
  ASSERT_TRUE(recorder_.WaitFor("/deep/er/key"));
}

TEST_P(FileWatchTest, ConfigMapDataSwapReportsTheKeysWhoseContentMoved) {
  // The layout kubelet writes: key -> ..data/key, ..data -> ..<timestamp>.
  fs::remove_all(root_);
  WriteFile(root_ / "..2026_01" / "a", "1");
  WriteFile(root_ / "..2026_01" / "b", "1");
  fs::create_directory_symlink("..2026_01", root_ / "..data");
  fs::create_symlink("..data/a", root_ / "a");
  fs::create_symlink("..data/b", root_ / "b");
  Start();

  // An update: a new timestamped directory, ..data swapped by a rename, the
  // old directory removed.
  WriteFile(root_ / "..2026_02" / "a", "2");
  WriteFile(root_ / "..2026_02" / "b", "1");
  fs::create_directory_symlink("..2026_02", root_ / "..data_tmp");
  fs::rename(root_ / "..data_tmp", root_ / "..data");
  fs::remove_all(root_ / "..2026_01");
  ASSERT_TRUE(recorder_.WaitFor("/a"));
  // b's file is a new one too (same bytes): reported, which costs a refetch.
  ASSERT_TRUE(recorder_.WaitFor("/b"));
  recorder_.Clear();

  // The new timestamped directory is watched: an edit in it is seen.
  WriteFile(root_ / "..2026_02" / "a", "3");
  ASSERT_TRUE(recorder_.WaitFor("/a"));
  Settle();
  EXPECT_EQ(Reported(), std::set<std::string>{"/a"});
}

TEST_P(FileWatchTest, HiddenFilesAndSymlinksOutOfTheRootAreNotKeys) {
  fs::create_directory_symlink(dir_.path() / "outside", root_ / "escape");
  fs::create_directory_symlink("../outside", root_ / "escape-relative");
  Start();
  WriteFile(root_ / "flags" / ".checkout.swp", "editor");
  WriteFile(dir_.path() / "outside" / "secret", "changed");
  WriteFile(dir_.path() / "outside" / "more", "new");
  Settle();
  EXPECT_TRUE(Reported().empty());
}

TEST_P(FileWatchTest, SymlinksAreNotFollowedWhenDenied) {
  fs::create_symlink("flags/checkout", root_ / "alias");
  FileWatchOptions o = Options();
  o.symlinks = FileSymlinks::kDeny;
  Start(std::move(o));
  WriteFile(root_ / "flags" / "checkout", "off");
  ASSERT_TRUE(recorder_.WaitFor("/flags/checkout"));
  Settle();
  EXPECT_EQ(Reported(), std::set<std::string>{"/flags/checkout"});
}

TEST_P(FileWatchTest, ASymlinkedDirectoryLoopIsWalkedOnce) {
  fs::create_directory_symlink("..", root_ / "flags" / "up");
  Start();
  WriteFile(root_ / "flags" / "checkout", "off");
  ASSERT_TRUE(recorder_.WaitFor("/flags/checkout"));
}

// A root that went away is an origin failure, not the deletion of every
// key: nothing is reported while it is gone, and when it is back only what
// differs from before.
TEST_P(FileWatchTest, ARootThatGoesAwayAndComesBackReportsOnlyWhatChanged) {
  Start();
  const fs::path away = dir_.path() / "away";
  fs::rename(root_, away);
  ASSERT_TRUE(recorder_.WaitForMissingRoot());
  EXPECT_TRUE(Reported().empty());

  WriteFile(away / "flags" / "search", "on");
  fs::rename(away, root_);
  ASSERT_TRUE(recorder_.WaitFor("/flags/search"));
  Settle();
  EXPECT_EQ(Reported(), std::set<std::string>{"/flags/search"});
}

// A root that is a symlink re-pointed at another tree (git-sync).
TEST_P(FileWatchTest, ARootSymlinkRepointedReportsTheDifferences) {
  const fs::path v1 = dir_.path() / "v1";
  const fs::path v2 = dir_.path() / "v2";
  WriteFile(v1 / "a", "1");
  WriteFile(v1 / "b", "1");
  fs::copy(v1, v2);
  WriteFile(v2 / "a", "2");
  fs::remove(v2 / "b");
  WriteFile(v2 / "c", "1");
  const fs::path link = dir_.path() / "current";
  fs::create_directory_symlink(v1, link);
  FileWatchOptions o = Options();
  o.root = link.string();
  Start(std::move(o));

  fs::create_directory_symlink(v2, dir_.path() / "current.tmp");
  fs::rename(dir_.path() / "current.tmp", link);
  ASSERT_TRUE(recorder_.WaitFor("/a"));
  ASSERT_TRUE(recorder_.WaitFor("/b"));
  ASSERT_TRUE(recorder_.WaitFor("/c"));
}

TEST_P(FileWatchTest, ATreeOverTheFileLimitIsNotWatched) {
  FileWatchOptions o = Options();
  o.max_files = 2;
  EXPECT_THAT(StartFileWatch(std::move(o), [](OriginChange) {}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("more than 2 files")));
}

TEST_P(FileWatchTest, AMissingRootFailsToStart) {
  FileWatchOptions o = Options();
  o.root = (dir_.path() / "nothing").string();
  EXPECT_THAT(StartFileWatch(std::move(o), [](OriginChange) {}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("nothing")));
}

TEST_P(FileWatchTest, NoChangeIsReportedAfterTheWatchIsDestroyed) {
  Start();
  watch_.reset();
  WriteFile(root_ / "flags" / "checkout", "off");
  // Nothing can report it any more: a watch on the same tree sees the next
  // change only.
  Recorder other;
  absl::StatusOr<std::unique_ptr<OriginWatch>> again =
      StartFileWatch(Options(), [&other](OriginChange c) { other.Add(c); });
  ASSERT_OK(again);
  WriteFile(root_ / "flags" / "search", "on");
  ASSERT_TRUE(other.WaitFor("/flags/search"));
  EXPECT_TRUE(Reported().empty());
}

}  // namespace
}  // namespace fanout::cache
