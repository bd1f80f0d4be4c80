// End to end: cross-pod invalidation between real fanoutd processes sharing
// a real redis-server (cache.l2), over their file origin; the link of one
// pod to Redis cut and restored through a fault proxy; Watch followed with
// `fanoutctl watch`.
#include <signal.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fault_proxy.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/subprocess.h"

namespace fanout {
namespace {

namespace fs = std::filesystem;
using ::fanout::testing::FaultProxy;
using ::fanout::testing::RedisServer;
using ::fanout::testing::RunProcess;
using ::fanout::testing::Subprocess;
using ::testing::HasSubstr;
using ::testing::Not;

// A fanoutd process (a pod) with its own config, on a free loopback port.
// `extra` goes in its invalidation section. The pods share one root; unless
// `push`, they do not watch it, so that only the bus carries changes.
class Pod : public testing::FanoutdProcess {
 public:
  Pod(const std::string& name, const std::string& root, const std::string& redis,
      const std::string& extra = "", bool push = false)
      : FanoutdProcess(
            FANOUTD_PATH,
            absl::StrCat("origin:\n  type: file\n  push: ", push ? "true" : "false",
                         "\n  file:\n    root: ", root, "\ncache:\n  l2:\n    redis: ", redis,
                         "\n    key_prefix: \"inv:\"\n", "invalidation:\n  pod: ", name,
                         "\n  heartbeat: 200ms\n  dead_after: 1s\n", extra,
                         "watch:\n  heartbeat: 200ms\nadmin:\n  listen: \"\"\n")) {}
};

testing::RunResult Ctl(const std::string& addr, std::vector<std::string> args) {
  std::vector<std::string> argv = {FANOUTCTL_PATH, "--addr=" + addr, "--timeout=10s"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv);
}

// `fanoutctl watch` on a pod, printing events as they come.
std::unique_ptr<Subprocess> Watch(const std::string& addr, const std::string& prefix) {
  return std::make_unique<Subprocess>(std::vector<std::string>{
      FANOUTCTL_PATH, "--addr=" + addr, "watch", prefix, "--watch_for=120s"});
}

// Polls `p`'s stdout until it contains `text` (bounded).
bool WaitForOut(Subprocess& p, const std::string& text,
                absl::Duration timeout = absl::Seconds(20)) {
  const absl::Time give_up = absl::Now() + timeout;
  while (absl::Now() < give_up) {
    if (absl::StrContains(p.out(), text)) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return false;
}

// Polls `p`'s stdout until `text` occurs more than `n` times (bounded).
bool WaitForMore(Subprocess& p, const std::string& text, size_t n,
                 absl::Duration timeout = absl::Seconds(20)) {
  const absl::Time give_up = absl::Now() + timeout;
  while (absl::Now() < give_up) {
    const std::string out = p.out();
    size_t count = 0;
    for (size_t at = out.find(text); at != std::string::npos; at = out.find(text, at + 1)) ++count;
    if (count > n) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return false;
}

size_t Count(Subprocess& p, const std::string& text) {
  const std::string out = p.out();
  size_t count = 0;
  for (size_t at = out.find(text); at != std::string::npos; at = out.find(text, at + 1)) ++count;
  return count;
}

// Waits until the pod `watch` follows has its link up: no DEGRADED, or a
// RECOVERED after the last one.
void WaitUntilUp(Subprocess& watch) {
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (absl::Now() < give_up) {
    const std::string out = watch.out();
    const size_t down = out.rfind("DEGRADED");
    const size_t up = out.rfind("RECOVERED");
    if (out.find("HEARTBEAT") != std::string::npos &&
        (down == std::string::npos || (up != std::string::npos && up > down))) {
      return;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  ADD_FAILURE() << "the link did not come up: " << watch.out();
}

// Cuts the link to Redis of the pod `watch` follows (which goes through
// `proxy`) and waits for the pod's DEGRADED.
void CutLink(FaultProxy& proxy, Subprocess& watch) {
  const size_t degraded = Count(watch, "DEGRADED");
  proxy.Reset();
  ASSERT_TRUE(WaitForMore(watch, "DEGRADED", degraded)) << watch.out();
}

// Waits until `pod` reads the stream: an invalidation made on `other`
// reaches its Watch stream `watch`.
void WaitUntilLinked(const std::string& other, Subprocess& watch) {
  // What is published before the pod's first read of the stream is not
  // for it (it starts with an empty cache): wait for its link first.
  WaitUntilUp(watch);
  ASSERT_EQ(Ctl(other, {"invalidate", "flags/none"}).code, 0);
  ASSERT_TRUE(WaitForOut(watch, "INVALIDATED key=flags/none")) << watch.out();
}

// Runs `get` until its value is `want` (bounded); the last result.
testing::RunResult GetUntil(const std::string& addr, const std::string& key,
                            const std::string& want, absl::Duration timeout = absl::Seconds(20)) {
  const absl::Time give_up = absl::Now() + timeout;
  testing::RunResult r;
  do {
    r = Ctl(addr, {"get", key});
    if (r.code == 0 && r.out == want + "") return r;
    absl::SleepFor(absl::Milliseconds(20));
  } while (absl::Now() < give_up);
  return r;
}

class InvalidationE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    redis_ = RedisServer::Start(&error);
    ASSERT_NE(redis_, nullptr) << error;
    root_ = testing::TempPath("inv_root");
    fs::create_directories(fs::path(root_) / "flags");
    SetValue("v1");
  }
  void TearDown() override { fs::remove_all(root_); }
  // A fault proxy in front of the Redis (null, with a failure, if none).
  std::unique_ptr<FaultProxy> StartProxy() {
    std::string error;
    std::unique_ptr<FaultProxy> proxy = FaultProxy::Start("127.0.0.1", redis_->port(), &error);
    EXPECT_NE(proxy, nullptr) << error;
    return proxy;
  }
  void SetValue(const std::string& v) { std::ofstream(fs::path(root_) / "flags" / "x") << v; }
  std::string Value(const std::string& addr) {
    testing::RunResult r = Ctl(addr, {"get", "flags/x"});
    EXPECT_EQ(r.code, 0) << r.err;
    return r.out;
  }

  std::unique_ptr<RedisServer> redis_;
  std::string root_;
};

TEST_F(InvalidationE2eTest, InvalidateOnOnePodStopsTheOthersServingTheOldValue) {
  Pod a("pod-a", root_, redis_->address());
  Pod b("pod-b", root_, redis_->address());
  Pod c("pod-c", root_, redis_->address());
  ASSERT_FALSE(a.address().empty()) << a.process().err();
  ASSERT_FALSE(b.address().empty()) << b.process().err();
  ASSERT_FALSE(c.address().empty()) << c.process().err();
  auto watch = Watch(b.address(), "flags/");
  ASSERT_TRUE(WaitForOut(*watch, "HEARTBEAT")) << watch->err();
  for (Pod* p : {&a, &b, &c}) EXPECT_EQ(Value(p->address()), "v1");
  SetValue("v2");
  // Cached: no pod reads the file again by itself.
  EXPECT_EQ(Value(b.address()), "v1");
  EXPECT_EQ(Value(c.address()), "v1");

  testing::RunResult inv = Ctl(a.address(), {"invalidate", "flags/x"});
  ASSERT_EQ(inv.code, 0) << inv.err;
  EXPECT_THAT(inv.out, HasSubstr("broadcast=true"));
  EXPECT_EQ(GetUntil(b.address(), "flags/x", "v2").out, "v2");
  EXPECT_EQ(GetUntil(c.address(), "flags/x", "v2").out, "v2");
  EXPECT_TRUE(WaitForOut(*watch, "INVALIDATED key=flags/x")) << watch->out();
}

// Pods that watch their root apply a change of it on their own: each
// invalidates it (and the shared tier's copy) with no Invalidate call.
TEST_F(InvalidationE2eTest, PodsWatchingTheRootServeAChangedFileWithoutAnInvalidate) {
  Pod a("pod-a", root_, redis_->address(), "", /*push=*/true);
  Pod b("pod-b", root_, redis_->address(), "", /*push=*/true);
  ASSERT_FALSE(a.address().empty()) << a.process().err();
  ASSERT_FALSE(b.address().empty()) << b.process().err();
  auto watch = Watch(b.address(), "flags/");
  ASSERT_TRUE(WaitForOut(*watch, "HEARTBEAT")) << watch->err();
  EXPECT_EQ(Value(a.address()), "v1");
  EXPECT_EQ(Value(b.address()), "v1");
  SetValue("v2");
  EXPECT_EQ(GetUntil(a.address(), "flags/x", "v2").out, "v2");
  EXPECT_EQ(GetUntil(b.address(), "flags/x", "v2").out, "v2");
  EXPECT_TRUE(WaitForOut(*watch, "INVALIDATED key=flags/x")) << watch->out();
}

TEST_F(InvalidationE2eTest, ALinkCutAndRestoredReplaysWhatItMissed) {
  std::unique_ptr<FaultProxy> proxy = StartProxy();
  ASSERT_NE(proxy, nullptr);
  Pod a("pod-a", root_, redis_->address());
  // A long local lifetime: only the replay can make b drop its copy.
  Pod b("pod-b", root_, proxy->address(), "  max_local_ttl: 10m\n");
  ASSERT_FALSE(a.address().empty()) << a.process().err();
  ASSERT_FALSE(b.address().empty()) << b.process().err();
  auto watch = Watch(b.address(), "flags/");
  ASSERT_TRUE(WaitForOut(*watch, "HEARTBEAT")) << watch->err();
  EXPECT_EQ(Value(b.address()), "v1");
  WaitUntilLinked(a.address(), *watch);

  ASSERT_NO_FATAL_FAILURE(CutLink(*proxy, *watch));
  SetValue("v2");
  testing::RunResult inv = Ctl(a.address(), {"invalidate", "flags/x"});
  ASSERT_EQ(inv.code, 0) << inv.err;
  EXPECT_THAT(inv.out, HasSubstr("broadcast=true"));
  // More than one read batch's worth is not needed: one missed entry.
  const size_t recovered = Count(*watch, "RECOVERED");
  proxy->Pass();
  ASSERT_TRUE(WaitForMore(*watch, "RECOVERED", recovered)) << watch->out();
  EXPECT_TRUE(WaitForOut(*watch, "INVALIDATED key=flags/x")) << watch->out();
  EXPECT_THAT(watch->out(), Not(HasSubstr("all_keys")));
  EXPECT_EQ(Value(b.address()), "v2");
}

TEST_F(InvalidationE2eTest, AGapTrimmedWhileAwayDropsTheWholeL1) {
  std::unique_ptr<FaultProxy> proxy = StartProxy();
  ASSERT_NE(proxy, nullptr);
  Pod a("pod-a", root_, redis_->address());
  Pod b("pod-b", root_, proxy->address(), "  max_local_ttl: 10m\n");
  ASSERT_FALSE(a.address().empty()) << a.process().err();
  ASSERT_FALSE(b.address().empty()) << b.process().err();
  std::ofstream(fs::path(root_) / "flags" / "y") << "y1";
  auto watch = Watch(b.address(), "flags/");
  ASSERT_TRUE(WaitForOut(*watch, "HEARTBEAT")) << watch->err();
  // b applies one entry, so that it has a position in the stream.
  WaitUntilLinked(a.address(), *watch);
  EXPECT_EQ(Value(b.address()), "v1");
  EXPECT_EQ(Ctl(b.address(), {"get", "flags/y"}).out, "y1");
  EXPECT_THAT(Ctl(b.address(), {"get", "flags/y"}).err, HasSubstr("served_by=TIER_L1"));

  ASSERT_NO_FATAL_FAILURE(CutLink(*proxy, *watch));
  SetValue("v2");
  std::ofstream(fs::path(root_) / "flags" / "y") << "y2";  // never invalidated
  ASSERT_EQ(Ctl(a.address(), {"invalidate", "flags/x"}).code, 0);
  // Everything b has not read is trimmed away.
  ASSERT_EQ(redis_->Cli({"XTRIM", "inv:inv", "MAXLEN", "0"}).code, 0);
  proxy->Pass();
  ASSERT_TRUE(WaitForOut(*watch, "all_keys")) << watch->out();
  EXPECT_EQ(Value(b.address()), "v2");
  // Dropped with the rest of L1, though no invalidation named it: read
  // again from the shared tier (which no invalidation touched either).
  testing::RunResult y = Ctl(b.address(), {"get", "flags/y"});
  EXPECT_EQ(y.out, "y1");
  EXPECT_THAT(y.err, HasSubstr("served_by=TIER_L2"));
}

TEST_F(InvalidationE2eTest, WhileTheLinkIsDownL1AnswersOnlyForMaxLocalTtl) {
  std::unique_ptr<FaultProxy> proxy = StartProxy();
  ASSERT_NE(proxy, nullptr);
  Pod b("pod-b", root_, proxy->address(), "  max_local_ttl: 1s\n");
  ASSERT_FALSE(b.address().empty()) << b.process().err();
  auto watch = Watch(b.address(), "flags/");
  ASSERT_TRUE(WaitForOut(*watch, "HEARTBEAT")) << watch->err();
  EXPECT_EQ(Value(b.address()), "v1");
  SetValue("v2");
  WaitUntilUp(*watch);
  EXPECT_EQ(Value(b.address()), "v1");  // link up: L1 answers
  ASSERT_NO_FATAL_FAILURE(CutLink(*proxy, *watch));
  // No invalidation anywhere: only the local lifetime ends the copy.
  EXPECT_EQ(GetUntil(b.address(), "flags/x", "v2").out, "v2");
}

TEST_F(InvalidationE2eTest, AFrozenRedisIsDetectedByHeartbeatAndRecovered) {
  Pod b("pod-b", root_, redis_->address(), "  max_local_ttl: 10m\n");
  Pod a("pod-a", root_, redis_->address());
  ASSERT_FALSE(b.address().empty()) << b.process().err();
  ASSERT_FALSE(a.address().empty()) << a.process().err();
  auto watch = Watch(b.address(), "flags/");
  ASSERT_TRUE(WaitForOut(*watch, "HEARTBEAT")) << watch->err();
  EXPECT_EQ(Value(b.address()), "v1");
  WaitUntilLinked(a.address(), *watch);
  const size_t degraded = Count(*watch, "DEGRADED");
  redis_->Signal(SIGSTOP);
  ASSERT_TRUE(WaitForMore(*watch, "DEGRADED", degraded)) << watch->out();
  const size_t recovered = Count(*watch, "RECOVERED");
  redis_->Signal(SIGCONT);
  ASSERT_TRUE(WaitForMore(*watch, "RECOVERED", recovered)) << watch->out();
  SetValue("v2");
  ASSERT_EQ(Ctl(a.address(), {"invalidate", "flags/x"}).code, 0);
  EXPECT_EQ(GetUntil(b.address(), "flags/x", "v2").out, "v2");
}

TEST_F(InvalidationE2eTest, ARedisKilledAndRestartedEmptyIsAGap) {
  Pod a("pod-a", root_, redis_->address());
  Pod b("pod-b", root_, redis_->address(), "  max_local_ttl: 10m\n");
  ASSERT_FALSE(a.address().empty()) << a.process().err();
  ASSERT_FALSE(b.address().empty()) << b.process().err();
  auto watch = Watch(b.address(), "flags/");
  ASSERT_TRUE(WaitForOut(*watch, "HEARTBEAT")) << watch->err();
  WaitUntilLinked(a.address(), *watch);
  EXPECT_EQ(Value(b.address()), "v1");
  SetValue("v2");
  std::string error;
  ASSERT_TRUE(redis_->Restart(&error)) << error;  // kill -9: the stream is gone
  ASSERT_TRUE(WaitForOut(*watch, "all_keys")) << watch->out();
  EXPECT_EQ(Value(b.address()), "v2");
}

TEST_F(InvalidationE2eTest, BadInvalidateAndWatchRequestsNameTheField) {
  Pod a("pod-a", root_, redis_->address());
  ASSERT_FALSE(a.address().empty()) << a.process().err();
  testing::RunResult empty = Ctl(a.address(), {"invalidate", ""});
  EXPECT_NE(empty.code, 0);
  EXPECT_THAT(empty.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(empty.err, HasSubstr("keys[0]"));
  testing::RunResult long_prefix =
      Ctl(a.address(), {"invalidate", "--prefix=" + std::string(100000, 'p')});
  EXPECT_THAT(long_prefix.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(long_prefix.err, HasSubstr("prefix"));
  testing::RunResult watch =
      Ctl(a.address(), {"watch", std::string(100000, 'p'), "--watch_for=10s"});
  EXPECT_THAT(watch.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(watch.err, HasSubstr("prefixes[0]"));
}

}  // namespace
}  // namespace fanout
