// The W-TinyLFU eviction and admission policy, without storage: it orders
// nodes that its caller owns and tells the caller which ones to drop. The
// L1 cache (wtinylfu_cache.h) runs one per shard with byte weights; the
// hit-ratio simulator (bench/sim) runs the same code with unit weights.
//
// Layout of the budget (weights, e.g. bytes):
//   window     an LRU that every new node enters; 1% of the capacity at
//              first, then sized at run time (see below), from 1% to 99%
//   probation  the main region's entry: nodes that left the window or were
//              demoted from protected
//   protected  nodes hit while in probation; at most 80% of the main region
// When the window overflows, its least recent nodes move to probation as
// candidates. While the total is over capacity a candidate is weighed against
// probation's least recent node (the victim) by their frequency in a
// FrequencySketch sized at two words per resident entry (growing with them;
// aging every ~20 x entries counted lookups): the more frequent stays, ties
// keep the victim. Keeping ties is what makes loops larger than the cache
// hit at all.
//
// Hash flooding: the policy trusts the caller's hashes. A caller whose keys
// come from outside must hash with a per-process seed (absl::Hash does), so
// that nobody can pick keys whose counters collide with a hot victim's. (This
// is why there is no random admission of warm candidates, which costs hit
// ratio on loops.)
//
// Adaptive window. Frequency alone fails when popularity moves: after the hot
// set rotates, the previous one keeps its counts until the sketch ages (for
// a large cache, longer than the new set lasts) and wins every admission, so
// only the window serves the new keys; and where recency is all there is, a
// 1% window leaves most of the cache to keys admitted for a frequency that
// means nothing. So once the cache has first filled, the policy weighs, over
// samples of max(4000, entries / 2) lookups, what moving D = 25% of the
// capacity would win or lose:
//   window gain   misses on keys that the admission test refused within the
//                 last D of weight to leave the window (a window larger by D
//                 would still hold them); or, if more, hits on the window's
//                 least recent D of weight by keys that would not have won
//                 admission (a window smaller by D would have lost them; a
//                 key that would have tied counts half)
//   main loss     hits on the main region's least recent D of weight
//                 (probation's, then protected's)
// A difference within two standard errors of the counts is a plateau: the
// window holds where it is. Otherwise the window moves towards the larger by
// up to 25% of the capacity, in proportion to how lopsided the counts are and
// how many lookups the difference is worth (a full step at 3% of the
// sample). A sample ends early, after max(1000, entries / 2) lookups, if its
// difference is already worth a full step and twice as far beyond noise, so
// that a rotated hot set does not wait out a whole sample. Unlike comparing
// the hit ratio of successive samples (what hill climbing does), both counts
// come from the same sample, so a phase change or a scan within it does not
// pass for the effect of the last move.
// Nodes the window takes from the main region join its least recent end, so
// that stale ones leave first.
//
// Policies that split one cache's keys by hash (the L1 cache's shards) share
// a WindowSizer: each reports its counts to it, the sample is the whole
// cache's, and every shard sizes its window to the same share of its budget.
// (Alone, a shard of a 16-way cache would take 16 times as many lookups to
// gather a sample.)
//
// Memory besides the caller's nodes (PolicyNode is 48 bytes of them): per
// resident entry, rounded up to powers of two, 16 bytes of sketch (at least
// 8 KiB in all) and 8 bytes of recently refused keys.
//
// Not thread-safe: callers serialize every call.
#ifndef FANOUT_CACHE_L1_WTINYLFU_POLICY_H_
#define FANOUT_CACHE_L1_WTINYLFU_POLICY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "cache/l1/frequency_sketch.h"

namespace fanout::cache {

// Counts that a policy gathers towards a window-sizing sample (see "Adaptive
// window" above).
struct WindowEvidence {
  uint64_t lookups = 0;
  uint64_t refused_returns = 0;    // misses on keys refused within D of departures
  uint64_t window_end_halves = 0;  // 2 per window end hit not admissible, 1 per tie
  uint64_t main_end_hits = 0;      // hits on the main region's least recent D

  WindowEvidence& operator+=(const WindowEvidence& other);
};

// Decides the window's share of the capacity for the policies of one cache
// from the evidence they report. Thread-safe; Report takes a mutex once per
// a few hundred lookups of a policy, window_fraction() is one atomic load.
class WindowSizer {
 public:
  // `initial_fraction` is clamped to [1%, 99%].
  explicit WindowSizer(double initial_fraction);

  WindowSizer(const WindowSizer&) = delete;
  WindowSizer& operator=(const WindowSizer&) = delete;

  // Registers a policy; returns the id it reports with.
  int Join();

  // Adds a policy's evidence; `entries` is its resident count. A sample is
  // complete once max(4000, all policies' entries / 2) lookups are in (or
  // decisive earlier, see above); the window's share may then change.
  void Report(int id, const WindowEvidence& evidence, uint64_t entries);

  // The window's share of each policy's capacity, from 0.01 to 0.99.
  double window_fraction() const { return fraction_.load(std::memory_order_relaxed); }

 private:
  absl::Mutex mu_;
  WindowEvidence sample_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> entries_ ABSL_GUARDED_BY(mu_);  // per policy id
  uint64_t total_entries_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<double> fraction_;
};

// What the policy tracks about one entry; callers embed it in their own node
// (e.g. `struct Node : PolicyNode { ... }`). The fields are the policy's while
// the node is tracked; callers set `hash` and `weight` before Add().
struct PolicyNode {
  uint64_t hash = 0;    // the key's hash
  uint64_t weight = 0;  // charge against the capacity; positive

  // Owned by the policy: intrusive list links, region, and the value of the
  // region's exit count at which the node reaches its least recent end.
  PolicyNode* prev = nullptr;
  PolicyNode* next = nullptr;
  uint64_t due = 0;
  uint8_t region = 0;

  // The caller's, in what would otherwise be padding; the policy leaves it
  // alone.
  uint32_t tag = 0;
};

struct WTinyLfuPolicyOptions {
  uint64_t capacity = 0;  // total weight held, at least 1
  // Of the capacity; kept within [1%, 99%] while the window adapts.
  double initial_window_fraction = 0.01;
  double protected_fraction = 0.8;  // of the main region
  bool adaptive_window = true;
  // Shared by the policies of one cache; created with the options'
  // initial_window_fraction. Not owned; must outlive the policy. Null: the
  // policy has a sizer of its own.
  WindowSizer* sizer = nullptr;
  // Entries to size the sketch and the refused-key table for at first; both
  // grow with the resident count. 0 means `capacity` (right for unit
  // weights); a byte-weighted cache passes a small number.
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

  // Every tracked node, window first, then probation, then protected, each
  // from least to most recent: First() and then After() until null. O(1)
  // each. A walk that spans other calls may see a node twice or miss one that
  // moved between regions meanwhile (a hit, an eviction, a resize), and
  // `node` must still be tracked when passed to After().
  PolicyNode* First();
  PolicyNode* After(PolicyNode* node);

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

  void Unlink(PolicyNode* node);
  void PushBack(Region region, PolicyNode* node);  // as most recent
  // Links `node` into `region` just after `pos` (a node of the region, or its
  // list head for the least recent end). Leaves `due` to the caller.
  void LinkAfter(Region region, PolicyNode* pos, PolicyNode* node);
  PolicyNode* Front(Region region);    // least recent, or null
  PolicyNode* Next(PolicyNode* node);  // more recent, or null
  uint64_t& WeightOf(Region region);
  // Weight between `node` and its region's least recent end, itself included
  // (an upper bound: nodes ahead of it that were hit have left since).
  uint64_t DistanceFromEnd(const PolicyNode* node) const;

  void Evict(std::vector<PolicyNode*>* evicted);
  PolicyNode* EvictFromWindow();
  void EvictFromMain(PolicyNode* candidate, std::vector<PolicyNode*>* evicted);
  void Drop(PolicyNode* node, std::vector<PolicyNode*>* evicted);
  void Refuse(PolicyNode* candidate, std::vector<PolicyNode*>* evicted);
  bool Admit(uint64_t candidate_hash, uint64_t victim_hash);
  void DemoteFromProtected();
  void CountEndHit(const PolicyNode* node, uint64_t distance);
  int VictimFrequency();
  void CountLookup();
  void GrowRefusedTable(uint64_t entries);
  void Climb();
  void IncreaseWindow();
  void DecreaseWindow();
  void SetProtectedMax();

  // A key recently refused admission: a fingerprint of its hash and
  // window_departures_ when it was refused.
  struct Refused {
    uint32_t fingerprint = 0;  // 0: empty
    uint32_t exit_mark = 0;    // in units of exit_unit_, wrapping
  };

  const uint64_t capacity_;
  const double protected_fraction_;
  const bool adaptive_;
  const uint64_t min_window_;
  const uint64_t max_window_;
  const uint64_t depth_;  // D: the weight a move is judged for
  // Departures are marked in units of this, so that D is at most 2^20 of
  // them and a 32-bit mark does not wrap within it.
  const uint64_t exit_unit_;
  uint64_t window_max_;
  uint64_t protected_max_;
  uint64_t window_weight_ = 0;
  uint64_t probation_weight_ = 0;
  uint64_t protected_weight_ = 0;
  uint64_t size_ = 0;
  List lists_[kRegions];
  // Weight that left each region's least recent end (modular; steps back
  // when nodes join that end), for the nodes' distance from it.
  uint64_t exits_[kRegions] = {};
  uint64_t window_departures_ = 0;  // weight that has left the window
  FrequencySketch sketch_;

  // Window sizing.
  std::unique_ptr<WindowSizer> own_sizer_;  // when options.sizer is null
  WindowSizer* const sizer_;                // null unless adaptive
  const int sizer_id_;
  WindowEvidence evidence_;       // not yet reported
  std::vector<Refused> refused_;  // direct-mapped by hash; as many slots as entries
  uint64_t refused_mask_ = 0;
  bool filled_ = false;    // evicted at least once
  bool counting_ = false;  // gathering evidence: filled and adaptive
  // VictimFrequency()'s cache.
  uint64_t victim_hash_ = 0;
  uint64_t victim_agings_ = 0;
  int victim_frequency_ = 0;
  int64_t adjustment_ = 0;  // weight to move into (+) or out of (-) the window
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_L1_WTINYLFU_POLICY_H_
