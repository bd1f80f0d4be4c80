// The W-TinyLFU eviction and admission policy, without storage: it orders
// nodes that its caller owns and tells the caller which ones to drop. The
// L1 cache (wtinylfu_cache.h) runs one per shard with byte weights; the
// hit-ratio simulator (bench/sim) runs the same code with unit weights.
//
// Layout of the budget (weights, e.g. bytes):
//   window     an LRU that every new node enters; about 1% of the capacity
//              (adapted at run time, see below)
//   probation  the main region's entry: nodes that left the window or were
//              demoted from protected
//   protected  nodes hit while in probation; at most ~80% of the main region
// When the window overflows, its least recent nodes move to probation as
// candidates. While the total is over capacity a candidate is weighed against
// probation's least recent node (the victim) by their frequency in a
// FrequencySketch sized at two words per entry (aging every ~20 x entries
// lookups): the more frequent stays, ties keep the victim. Keeping ties is
// what makes loops larger than the cache hit at all.
//
// Hash flooding: the policy trusts the caller's hashes. A caller whose keys
// come from outside must hash with a per-process seed (absl::Hash does), so
// that nobody can pick keys whose counters collide with a hot victim's. (This
// is why there is no random admission of warm candidates, which costs hit
// ratio on loops.)
//
// Adaptive window (hill climbing): once the cache has first filled, hits and
// misses are sampled over 10 x entries lookups; the window then moves by a
// step (first 6.25% of the capacity, growing; decaying by 2% a step;
// restarting after a hit ratio change of 5 points) in the direction that last
// improved the hit ratio. A change within sampling noise is no direction:
// then the window grows if candidates refused admission came back more often
// than lookups hit, and shrinks otherwise.
//
// Memory besides the caller's nodes: 16 bytes of sketch and 8 bytes of
// recently refused hashes per entry.
//
// Not thread-safe: callers serialize every call.
#ifndef FANOUT_CACHE_L1_WTINYLFU_POLICY_H_
#define FANOUT_CACHE_L1_WTINYLFU_POLICY_H_

#include <cstdint>
#include <vector>

#include "cache/l1/frequency_sketch.h"

namespace fanout::cache {

// What the policy tracks about one entry; callers embed it in their own node
// (e.g. `struct Node : PolicyNode { ... }`). The fields are the policy's while
// the node is tracked; callers set `hash` and `weight` before Add().
struct PolicyNode {
  uint64_t hash = 0;    // the key's hash
  uint64_t weight = 0;  // charge against the capacity; positive

  // Intrusive list links and region; owned by the policy.
  PolicyNode* prev = nullptr;
  PolicyNode* next = nullptr;
  uint8_t region = 0;
};

struct WTinyLfuPolicyOptions {
  uint64_t capacity = 0;  // total weight held, at least 1
  double initial_window_fraction = 0.01;
  double protected_fraction = 0.8;  // of the main region
  bool adaptive_window = true;
  // Sketch sizing hint in entries; the sketch grows as more are resident.
  // 0 means `capacity` (right for unit weights).
  uint64_t expected_entries = 0;
};

class WTinyLfuPolicy {
 public:
  explicit WTinyLfuPolicy(const WTinyLfuPolicyOptions& options);

  WTinyLfuPolicy(const WTinyLfuPolicy&) = delete;
  WTinyLfuPolicy& operator=(const WTinyLfuPolicy&) = delete;

  // A lookup found `node` (tracked): counts the access and refreshes its
  // position (probation hits move to protected).
  void RecordHit(PolicyNode* node);

  // A lookup of `hash` found nothing: counts the access.
  void RecordMiss(uint64_t hash);

  // Starts tracking `node` (not tracked; weight <= capacity) in the window,
  // then restores weight() <= capacity(). Nodes dropped to do so, possibly
  // `node` itself, are appended to *evicted and are no longer tracked; the
  // caller still owns them. Does not count an access: a key's frequency is
  // the number of lookups of it.
  void Add(PolicyNode* node, std::vector<PolicyNode*>* evicted);

  // Puts `node` (not tracked; weight <= capacity) in the place of `old`
  // (tracked; no longer tracked on return), then evicts as Add() does. For
  // a key whose value changed: it keeps the key's standing.
  void Replace(PolicyNode* old, PolicyNode* node, std::vector<PolicyNode*>* evicted);

  // Stops tracking `node` (tracked). O(1).
  void Remove(PolicyNode* node);

  int Frequency(uint64_t hash) const { return sketch_.Frequency(hash); }
  uint64_t capacity() const { return capacity_; }
  uint64_t weight() const { return window_weight_ + probation_weight_ + protected_weight_; }
  uint64_t size() const { return size_; }
  uint64_t window_capacity() const { return window_max_; }
  uint64_t protected_capacity() const { return protected_max_; }
  uint64_t window_weight() const { return window_weight_; }
  uint64_t protected_weight() const { return protected_weight_; }

 private:
  enum Region : uint8_t { kNone = 0, kWindow, kProbation, kProtected, kRegions };

  struct List {
    PolicyNode head;  // sentinel: head.next is the least recent node
  };

  static void Unlink(PolicyNode* node);
  void PushBack(Region region, PolicyNode* node);  // as most recent
  PolicyNode* Front(Region region);                // least recent, or null
  PolicyNode* Next(PolicyNode* node);              // more recent, or null
  uint64_t& WeightOf(Region region);

  void Evict(std::vector<PolicyNode*>* evicted);
  PolicyNode* EvictFromWindow();
  void EvictFromMain(PolicyNode* candidate, std::vector<PolicyNode*>* evicted);
  void Drop(PolicyNode* node, std::vector<PolicyNode*>* evicted);
  bool Admit(uint64_t candidate_hash, uint64_t victim_hash);
  void DemoteFromProtected();
  void Climb();
  void DetermineAdjustment();
  void IncreaseWindow();
  void DecreaseWindow();

  const uint64_t capacity_;
  const bool adaptive_;
  uint64_t window_max_;
  uint64_t protected_max_;
  uint64_t window_weight_ = 0;
  uint64_t probation_weight_ = 0;
  uint64_t protected_weight_ = 0;
  uint64_t size_ = 0;
  List lists_[kRegions];
  FrequencySketch sketch_;

  // Hill climbing state.
  uint64_t sample_hits_ = 0;
  uint64_t sample_misses_ = 0;
  uint64_t sample_regrets_ = 0;  // misses on a key in rejected_
  // Hashes (| 1) of candidates recently refused admission, direct-mapped;
  // as many slots as entries (rounded up to a power of two).
  std::vector<uint64_t> rejected_;
  uint64_t rejected_mask_ = 0;
  double previous_hit_ratio_ = 0;
  double step_;
  bool filled_ = false;  // evicted at least once
  int64_t adjustment_ = 0;  // weight still to move into (+) or out of (-) the window
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_L1_WTINYLFU_POLICY_H_
