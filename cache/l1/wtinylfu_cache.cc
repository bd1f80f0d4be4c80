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

int ShardCount(const L1Options& options) {
  if (options.shards > 0) {
    return static_cast<int>(std::bit_ceil(static_cast<unsigned>(std::min(options.shards, kMaxShards))));
  }
  int shards = kDefaultShards;
  while (shards > 1 && options.capacity_bytes / shards < kMinDefaultShardBytes) shards /= 2;
  return shards;
}

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
    {
      absl::MutexLock l(&s.mu);
      auto it = s.index.find(key);
      if (it == s.index.end()) {
        ++s.stats.misses;
        s.policy.RecordMiss(hash);
        return std::nullopt;
      }
      Node* node = it->second.get();
      if (now < node->entry.stale_until) {
        s.policy.RecordHit(node);
        *out = node->entry;
        const Freshness freshness = FreshnessAt(node->entry, now);
        if (freshness == Freshness::kStale) {
          ++s.stats.stale_hits;
        } else {
          ++s.stats.hits;
        }
        return freshness;
      }
      ++s.stats.misses;
      ++s.stats.evicted_expired;
      s.policy.RecordMiss(hash);
      RemoveLocked(s, it, RemovalCause::kExpired, removals);
    }
    Notify(removals);
    return std::nullopt;
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
      if (fresh == nullptr) {
        ++s.stats.rejected_too_large;
        if (it != s.index.end()) {
          ++s.stats.replaced;
          RemoveLocked(s, it, RemovalCause::kReplaced, removals);
        }
      } else {
        Node* node = fresh.get();
        if (it != s.index.end()) {
          ++s.stats.replaced;
          s.policy.Replace(it->second.get(), node, &s.evicted);
          removals.push_back(Removal{std::move(it->second), RemovalCause::kReplaced, true});
          s.index.erase(it);
        } else {
          s.policy.Add(node, &s.evicted);
        }
        s.index.emplace(node->key, std::move(fresh));
        cached = true;
        for (PolicyNode* p : s.evicted) {
          auto victim = s.index.find(static_cast<Node*>(p)->key);
          if (p == node) {
            // Declined at once: never visible, so nobody is told.
            ++s.stats.not_admitted;
            cached = false;
            removals.push_back(Removal{std::move(victim->second), RemovalCause::kSize, false});
          } else {
            ++s.stats.evicted_size;
            removals.push_back(Removal{std::move(victim->second), RemovalCause::kSize, true});
          }
          s.index.erase(victim);
        }
        s.evicted.clear();
      }
    }
    Notify(removals);
    return cached;
  }

  bool Erase(absl::string_view key) override {
    Shard& s = ShardFor(absl::HashOf(key));
    Removals removals;
    {
      absl::MutexLock l(&s.mu);
      auto it = s.index.find(key);
      if (it == s.index.end()) return false;
      ++s.stats.invalidated;
      RemoveLocked(s, it, RemovalCause::kInvalidated, removals);
    }
    Notify(removals);
    return true;
  }

  uint64_t ErasePrefix(absl::string_view prefix) override {
    uint64_t erased = 0;
    for (const std::unique_ptr<Shard>& shard : shards_) {
      Shard& s = *shard;
      Removals removals;
      {
        absl::MutexLock l(&s.mu);
        for (auto it = s.index.begin(); it != s.index.end();) {
          if (absl::StartsWith(it->first, prefix)) {
            ++s.stats.invalidated;
            s.policy.Remove(it->second.get());
            removals.push_back(
                Removal{std::move(it->second), RemovalCause::kInvalidated, true});
            s.index.erase(it++);
          } else {
            ++it;
          }
        }
      }
      erased += removals.size();
      Notify(removals);
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

  struct alignas(64) Shard {
    explicit Shard(const WTinyLfuPolicyOptions& options) : policy(options) {}

    mutable absl::Mutex mu;
    // Keys view the nodes' own key strings.
    absl::flat_hash_map<absl::string_view, std::unique_ptr<Node>> index ABSL_GUARDED_BY(mu);
    WTinyLfuPolicy policy ABSL_GUARDED_BY(mu);
    std::vector<PolicyNode*> evicted ABSL_GUARDED_BY(mu);  // scratch for Insert
    L1Stats stats ABSL_GUARDED_BY(mu);  // counters only; bytes and entries are computed
  };
  using Index = decltype(Shard::index);

  Shard& ShardFor(uint64_t hash) { return *shards_[(hash >> 32) & shard_mask_]; }

  static void RemoveLocked(Shard& s, Index::iterator it, RemovalCause cause, Removals& removals)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    s.policy.Remove(it->second.get());
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
