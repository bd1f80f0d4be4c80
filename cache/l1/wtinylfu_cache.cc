#include "cache/l1/wtinylfu_cache.h"

#include <algorithm>
#include <bit>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/match.h"
#include "absl/hash/hash.h"
#include "absl/synchronization/mutex.h"
#include "cache/l1/wtinylfu_policy.h"

namespace fanout::cache {
namespace {

constexpr int kDefaultShards = 16;
constexpr int kMaxShards = 1024;
constexpr uint64_t kMinDefaultShardBytes = 64 << 10;
// Each shard's sketch and refused-key table start sized for this many
// entries and grow with the resident count, so that a large budget costs
// nothing until it is used.
constexpr uint64_t kInitialEntries = 64;
// Prefix invalidation (see ErasePrefix in the header): nodes a Lookup or
// Insert checks on the side; nodes ErasePrefix checks per shard before it
// returns, and per lock hold; the pending prefixes a shard keeps, and the
// lock holds ErasePrefix sweeps for when a shard has that many pending before
// it finishes that shard's sweep in one.
constexpr int kSweepPerCall = 8;
constexpr int kSweepPerErase = 1024;
constexpr int kSweepPerLock = 256;
constexpr size_t kMaxPendingPrefixes = 8;
constexpr int kMaxSlicesBeforeFinish = 64;

int ShardCount(const L1Options& options) {
  if (options.shards > 0) {
    return static_cast<int>(std::bit_ceil(static_cast<unsigned>(std::min(options.shards, kMaxShards))));
  }
  int shards = kDefaultShards;
  while (shards > 1 && options.capacity_bytes / shards < kMinDefaultShardBytes) shards /= 2;
  return shards;
}

// Epochs compare modulo 2^32: a shard's pending prefixes and its nodes'
// epochs stay within a few of each other (see Shard::epoch).
bool Before(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) < 0; }

class WTinyLfuCache final : public L1Cache {
 public:
  explicit WTinyLfuCache(const L1Options& options)
      : options_(options),
        shard_mask_(static_cast<uint64_t>(ShardCount(options)) - 1),
        shard_capacity_(std::max<uint64_t>(options.capacity_bytes / (shard_mask_ + 1), 1)),
        max_entry_bytes_(std::min(
            shard_capacity_, static_cast<uint64_t>(static_cast<double>(options.capacity_bytes) *
                                                   options.max_entry_fraction))),
        sizer_(WTinyLfuPolicyOptions{}.initial_window_fraction) {
    WTinyLfuPolicyOptions policy;
    policy.capacity = shard_capacity_;
    policy.expected_entries = kInitialEntries;
    policy.sizer = &sizer_;
    for (uint64_t i = 0; i <= shard_mask_; ++i) {
      shards_.push_back(std::make_unique<Shard>(policy));
    }
  }

  std::optional<Freshness> Lookup(absl::string_view key, absl::Time now, Entry* out) override {
    const uint64_t hash = absl::HashOf(key);
    Shard& s = ShardFor(hash);
    Removals removals;
    std::optional<Freshness> result;
    {
      absl::MutexLock l(&s.mu);
      auto it = s.index.find(key);
      const bool pending = !s.prefixes.empty();
      if (pending && it != s.index.end() && Invalidated(s, *it->second)) {
        ++s.stats.invalidated;
        RemoveLocked(s, it, RemovalCause::kInvalidated, removals);
        it = s.index.end();
      }
      if (it == s.index.end()) {
        ++s.stats.misses;
        s.policy.RecordMiss(hash);
      } else if (now >= it->second->entry.stale_until) {
        ++s.stats.misses;
        ++s.stats.evicted_expired;
        s.policy.RecordMiss(hash);
        RemoveLocked(s, it, RemovalCause::kExpired, removals);
      } else {
        Node* node = it->second.get();
        if (pending && Before(node->tag, s.epoch)) {
          node->tag = s.epoch;  // checked just now
          --s.unchecked;
        }
        s.policy.RecordHit(node);
        *out = node->entry;
        result = FreshnessAt(node->entry, now);
        if (*result == Freshness::kStale) {
          ++s.stats.stale_hits;
        } else {
          ++s.stats.hits;
        }
      }
      if (pending) Sweep(s, kSweepPerCall, removals);
    }
    Notify(removals);
    return result;
  }

  bool Insert(absl::string_view key, Entry entry) override {
    const uint64_t charge = ChargeOf(key, entry);
    const uint64_t hash = absl::HashOf(key);
    Shard& s = ShardFor(hash);
    // Allocated before locking: the lock covers only the index and policy.
    std::unique_ptr<Node> fresh;
    if (charge <= max_entry_bytes_) {
      fresh = std::make_unique<Node>();
      fresh->hash = hash;
      fresh->weight = charge;
      fresh->key = std::string(key);
      fresh->entry = std::move(entry);
    }
    Removals removals;
    bool cached = false;
    {
      absl::MutexLock l(&s.mu);
      auto it = s.index.find(key);
      if (it != s.index.end() && Invalidated(s, *it->second)) {
        ++s.stats.invalidated;
        RemoveLocked(s, it, RemovalCause::kInvalidated, removals);
        it = s.index.end();
      }
      if (fresh == nullptr) {
        ++s.stats.rejected_too_large;
        if (it != s.index.end()) {
          ++s.stats.replaced;
          RemoveLocked(s, it, RemovalCause::kReplaced, removals);
        }
      } else {
        Node* node = fresh.get();
        node->tag = s.epoch;  // covered by no pending prefix: it is newer
        if (it != s.index.end()) {
          ++s.stats.replaced;
          PolicyNode* old = it->second.get();
          const bool at_sweep = s.sweep == old;
          Forget(s, old);
          s.policy.Replace(old, node, &s.evicted);
          if (at_sweep) s.sweep = node;  // where `old` was
          removals.push_back(Removal{std::move(it->second), RemovalCause::kReplaced, true});
          s.index.erase(it);
        } else {
          s.policy.Add(node, &s.evicted);
        }
        s.index.emplace(node->key, std::move(fresh));
        cached = true;
        for (PolicyNode* p : s.evicted) {
          auto victim = s.index.find(static_cast<Node*>(p)->key);
          Forget(s, p);
          if (p == node) {
            // Declined at once: never visible, so nobody is told.
            ++s.stats.not_admitted;
            cached = false;
            removals.push_back(Removal{std::move(victim->second), RemovalCause::kSize, false});
          } else if (Invalidated(s, *static_cast<Node*>(p))) {
            ++s.stats.invalidated;
            removals.push_back(
                Removal{std::move(victim->second), RemovalCause::kInvalidated, true});
          } else {
            ++s.stats.evicted_size;
            removals.push_back(Removal{std::move(victim->second), RemovalCause::kSize, true});
          }
          s.index.erase(victim);
        }
        s.evicted.clear();
      }
      if (!s.prefixes.empty()) Sweep(s, kSweepPerCall, removals);
    }
    Notify(removals);
    return cached;
  }

  bool Erase(absl::string_view key) override {
    Shard& s = ShardFor(absl::HashOf(key));
    Removals removals;
    bool present = false;
    {
      absl::MutexLock l(&s.mu);
      auto it = s.index.find(key);
      if (it == s.index.end()) return false;
      // An entry a pending prefix covers is gone already, whoever removes it.
      present = !Invalidated(s, *it->second);
      ++s.stats.invalidated;
      RemoveLocked(s, it, RemovalCause::kInvalidated, removals);
    }
    Notify(removals);
    return present;
  }

  uint64_t ErasePrefix(absl::string_view prefix) override {
    uint64_t erased = 0;
    const auto count = [&](const Removals& removals) {
      for (const Removal& r : removals) erased += absl::StartsWith(r.node->key, prefix) ? 1 : 0;
    };
    // First every shard hides what the prefix covers (that is the contract),
    // one lock at a time; then each sweeps a bounded part of its entries.
    for (const std::unique_ptr<Shard>& shard : shards_) {
      Shard& s = *shard;
      for (int slices = 0;; ++slices) {
        Removals removals;
        bool added = false;
        {
          absl::MutexLock l(&s.mu);
          if (s.prefixes.size() >= kMaxPendingPrefixes) {
            // Too many pending: sweep a lock hold at a time, and if other
            // calls keep the walk from ending, to the end in one.
            if (slices < kMaxSlicesBeforeFinish) {
              Sweep(s, kSweepPerLock, removals);
            } else {
              FinishSweep(s, removals);
            }
          }
          if (s.prefixes.size() < kMaxPendingPrefixes) {
            AddPrefix(s, prefix);
            added = true;
          }
        }
        count(removals);
        Notify(removals);
        if (added) break;
      }
    }
    for (const std::unique_ptr<Shard>& shard : shards_) {
      Shard& s = *shard;
      for (int checked = 0; checked < kSweepPerErase; checked += kSweepPerLock) {
        Removals removals;
        bool done;
        {
          absl::MutexLock l(&s.mu);
          Sweep(s, kSweepPerLock, removals);
          done = s.prefixes.empty();
        }
        count(removals);
        Notify(removals);
        if (done) break;
      }
    }
    return erased;
  }

  L1Stats Stats() const override {
    L1Stats total;
    for (const std::unique_ptr<Shard>& shard : shards_) {
      const Shard& s = *shard;
      absl::MutexLock l(&s.mu);
      total.hits += s.stats.hits;
      total.stale_hits += s.stats.stale_hits;
      total.misses += s.stats.misses;
      total.evicted_size += s.stats.evicted_size;
      total.evicted_expired += s.stats.evicted_expired;
      total.invalidated += s.stats.invalidated;
      total.replaced += s.stats.replaced;
      total.rejected_too_large += s.stats.rejected_too_large;
      total.not_admitted += s.stats.not_admitted;
      total.bytes += s.policy.weight();
      total.entries += s.index.size();
    }
    return total;
  }

 private:
  // PolicyNode::tag holds the shard's epoch when the node was inserted or
  // last checked against the pending prefixes.
  struct Node : PolicyNode {
    std::string key;
    Entry entry;
  };

  // A node out of the index, to be reported (if `notify`) and freed once the
  // shard lock is released.
  struct Removal {
    std::unique_ptr<Node> node;
    RemovalCause cause;
    bool notify;
  };
  using Removals = absl::InlinedVector<Removal, 2>;

  // An ErasePrefix whose entries may not all have been removed yet.
  struct PendingPrefix {
    std::string prefix;
    uint32_t epoch;  // the shard's epoch it started
  };

  struct alignas(64) Shard {
    explicit Shard(const WTinyLfuPolicyOptions& options) : policy(options) {}

    mutable absl::Mutex mu;
    // Keys view the nodes' own key strings.
    absl::flat_hash_map<absl::string_view, std::unique_ptr<Node>> index ABSL_GUARDED_BY(mu);
    WTinyLfuPolicy policy ABSL_GUARDED_BY(mu);
    std::vector<PolicyNode*> evicted ABSL_GUARDED_BY(mu);  // scratch for Insert
    L1Stats stats ABSL_GUARDED_BY(mu);  // counters only; bytes and entries are computed

    // Prefix invalidation. Every ErasePrefix advances `epoch` and appends to
    // `prefixes` (oldest first). A node tagged before a pending prefix's
    // epoch and matching it is invalidated: hidden from then on, removed when
    // found. `unchecked` counts the nodes tagged before the newest pending
    // epoch; checking one against every pending prefix removes it or retags
    // it with `epoch`. At zero the prefixes are done and dropped. `sweep` is
    // where the walk over the policy's nodes resumes (null: from the start).
    uint32_t epoch ABSL_GUARDED_BY(mu) = 0;
    std::vector<PendingPrefix> prefixes ABSL_GUARDED_BY(mu);
    uint64_t unchecked ABSL_GUARDED_BY(mu) = 0;
    PolicyNode* sweep ABSL_GUARDED_BY(mu) = nullptr;
  };
  using Index = decltype(Shard::index);

  Shard& ShardFor(uint64_t hash) { return *shards_[(hash >> 32) & shard_mask_]; }

  static void AddPrefix(Shard& s, absl::string_view prefix) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    ++s.epoch;
    s.prefixes.push_back(PendingPrefix{std::string(prefix), s.epoch});
    // Every node is older than the new prefix.
    s.unchecked = s.index.size();
    s.sweep = nullptr;
  }

  // Whether a pending prefix covers `node`. O(pending prefixes) at most, and
  // one comparison for a node checked or inserted since the last one.
  static bool Invalidated(const Shard& s, const Node& node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    for (auto p = s.prefixes.rbegin(); p != s.prefixes.rend() && Before(node.tag, p->epoch); ++p) {
      if (absl::StartsWith(node.key, p->prefix)) return true;
    }
    return false;
  }

  // Accounts for `node` leaving the shard.
  static void Forget(Shard& s, PolicyNode* node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    if (s.sweep == node) s.sweep = nullptr;
    if (!s.prefixes.empty() && Before(node->tag, s.epoch)) --s.unchecked;
  }

  // Checks up to `budget` nodes against the pending prefixes, removing those
  // they cover; drops the prefixes once every node has been checked. A walk
  // that ends with nodes unchecked (they moved behind it) starts over.
  static void Sweep(Shard& s, int budget, Removals& removals) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    while (!s.prefixes.empty() && s.unchecked > 0 && budget-- > 0) {
      PolicyNode* node = s.sweep != nullptr ? s.sweep : s.policy.First();
      if (node == nullptr) {
        s.unchecked = 0;  // nothing left to check
        break;
      }
      s.sweep = s.policy.After(node);
      Check(s, *static_cast<Node*>(node), removals);
    }
    if (s.unchecked == 0) {
      s.prefixes.clear();
      s.sweep = nullptr;
    }
  }

  // Checks every node in one walk, under one lock hold: O(entries).
  static void FinishSweep(Shard& s, Removals& removals) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    for (PolicyNode* node = s.policy.First(); node != nullptr;) {
      PolicyNode* next = s.policy.After(node);
      Check(s, *static_cast<Node*>(node), removals);
      node = next;
    }
    s.unchecked = 0;
    s.prefixes.clear();
    s.sweep = nullptr;
  }

  // Removes `n` if a pending prefix covers it, else marks it checked.
  static void Check(Shard& s, Node& n, Removals& removals) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    if (!Before(n.tag, s.epoch)) return;
    if (Invalidated(s, n)) {
      ++s.stats.invalidated;
      RemoveLocked(s, s.index.find(n.key), RemovalCause::kInvalidated, removals);
    } else {
      n.tag = s.epoch;
      --s.unchecked;
    }
  }

  static void RemoveLocked(Shard& s, Index::iterator it, RemovalCause cause, Removals& removals)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    PolicyNode* node = it->second.get();
    if (s.sweep == node) s.sweep = s.policy.After(node);
    if (!s.prefixes.empty() && Before(node->tag, s.epoch)) --s.unchecked;
    s.policy.Remove(node);
    removals.push_back(Removal{std::move(it->second), cause, true});
    s.index.erase(it);
  }

  void Notify(const Removals& removals) const {
    if (!options_.on_removal) return;
    for (const Removal& r : removals) {
      if (r.notify) options_.on_removal(r.node->key, r.node->entry, r.cause);
    }
  }

  const L1Options options_;
  const uint64_t shard_mask_;
  const uint64_t shard_capacity_;
  const uint64_t max_entry_bytes_;
  WindowSizer sizer_;  // shared by the shards' policies
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace

std::unique_ptr<L1Cache> NewWTinyLfuCache(const L1Options& options) {
  return std::make_unique<WTinyLfuCache>(options);
}

}  // namespace fanout::cache
