#include "cache/l1/wtinylfu_policy.h"

#include <cstdint>
#include <list>
#include <memory>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gtest/gtest.h"

namespace fanout::cache {
namespace {

struct TestNode : PolicyNode {
  uint64_t key = 0;
};

// A minimal owner of nodes, as a cache would be: each Access is a lookup
// followed, on a miss, by an insert.
class Harness {
 public:
  explicit Harness(WTinyLfuPolicyOptions options) : policy_(options) {}
  Harness(WTinyLfuPolicyOptions options, WindowSizer* sizer)
      : policy_([&] {
          options.sizer = sizer;
          return options;
        }()) {}

  // Returns true on a hit.
  bool Access(uint64_t key, uint64_t weight = 1) {
    auto it = nodes_.find(key);
    if (it != nodes_.end()) {
      policy_.RecordHit(it->second.get());
      return true;
    }
    policy_.RecordMiss(HashOf(key));
    Add(key, weight);
    return false;
  }

  // Inserts without a lookup; returns false if the policy dropped it at once.
  bool Add(uint64_t key, uint64_t weight) {
    auto node = std::make_unique<TestNode>();
    node->key = key;
    node->hash = HashOf(key);
    node->weight = weight;
    TestNode* raw = node.get();
    nodes_[key] = std::move(node);
    std::vector<PolicyNode*> evicted;
    policy_.Add(raw, &evicted);
    return Forget(evicted, raw);
  }

  bool Replace(uint64_t key, uint64_t weight) {
    auto node = std::make_unique<TestNode>();
    node->key = key;
    node->hash = HashOf(key);
    node->weight = weight;
    TestNode* raw = node.get();
    std::vector<PolicyNode*> evicted;
    policy_.Replace(nodes_.at(key).get(), raw, &evicted);
    nodes_[key] = std::move(node);
    return Forget(evicted, raw);
  }

  void Remove(uint64_t key) {
    policy_.Remove(nodes_.at(key).get());
    nodes_.erase(key);
  }

  bool Contains(uint64_t key) const { return nodes_.contains(key); }
  uint64_t TotalWeight() const {
    uint64_t total = 0;
    for (const auto& [key, node] : nodes_) total += node->weight;
    return total;
  }
  WTinyLfuPolicy& policy() { return policy_; }

  static uint64_t HashOf(uint64_t key) {
    uint64_t x = key + 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  }

 private:
  bool Forget(const std::vector<PolicyNode*>& evicted, const PolicyNode* added) {
    bool kept = true;
    for (PolicyNode* p : evicted) {
      if (p == added) kept = false;
      nodes_.erase(static_cast<TestNode*>(p)->key);
    }
    return kept;
  }

  WTinyLfuPolicy policy_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<TestNode>> nodes_;
};

WTinyLfuPolicyOptions Capacity(uint64_t capacity, bool adaptive = true) {
  WTinyLfuPolicyOptions options;
  options.capacity = capacity;
  options.adaptive_window = adaptive;
  return options;
}

TEST(WTinyLfuPolicyTest, AddWithinCapacityEvictsNothing) {
  Harness h(Capacity(100));
  for (uint64_t k = 0; k < 100; ++k) EXPECT_TRUE(h.Add(k, 1));
  for (uint64_t k = 0; k < 100; ++k) EXPECT_TRUE(h.Contains(k)) << k;
  EXPECT_EQ(h.policy().size(), 100u);
  EXPECT_EQ(h.policy().weight(), 100u);
}

TEST(WTinyLfuPolicyTest, AddStartsSmallWindowAndProtectedShare) {
  Harness h(Capacity(1000));
  EXPECT_EQ(h.policy().window_capacity(), 10u);
  EXPECT_EQ(h.policy().protected_capacity(), 792u);
}

TEST(WTinyLfuPolicyTest, AccessKeepsFrequentKeyThroughScansOfOneOffs) {
  // The hot key comes back after every 150 one-off keys: an LRU of 100
  // entries would have dropped it each time.
  constexpr uint64_t kHot = 1'000'000;
  Harness h(Capacity(100));
  h.Access(kHot);
  int hot_hits = 0;
  for (uint64_t k = 0; k < 15'000; ++k) {
    h.Access(k);
    if (k % 150 == 149) hot_hits += h.Access(kHot) ? 1 : 0;
  }
  EXPECT_GE(hot_hits, 99);  // all but, at most, the first return
}

TEST(WTinyLfuPolicyTest, AccessOfLoopLargerThanCapacityStillHits) {
  // LRU never hits here. Ties keep the resident victim, so most of the
  // capacity stays put and is hit on every lap.
  Harness h(Capacity(100));
  int hits = 0;
  for (int lap = 0; lap < 20; ++lap) {
    for (uint64_t k = 0; k < 200; ++k) hits += h.Access(k) ? 1 : 0;
  }
  EXPECT_GT(hits, 20 * 200 * 4 / 10);  // optimum is ~half
}

TEST(WTinyLfuPolicyTest, WeightNeverExceedsCapacity) {
  Harness h(Capacity(1000));
  std::mt19937_64 rng(7);
  for (int i = 0; i < 50'000; ++i) {
    const uint64_t key = rng() % 3000;
    const uint64_t weight = 1 + rng() % 40;
    if (rng() % 10 == 0 && h.Contains(key)) {
      if (rng() % 2 == 0) {
        h.Remove(key);
      } else {
        h.Replace(key, weight);
      }
    } else {
      h.Access(key, weight);
    }
    ASSERT_LE(h.policy().weight(), 1000u);
    ASSERT_EQ(h.policy().weight(), h.TotalWeight());
  }
}

TEST(WTinyLfuPolicyTest, RecordHitInProbationMovesNodeToProtected) {
  Harness h(Capacity(100));
  for (uint64_t k = 0; k < 50; ++k) h.Add(k, 1);
  ASSERT_EQ(h.policy().protected_weight(), 0u);
  h.Access(0);  // the oldest: left the window for probation
  EXPECT_EQ(h.policy().protected_weight(), 1u);
}

TEST(WTinyLfuPolicyTest, ReplaceKeepsStandingAndUpdatesWeight) {
  Harness h(Capacity(100));
  for (uint64_t k = 0; k < 50; ++k) h.Add(k, 1);
  h.Access(0);
  ASSERT_EQ(h.policy().protected_weight(), 1u);
  EXPECT_TRUE(h.Replace(0, 5));
  EXPECT_EQ(h.policy().protected_weight(), 5u);
  EXPECT_EQ(h.policy().weight(), 54u);
}

TEST(WTinyLfuPolicyTest, RemoveForgetsNode) {
  Harness h(Capacity(100));
  h.Add(1, 3);
  h.Add(2, 4);
  h.Remove(1);
  EXPECT_EQ(h.policy().size(), 1u);
  EXPECT_EQ(h.policy().weight(), 4u);
}

TEST(WTinyLfuPolicyTest, AddOfHeavyNodeEvictsSeveralLightOnes) {
  Harness h(Capacity(100));
  for (uint64_t k = 0; k < 100; ++k) h.Add(k, 1);
  // Frequent enough to beat any victim.
  for (int i = 0; i < 5; ++i) h.policy().RecordMiss(Harness::HashOf(1000));
  EXPECT_TRUE(h.Add(1000, 30));
  EXPECT_LE(h.policy().weight(), 100u);
  EXPECT_LE(h.policy().size(), 71u);
}

TEST(WTinyLfuPolicyTest, AddOfUnknownHeavyNodeIntoFullCacheDeclinesIt) {
  Harness h(Capacity(100));
  for (uint64_t k = 0; k < 100; ++k) h.Access(k);
  for (uint64_t k = 0; k < 100; ++k) h.Access(k);
  EXPECT_FALSE(h.Add(1000, 30));  // heavier than the window, never looked up
  EXPECT_FALSE(h.Contains(1000));
  EXPECT_GE(h.policy().size(), 99u);  // at most the window's last node lost a tie
}

TEST(WTinyLfuPolicyTest, AccessWithShortReuseGrowsAdaptiveWindow) {
  // Every other access is a new key, the rest reuse one of the last 60 new
  // keys: frequency tells nothing, recency everything, so the climber should
  // give the window most of the room.
  Harness adaptive(Capacity(100));
  Harness fixed(Capacity(100, /*adaptive=*/false));
  std::mt19937_64 rng(3);
  int adaptive_hits = 0;
  int fixed_hits = 0;
  for (uint64_t t = 200; t < 200'000; ++t) {
    const uint64_t key = (t % 2 == 0) ? t / 2 : t / 2 - rng() % 60;
    adaptive_hits += adaptive.Access(key) ? 1 : 0;
    fixed_hits += fixed.Access(key) ? 1 : 0;
  }
  EXPECT_EQ(fixed.policy().window_capacity(), 1u);
  EXPECT_GT(adaptive.policy().window_capacity(), 10u);
  EXPECT_GT(adaptive_hits, 5 * fixed_hits);
}

// The hits of an LRU of `capacity` keys, as the baseline.
class Lru {
 public:
  explicit Lru(size_t capacity) : capacity_(capacity) {}
  bool Access(uint64_t key) {
    auto it = where_.find(key);
    if (it != where_.end()) {
      order_.splice(order_.begin(), order_, it->second);
      return true;
    }
    order_.push_front(key);
    where_[key] = order_.begin();
    if (order_.size() > capacity_) {
      where_.erase(order_.back());
      order_.pop_back();
    }
    return false;
  }

 private:
  size_t capacity_;
  std::list<uint64_t> order_;
  absl::flat_hash_map<uint64_t, std::list<uint64_t>::iterator> where_;
};

TEST(WTinyLfuPolicyTest, AccessAfterTheHotSetRotatesKeepsUpWithLru) {
  // Skewed draws over 2000 keys that are all replaced every 60k accesses;
  // the cache holds 80% of them. The previous set's counts outlive its use,
  // so admission by frequency alone lets the new set in only through the
  // window: the window has to grow.
  constexpr uint64_t kCapacity = 1600;
  Harness policy(Capacity(kCapacity));
  Lru lru(kCapacity);
  std::mt19937_64 rng(5);
  int policy_hits = 0;
  int lru_hits = 0;
  constexpr int kAccesses = 300'000;
  for (int t = 0; t < kAccesses; ++t) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    const uint64_t key =
        static_cast<uint64_t>(t / 60'000) * 2000 + static_cast<uint64_t>(2000 * u * u * u);
    policy_hits += policy.Access(key) ? 1 : 0;
    lru_hits += lru.Access(key) ? 1 : 0;
  }
  EXPECT_GE(policy_hits, lru_hits - kAccesses / 100);
  EXPECT_GT(policy.policy().window_capacity(), kCapacity / 2);
}

TEST(WTinyLfuPolicyTest, AccessOnPlateauHoldsTheWindow) {
  // Recency first grows the window. Then half the lookups are of 50 hot keys,
  // which hit wherever they are, and half of keys never seen again, which
  // miss whatever the window: the hit ratio does not depend on the window,
  // and the window stays where it is.
  Harness h(Capacity(1000));
  std::mt19937_64 rng(9);
  for (uint64_t t = 2000; t < 300'000; ++t) {
    h.Access((t % 2 == 0) ? t / 2 : t / 2 - rng() % 200);
  }
  const uint64_t grown = h.policy().window_capacity();
  ASSERT_GT(grown, 300u);
  for (uint64_t i = 0; i < 300'000; ++i) {
    h.Access(i % 2 == 0 ? 10'000'000 + rng() % 50 : 20'000'000 + i);
  }
  EXPECT_GE(h.policy().window_capacity(), grown * 9 / 10);
}

TEST(WTinyLfuPolicyTest, AccessKeepsTheWindowAtOnePercentAtLeast) {
  // A loop larger than the cache: every window hit is wasted, so the window
  // shrinks, but not below its floor.
  Harness h(Capacity(1000));
  for (int lap = 0; lap < 100; ++lap) {
    for (uint64_t k = 0; k < 2000; ++k) h.Access(k);
  }
  EXPECT_GE(h.policy().window_capacity(), 10u);
  EXPECT_LE(h.policy().window_capacity(), 50u);
}

TEST(WTinyLfuPolicyTest, AddFollowsTheSizerItShares) {
  // Two policies of one cache: evidence gathered by one sizes both.
  WindowSizer sizer(0.01);
  Harness busy(Capacity(1000), &sizer);
  Harness idle(Capacity(1000), &sizer);
  for (uint64_t k = 0; k < 1000; ++k) idle.Add(100'000'000 + k, 1);
  std::mt19937_64 rng(2);
  for (uint64_t t = 2000; t < 200'000; ++t) {
    busy.Access((t % 2 == 0) ? t / 2 : t / 2 - rng() % 200);
  }
  ASSERT_GT(sizer.window_fraction(), 0.3);
  EXPECT_EQ(idle.policy().window_capacity(), 10u);  // not resized until its next Add
  idle.Add(200'000'000, 1);
  EXPECT_NEAR(static_cast<double>(idle.policy().window_capacity()), sizer.window_fraction() * 1000,
              1.0);
}

WindowEvidence Evidence(uint64_t lookups, uint64_t refused_returns, uint64_t main_end_hits,
                        uint64_t window_end_halves = 0) {
  WindowEvidence e;
  e.lookups = lookups;
  e.refused_returns = refused_returns;
  e.main_end_hits = main_end_hits;
  e.window_end_halves = window_end_halves;
  return e;
}

TEST(WindowSizerTest, ReportOfLopsidedSampleMovesTheShare) {
  WindowSizer sizer(0.2);
  const int id = sizer.Join();
  sizer.Report(id, Evidence(5000, 600, 0), 100);
  EXPECT_NEAR(sizer.window_fraction(), 0.45, 1e-9);  // a full step of 25%
  sizer.Report(id, Evidence(5000, 0, 600), 100);
  EXPECT_NEAR(sizer.window_fraction(), 0.2, 1e-9);
  // Window end hits that would not have won admission count as gain too.
  sizer.Report(id, Evidence(5000, 0, 0, 1200), 100);
  EXPECT_NEAR(sizer.window_fraction(), 0.45, 1e-9);
}

TEST(WindowSizerTest, ReportScalesTheStepByWhatTheDifferenceIsWorth) {
  WindowSizer sizer(0.2);
  const int id = sizer.Join();
  // 75 more hits in 5000 lookups: half of the 3% a full step takes.
  sizer.Report(id, Evidence(5000, 75, 0), 100);
  EXPECT_NEAR(sizer.window_fraction(), 0.2 + 0.25 * 0.5, 1e-9);
}

TEST(WindowSizerTest, ReportWithinNoiseHoldsTheShare) {
  WindowSizer sizer(0.3);
  const int id = sizer.Join();
  sizer.Report(id, Evidence(5000, 300, 290), 100);  // 10 < 2 * sqrt(590)
  sizer.Report(id, Evidence(5000, 0, 0), 100);
  EXPECT_DOUBLE_EQ(sizer.window_fraction(), 0.3);
}

TEST(WindowSizerTest, ReportDecidesOnceTheSampleIsComplete) {
  WindowSizer sizer(0.2);
  const int a = sizer.Join();
  const int b = sizer.Join();
  // Two policies of 10000 entries each: a sample is 10000 lookups. 100 more
  // gains in 4000 lookups are significant but not worth a full step, so they
  // wait for the rest of the sample.
  sizer.Report(a, Evidence(4000, 100, 0), 10'000);
  sizer.Report(b, Evidence(4000, 100, 0), 10'000);
  EXPECT_DOUBLE_EQ(sizer.window_fraction(), 0.2);
  sizer.Report(a, Evidence(2000, 0, 0), 10'000);
  // 200 in 10000 lookups: two thirds of a full step.
  EXPECT_NEAR(sizer.window_fraction(), 0.2 + 0.25 * 200.0 / 300.0, 1e-9);
}

TEST(WindowSizerTest, ReportOfDecisiveEvidenceEndsTheSampleEarly) {
  WindowSizer sizer(0.2);
  const int id = sizer.Join();
  sizer.Report(id, Evidence(500, 500, 0), 2000);  // too few lookups yet
  EXPECT_DOUBLE_EQ(sizer.window_fraction(), 0.2);
  sizer.Report(id, Evidence(500, 100, 0), 2000);  // 1000 of the 4000 a sample takes
  EXPECT_NEAR(sizer.window_fraction(), 0.45, 1e-9);
  // Early only once there are at least half as many lookups as entries.
  WindowSizer big(0.2);
  const int b = big.Join();
  big.Report(b, Evidence(4000, 2000, 0), 20'000);
  EXPECT_DOUBLE_EQ(big.window_fraction(), 0.2);
  big.Report(b, Evidence(6000, 0, 0), 20'000);
  EXPECT_NEAR(big.window_fraction(), 0.45, 1e-9);
}

TEST(WindowSizerTest, ReportKeepsTheShareFromOneToNinetyNinePercent) {
  WindowSizer sizer(0.5);
  const int id = sizer.Join();
  for (int i = 0; i < 10; ++i) sizer.Report(id, Evidence(5000, 0, 600), 100);
  EXPECT_DOUBLE_EQ(sizer.window_fraction(), 0.01);
  for (int i = 0; i < 10; ++i) sizer.Report(id, Evidence(5000, 600, 0), 100);
  EXPECT_DOUBLE_EQ(sizer.window_fraction(), 0.99);
  EXPECT_DOUBLE_EQ(WindowSizer(0).window_fraction(), 0.01);
}

}  // namespace
}  // namespace fanout::cache
