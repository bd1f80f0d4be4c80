// A sharded LRU bounded by bytes: the simple L1 engine.
#include <algorithm>
#include <list>
#include <memory>
#include <span>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/synchronization/mutex.h"
#include "cache/l1_cache.h"

namespace fanout::cache {
namespace {

constexpr int kDefaultShards = 16;
constexpr int kMaxShards = 1024;

class LruL1Cache final : public L1Cache {
 public:
  explicit LruL1Cache(const L1Options& options)
      : options_(options),
        shard_count_(options.shards > 0 ? std::min(options.shards, kMaxShards) : kDefaultShards),
        shard_capacity_(options.capacity_bytes / static_cast<uint64_t>(shard_count_)),
        max_entry_bytes_(static_cast<uint64_t>(static_cast<double>(options.capacity_bytes) *
                                               options.max_entry_fraction)) {}

  std::optional<Freshness> Lookup(absl::string_view key, absl::Time now, Entry* out) override {
    Shard& s = ShardFor(key);
    std::vector<Removed> removed;
    std::optional<Freshness> result;
    {
      absl::MutexLock l(&s.mu);
      auto it = s.index.find(key);
      if (it == s.index.end()) {
        ++s.stats.misses;
        return std::nullopt;
      }
      if (now >= it->second->entry.stale_until) {
        ++s.stats.misses;
        ++s.stats.evicted_expired;
        RemoveLocked(s, it, RemovalCause::kExpired, removed);
      } else {
        s.lru.splice(s.lru.begin(), s.lru, it->second);
        *out = it->second->entry;
        result = FreshnessAt(*out, now);
        if (*result == Freshness::kStale)
          ++s.stats.stale_hits;
        else
          ++s.stats.hits;
      }
    }
    Notify(removed);
    return result;
  }

  bool Insert(absl::string_view key, Entry entry) override {
    const uint64_t charge = ChargeOf(key, entry);
    Shard& s = ShardFor(key);
    std::vector<Removed> removed;
    bool cached = false;
    {
      absl::MutexLock l(&s.mu);
      auto it = s.index.find(key);
      if (it != s.index.end()) {
        ++s.stats.replaced;
        RemoveLocked(s, it, RemovalCause::kReplaced, removed);
      }
      if (charge > max_entry_bytes_ || charge > shard_capacity_) {
        ++s.stats.rejected_too_large;
      } else {
        s.lru.push_front(Node{std::string(key), std::move(entry), charge});
        s.index.emplace(s.lru.front().key, s.lru.begin());
        s.bytes += charge;
        while (s.bytes > shard_capacity_) {
          auto victim = s.index.find(s.lru.back().key);
          ++s.stats.evicted_size;
          RemoveLocked(s, victim, RemovalCause::kSize, removed);
        }
        cached = true;
      }
    }
    Notify(removed);
    return cached;
  }

  bool Erase(absl::string_view key) override {
    Shard& s = ShardFor(key);
    std::vector<Removed> removed;
    {
      absl::MutexLock l(&s.mu);
      auto it = s.index.find(key);
      if (it == s.index.end()) return false;
      ++s.stats.invalidated;
      RemoveLocked(s, it, RemovalCause::kInvalidated, removed);
    }
    Notify(removed);
    return true;
  }

  uint64_t ErasePrefix(absl::string_view prefix) override {
    uint64_t n = 0;
    // One shard at a time: readers of other shards are never blocked.
    for (Shard& s : Shards()) {
      std::vector<Removed> removed;
      {
        absl::MutexLock l(&s.mu);
        for (auto node = s.lru.begin(); node != s.lru.end();) {
          auto next = std::next(node);
          if (absl::string_view(node->key).substr(0, prefix.size()) == prefix) {
            ++s.stats.invalidated;
            RemoveLocked(s, s.index.find(node->key), RemovalCause::kInvalidated, removed);
            ++n;
          }
          node = next;
        }
      }
      Notify(removed);
    }
    return n;
  }

  L1Stats Stats() const override {
    L1Stats total;
    for (const Shard& s : Shards()) {
      absl::MutexLock l(&s.mu);
      total.hits += s.stats.hits;
      total.stale_hits += s.stats.stale_hits;
      total.misses += s.stats.misses;
      total.evicted_size += s.stats.evicted_size;
      total.evicted_expired += s.stats.evicted_expired;
      total.invalidated += s.stats.invalidated;
      total.replaced += s.stats.replaced;
      total.rejected_too_large += s.stats.rejected_too_large;
      total.bytes += s.bytes;
      total.entries += s.index.size();
    }
    return total;
  }

 private:
  struct Node {
    std::string key;
    Entry entry;
    uint64_t charge;
  };
  using List = std::list<Node>;
  struct Removed {
    std::string key;
    Entry entry;
    RemovalCause cause;
  };
  struct Shard {
    mutable absl::Mutex mu;
    List lru ABSL_GUARDED_BY(mu);
    absl::flat_hash_map<absl::string_view, List::iterator> index ABSL_GUARDED_BY(mu);
    uint64_t bytes ABSL_GUARDED_BY(mu) = 0;
    L1Stats stats ABSL_GUARDED_BY(mu);
  };

  Shard& ShardFor(absl::string_view key) {
    return shards_[absl::HashOf(key) % static_cast<size_t>(shard_count_)];
  }
  std::span<Shard> Shards() const {
    return std::span<Shard>(shards_.get(), static_cast<size_t>(shard_count_));
  }

  void RemoveLocked(Shard& s, decltype(Shard::index)::iterator it, RemovalCause cause,
                    std::vector<Removed>& removed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    List::iterator node = it->second;
    s.index.erase(it);
    s.bytes -= node->charge;
    if (options_.on_removal) {
      removed.push_back(Removed{std::move(node->key), std::move(node->entry), cause});
    }
    s.lru.erase(node);
  }

  void Notify(std::vector<Removed>& removed) {
    for (const Removed& r : removed) options_.on_removal(r.key, r.entry, r.cause);
  }

  const L1Options options_;
  const int shard_count_;  // options.shards, or kDefaultShards
  const uint64_t shard_capacity_;
  const uint64_t max_entry_bytes_;
  const std::unique_ptr<Shard[]> shards_ = std::make_unique<Shard[]>(shard_count_);
};

}  // namespace

std::unique_ptr<L1Cache> NewLruL1Cache(const L1Options& options) {
  return std::make_unique<LruL1Cache>(options);
}

}  // namespace fanout::cache
