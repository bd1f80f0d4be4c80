#include <vector>

#include "bench/sim/simulate.h"
#include "bench/sim/trace.h"
#include "gtest/gtest.h"

namespace fanout::sim {
namespace {

TEST(SimulateLruTest, SimulateLruCountsHitsOnTinyTrace) {
  // Capacity 2: 1m 2m 1h 3m(evicts 2) 1h 2m(evicts 3) 3m(evicts 1) 2h
  const std::vector<uint64_t> trace = {1, 2, 1, 3, 1, 2, 3, 2};
  const SimResult r = SimulateLru(trace, 2);
  EXPECT_EQ(r.accesses, 8u);
  EXPECT_EQ(r.hits, 3u);
  EXPECT_DOUBLE_EQ(r.hit_ratio(), 3.0 / 8.0);
}

TEST(SimulateLruTest, SimulateLruOfLoopLargerThanCapacityNeverHits) {
  const std::vector<uint64_t> trace = {1, 2, 3, 1, 2, 3, 1, 2, 3};
  EXPECT_EQ(SimulateLru(trace, 2).hits, 0u);
  EXPECT_EQ(SimulateLru(trace, 3).hits, 6u);
}

TEST(SimulateOptTest, SimulateOptEvictsFurthestNextUseOnTinyTrace) {
  // Capacity 2: 1m 2m 1h 3m (next uses 1@4, 2@5, 3@6: drop 3) 1h 2h
  //             3m (1 and 3 never come back, 2@7: drop one of them) 2h.
  const std::vector<uint64_t> trace = {1, 2, 1, 3, 1, 2, 3, 2};
  EXPECT_EQ(SimulateOpt(trace, 2).hits, 4u);
  EXPECT_EQ(SimulateLru(trace, 2).hits, 3u);
}

TEST(SimulateOptTest, SimulateOptOfLoopKeepsAllButOne) {
  // Keys 1..3 looped with room for 2: the optimum keeps 1 and 2 and lets 3,
  // which always comes back last, pass through.
  //   1m 2m 3m(1@3 2@4 3@5: drop 3) 1h 2h 3m(1@6 2@7 3@8: drop 3) 1h 2h 3m
  const std::vector<uint64_t> trace = {1, 2, 3, 1, 2, 3, 1, 2, 3};
  EXPECT_EQ(SimulateOpt(trace, 2).hits, 4u);
}

TEST(SimulateOptTest, SimulateOptWithZeroCapacityNeverHits) {
  const std::vector<uint64_t> trace = {1, 1, 1};
  EXPECT_EQ(SimulateOpt(trace, 0).hits, 0u);
  EXPECT_EQ(SimulateOpt(trace, 1).hits, 2u);
}

TEST(SimulateLfuTest, SimulateLfuKeepsMostFrequentOnTinyTrace) {
  // Capacity 2. When 3 arrives, 2 and 3 both have count 1: the older, 2,
  // goes. 2 returns with count 2 and drops 3 (count 1).
  //   1m 2m 1h 1h 3m(drop 2) 1h 2m(drop 3) 2h
  const std::vector<uint64_t> trace = {1, 2, 1, 1, 3, 1, 2, 2};
  EXPECT_EQ(SimulateLfu(trace, 2).hits, 4u);
  EXPECT_EQ(SimulateLru(trace, 2).hits, 4u);
}

TEST(SimulateLfuTest, SimulateLfuDeclinesKeyRarerThanResidents) {
  // 1 and 2 are each seen twice; every later one-off key is dropped at once,
  // so 1 and 2 keep hitting (LRU would lose them to the one-offs).
  const std::vector<uint64_t> trace = {1, 2, 1, 2, 10, 11, 1, 2, 12, 13, 1, 2};
  EXPECT_EQ(SimulateLfu(trace, 2).hits, 6u);
  EXPECT_EQ(SimulateLru(trace, 2).hits, 2u);
}

TEST(SimulateWTinyLfuTest, SimulateWTinyLfuHitsOnLoopWhereLruCannot) {
  SyntheticSpec spec;
  spec.kind = SyntheticSpec::Kind::kLoop;
  spec.keys = 500;
  spec.length = 50'000;
  const Trace trace = GenerateTrace(spec);
  const SimResult opt = SimulateOpt(trace, 250);
  const SimResult ours = SimulateWTinyLfu(trace, 250);
  EXPECT_EQ(SimulateLru(trace, 250).hits, 0u);
  EXPECT_GT(ours.hits, opt.hits * 8 / 10);
  EXPECT_LE(ours.hits, opt.hits);
}

TEST(SimulateWTinyLfuTest, SimulateWTinyLfuIsRepeatableAndShardable) {
  SyntheticSpec spec;
  spec.alpha = 1.0;
  spec.length = 100'000;
  spec.keys = 10'000;
  const Trace trace = GenerateTrace(spec);
  const SimResult a = SimulateWTinyLfu(trace, 500);
  EXPECT_EQ(SimulateWTinyLfu(trace, 500).hits, a.hits);
  const SimResult sharded = SimulateWTinyLfu(trace, 500, {}, /*shards=*/4);
  EXPECT_EQ(sharded.accesses, a.accesses);
  EXPECT_GT(sharded.hits, 0u);
  EXPECT_GT(a.hits, SimulateLru(trace, 500).hits);
  EXPECT_LE(a.hits, SimulateOpt(trace, 500).hits);
}

// Hit ratio points of `a` over `b`.
double PointsOver(const SimResult& a, const SimResult& b) {
  return 100 * (a.hit_ratio() - b.hit_ratio());
}

TEST(SimulateWTinyLfuTest, SimulateWTinyLfuKeepsUpWithLruOnRecencyTrace) {
  // Reuse at a geometric stack depth of mean 60: frequency says nothing.
  SyntheticSpec spec;
  spec.kind = SyntheticSpec::Kind::kRecency;
  spec.length = 300'000;
  const Trace trace = GenerateTrace(spec);
  for (uint64_t size : {500, 4000}) {
    EXPECT_GE(PointsOver(SimulateWTinyLfu(trace, size), SimulateLru(trace, size)), -1) << size;
  }
}

TEST(SimulateWTinyLfuTest, SimulateWTinyLfuKeepsUpWithLruWhenTheHotSetRotates) {
  SyntheticSpec spec;
  spec.kind = SyntheticSpec::Kind::kShiftZipf;
  spec.keys = 4000;
  spec.phase_length = 40'000;
  spec.length = 240'000;
  const Trace trace = GenerateTrace(spec);
  EXPECT_GE(PointsOver(SimulateWTinyLfu(trace, 3200), SimulateLru(trace, 3200)), -1);
  // Where the cache holds a small part of the set, frequency still wins.
  EXPECT_GE(PointsOver(SimulateWTinyLfu(trace, 400), SimulateLru(trace, 400)), 2);
}

TEST(SimulateWTinyLfuTest, SimulateWTinyLfuShardsSizeTheirWindowsTogether) {
  // Alone, each of 16 shards would gather its samples 16 times as slowly.
  SyntheticSpec spec;
  spec.kind = SyntheticSpec::Kind::kRecency;
  spec.new_fraction = 0.1;
  spec.mean_depth = 400;
  spec.length = 300'000;
  const Trace trace = GenerateTrace(spec);
  const SimResult sharded = SimulateWTinyLfu(trace, 4000, {}, /*shards=*/16);
  EXPECT_GE(PointsOver(sharded, SimulateLru(trace, 4000)), -1);
}

TEST(SimulateWTinyLfuTest, SimulateWTinyLfuProbeFollowsTheWindow) {
  SyntheticSpec spec;
  spec.kind = SyntheticSpec::Kind::kRecency;
  spec.length = 100'000;
  const Trace trace = GenerateTrace(spec);
  std::vector<uint64_t> accesses;
  std::vector<uint64_t> windows;
  const SimProbe probe = [&](const SimResult& so_far, const cache::WTinyLfuPolicy& policy) {
    accesses.push_back(so_far.accesses);
    windows.push_back(policy.window_capacity());
  };
  const SimResult r = SimulateWTinyLfu(trace, 1000, {}, 1, 0, probe, 30'000);
  EXPECT_EQ(accesses, (std::vector<uint64_t>{30'000, 60'000, 90'000, 100'000}));
  EXPECT_EQ(r.accesses, 100'000u);
  EXPECT_GT(windows.back(), 500u);  // recency: most of the cache
}

}  // namespace
}  // namespace fanout::sim
