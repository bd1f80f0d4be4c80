#include "bench/sim/simulate.h"

#include <vector>

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

}  // namespace
}  // namespace fanout::sim
