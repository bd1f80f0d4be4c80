// The survival tier (L3) in the real fanoutd binary on its embedded default,
// as `make run` uses it: a restarted daemon answers the sample keys from L3,
// and a corrupted L3 directory never stops it from starting.
#include <signal.h>

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/subprocess.h"

namespace fanout {
namespace {

using ::fanout::testing::RunProcess;
using ::fanout::testing::Subprocess;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

// A working directory like a checkout's: deploy/ (the sample keys) links to
// the sources; .fanout/l3 is created by fanoutd.
class WorkDir {
 public:
  WorkDir() : path_(testing::TempPath("l3_workdir")) {
    fs::create_directories(path_);
    fs::create_directory_symlink(std::string(FANOUT_SOURCE_DIR) + "/deploy", path_ + "/deploy");
  }
  ~WorkDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// fanoutd on the embedded default, on a free port, in `cwd`.
class Daemon : public testing::FanoutdProcess {
 public:
  explicit Daemon(const std::string& cwd) : FanoutdProcess(FANOUTD_PATH, "", cwd) {}
};

testing::RunResult Ctl(const std::string& addr, std::vector<std::string> args) {
  std::vector<std::string> argv = {FANOUTCTL_PATH, "--addr=" + addr};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv);
}

const std::vector<std::string> kSampleKeys = {"flags/new-checkout", "flags/dark-mode",
                                              "endpoints/payments"};

TEST(L3E2eTest, RestartedDaemonAnswersTheSampleKeysFromL3) {
  WorkDir work;
  {
    Daemon d(work.path());
    ASSERT_FALSE(d.address().empty()) << d.process().err();
    for (const std::string& key : kSampleKeys) {
      auto r = Ctl(d.address(), {"get", key});
      EXPECT_EQ(r.code, 0) << r.err;
      EXPECT_THAT(r.err, HasSubstr("served_by=TIER_ORIGIN")) << key;
    }
    d.process().Signal(SIGTERM);
    EXPECT_EQ(d.process().Wait(absl::Seconds(30)), 0) << d.process().err();
  }
  EXPECT_TRUE(fs::exists(fs::path(work.path()) / ".fanout" / "l3" / "FANOUT_L3"));

  Daemon again(work.path());
  ASSERT_FALSE(again.address().empty()) << again.process().err();
  auto r = Ctl(again.address(), {"batch-get", kSampleKeys[0], kSampleKeys[1], kSampleKeys[2]});
  EXPECT_EQ(r.code, 0) << r.err;
  for (const std::string& key : kSampleKeys) {
    EXPECT_THAT(r.out, HasSubstr(key + "\tTIER_L3\t")) << r.out;
  }
  auto one = Ctl(again.address(), {"get", "flags/new-checkout"});
  EXPECT_THAT(one.out, HasSubstr("\"rollout_percent\": 25"));
}

TEST(L3E2eTest, CorruptedL3IsMovedAsideAndTheDaemonServes) {
  WorkDir work;
  {
    Daemon d(work.path());
    ASSERT_FALSE(d.address().empty()) << d.process().err();
    EXPECT_EQ(Ctl(d.address(), {"get", kSampleKeys[0]}).code, 0);
    d.process().Signal(SIGKILL);
    d.process().Wait(absl::Seconds(30));
  }
  const fs::path l3 = fs::path(work.path()) / ".fanout" / "l3";
  ASSERT_TRUE(fs::exists(l3 / "CURRENT"));
  std::ofstream(l3 / "CURRENT", std::ios::trunc) << "not a manifest";

  for (int start = 0; start < 2; ++start) {  // and again: no loop on it
    Daemon d(work.path());
    ASSERT_FALSE(d.address().empty()) << d.process().err();
    if (start == 0) {
      EXPECT_THAT(d.process().err(), HasSubstr("moved it aside"));
    }
    auto r = Ctl(d.address(), {"get", kSampleKeys[0]});
    EXPECT_EQ(r.code, 0) << r.err;
    auto health = Ctl(d.address(), {"health"});
    EXPECT_EQ(health.code, 0) << health.out;
  }
  int moved = 0;
  for (const auto& e : fs::directory_iterator(l3.parent_path())) {
    moved += e.path().filename().string().rfind("l3.corrupt-", 0) == 0 ? 1 : 0;
  }
  EXPECT_EQ(moved, 1);
}

}  // namespace
}  // namespace fanout
