// The outage drill, time-compressed (ttl 1 s), on real processes: fanoutd
// with L3 on disk in front of fanout-outage-origin, a real gRPC origin.
// Keys are filled while the origin is up; the origin dies (kill -9) or hangs
// (SIGSTOP); every key keeps answering, flagged stale, within the caller's
// deadline; fanoutd is killed (kill -9) and restarted while the origin is
// still down, and every key answers from L3; the origin comes back and the
// keys are fresh again.
#include "tests/integration/outage_drill.h"

#include <signal.h>

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fanout {
namespace {

using ::fanout::testing::DrillConfig;
using ::fanout::testing::DrillDaemon;
using ::fanout::testing::DrillKeys;
using ::fanout::testing::DrillOrigin;
using ::fanout::testing::DrillTally;
using ::fanout::testing::GetAll;
namespace fs = std::filesystem;

constexpr absl::Duration kDeadline = absl::Seconds(1);  // every Get's (the caller's)

class OutageDrillTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempPath("outage_drill");
    fs::create_directories(dir_);
    origin_ = std::make_unique<DrillOrigin>(OUTAGE_ORIGIN_PATH, "127.0.0.1:0", 1);
    ASSERT_FALSE(origin_->address().empty()) << origin_->process().err();
    DrillConfig c;
    c.l3_path = dir_ + "/l3";
    c.origin = origin_->address();
    config_ = dir_ + "/fanoutd.yaml";
    std::ofstream(config_) << testing::DrillYaml(c);
  }
  void TearDown() override {
    daemon_.reset();
    origin_.reset();
    fs::remove_all(dir_);
  }

  void StartDaemon() {
    daemon_ = std::make_unique<DrillDaemon>(FANOUTD_PATH, config_);
    ASSERT_FALSE(daemon_->address().empty()) << daemon_->process().err();
    ASSERT_FALSE(daemon_->admin().empty()) << daemon_->process().err();
  }

  // Fills every key from the origin and waits until L3 holds them all.
  void Fill() {
    DrillTally filled = GetAll(daemon_->address(), keys_, kDeadline, 8);
    ASSERT_EQ(filled.answered, kKeys) << filled.Describe();
    EXPECT_EQ(filled.tiers["TIER_ORIGIN"], kKeys) << filled.Describe();
    EXPECT_EQ(filled.stale, 0) << filled.Describe();
    ASSERT_TRUE(daemon_->WaitForL3Stores(kKeys))
        << "L3 stores: " << daemon_->Metric("fanout_tier_stores_total{tier=\"l3\"}");
  }

  // Passes over the keys until every one answers stale (their ttl has
  // passed), bounded. The last pass.
  DrillTally UntilAllStale() {
    DrillTally t;
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    do {
      t = GetAll(daemon_->address(), keys_, kDeadline, 16);
    } while (t.stale < kKeys && t.failed == 0 && absl::Now() < give_up);
    return t;
  }

  void KillDaemonAndRestart() {
    daemon_->process().Signal(SIGKILL);
    ASSERT_TRUE(daemon_->process().Wait(absl::Seconds(10)).has_value());
    StartDaemon();
  }

  static constexpr int kKeys = 200;
  const std::vector<std::string> keys_ = DrillKeys(kKeys);
  std::string dir_;
  std::string config_;
  std::unique_ptr<DrillOrigin> origin_;
  std::unique_ptr<DrillDaemon> daemon_;
};

TEST_F(OutageDrillTest, KilledOriginKeysStayAnsweredStaleThenFromL3AfterARestartThenFresh) {
  StartDaemon();
  Fill();
  const std::string address = origin_->address();
  origin_->process().Signal(SIGKILL);
  ASSERT_TRUE(origin_->process().Wait(absl::Seconds(10)).has_value());

  // The outage: every key answers from what fanoutd holds, flagged stale.
  DrillTally outage = UntilAllStale();
  EXPECT_EQ(outage.answered, kKeys) << outage.Describe();
  EXPECT_EQ(outage.stale, kKeys) << outage.Describe();
  EXPECT_EQ(outage.failed, 0) << outage.Describe();
  EXPECT_EQ(outage.generations[1], kKeys) << outage.Describe();

  // kill -9 mid-outage, restart with the origin still down: L3 answers.
  KillDaemonAndRestart();
  DrillTally restarted = GetAll(daemon_->address(), keys_, kDeadline, 16);
  EXPECT_EQ(restarted.answered, kKeys) << restarted.Describe();
  EXPECT_EQ(restarted.tiers["TIER_L3"], kKeys) << restarted.Describe();
  EXPECT_EQ(restarted.stale, kKeys) << restarted.Describe();
  EXPECT_EQ(restarted.generations[1], kKeys) << restarted.Describe();

  // The origin comes back (a new generation of values): fresh again.
  origin_ = std::make_unique<DrillOrigin>(OUTAGE_ORIGIN_PATH, address, 2);
  ASSERT_EQ(origin_->address(), address) << origin_->process().err();
  DrillTally back;
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  do {
    back = GetAll(daemon_->address(), keys_, kDeadline, 16);
  } while (back.generations[2] < kKeys && absl::Now() < give_up);
  EXPECT_EQ(back.generations[2], kKeys) << back.Describe();
  EXPECT_EQ(back.stale, 0) << back.Describe();
  EXPECT_EQ(back.failed, 0) << back.Describe();
}

TEST_F(OutageDrillTest, HungOriginKeysAnswerStaleWithinTheCallersDeadlineAndFromL3AfterARestart) {
  StartDaemon();
  Fill();
  origin_->process().Signal(SIGSTOP);  // accepts connections, never answers

  DrillTally outage = UntilAllStale();
  EXPECT_EQ(outage.answered, kKeys) << outage.Describe();
  EXPECT_EQ(outage.stale, kKeys) << outage.Describe();
  EXPECT_EQ(outage.failed, 0) << outage.Describe();

  KillDaemonAndRestart();
  DrillTally restarted = GetAll(daemon_->address(), keys_, kDeadline, 16);
  EXPECT_EQ(restarted.answered, kKeys) << restarted.Describe();
  EXPECT_EQ(restarted.tiers["TIER_L3"], kKeys) << restarted.Describe();
  EXPECT_EQ(restarted.stale, kKeys) << restarted.Describe();
  EXPECT_EQ(restarted.failed, 0) << restarted.Describe();

  origin_->process().Signal(SIGCONT);
  DrillTally back;
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  do {
    back = GetAll(daemon_->address(), keys_, kDeadline, 16);
  } while (back.stale > 0 && absl::Now() < give_up);
  EXPECT_EQ(back.answered, kKeys) << back.Describe();
  EXPECT_EQ(back.stale, 0) << back.Describe();
}

}  // namespace
}  // namespace fanout
