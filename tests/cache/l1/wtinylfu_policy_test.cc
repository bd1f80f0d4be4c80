#include "cache/l1/wtinylfu_policy.h"

#include <cstdint>
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

}  // namespace
}  // namespace fanout::cache
