#include "bench/sim/simulate.h"

#include <limits>
#include <list>
#include <memory>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace fanout::sim {
namespace {

// SplitMix64's finalizer: a fixed, seedable key hash, so that runs repeat
// (absl::Hash is seeded per process).
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

SimResult SimulateLru(absl::Span<const uint64_t> trace, uint64_t capacity) {
  SimResult result;
  std::list<uint64_t> order;  // front = most recent
  absl::flat_hash_map<uint64_t, std::list<uint64_t>::iterator> where;
  for (uint64_t key : trace) {
    ++result.accesses;
    auto it = where.find(key);
    if (it != where.end()) {
      ++result.hits;
      order.splice(order.begin(), order, it->second);
      continue;
    }
    if (capacity == 0) continue;
    order.push_front(key);
    where.emplace(key, order.begin());
    if (order.size() > capacity) {
      where.erase(order.back());
      order.pop_back();
    }
  }
  return result;
}

SimResult SimulateOpt(absl::Span<const uint64_t> trace, uint64_t capacity) {
  constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();
  std::vector<uint64_t> next_use(trace.size());
  {
    absl::flat_hash_map<uint64_t, uint64_t> seen_at;
    for (size_t i = trace.size(); i-- > 0;) {
      auto [it, inserted] = seen_at.try_emplace(trace[i], i);
      next_use[i] = inserted ? kNever : it->second;
      it->second = i;
    }
  }
  SimResult result;
  std::set<std::pair<uint64_t, uint64_t>> by_next_use;  // (next use, key)
  absl::flat_hash_map<uint64_t, uint64_t> resident;     // key -> next use
  for (size_t i = 0; i < trace.size(); ++i) {
    const uint64_t key = trace[i];
    ++result.accesses;
    auto it = resident.find(key);
    if (it != resident.end()) {
      ++result.hits;
      by_next_use.erase({it->second, key});
      it->second = next_use[i];
      by_next_use.emplace(next_use[i], key);
      continue;
    }
    if (capacity == 0) continue;
    resident.emplace(key, next_use[i]);
    by_next_use.emplace(next_use[i], key);
    if (resident.size() > capacity) {
      auto furthest = std::prev(by_next_use.end());
      resident.erase(furthest->second);
      by_next_use.erase(furthest);
    }
  }
  return result;
}

SimResult SimulateLfu(absl::Span<const uint64_t> trace, uint64_t capacity) {
  using Rank = std::tuple<uint64_t, uint64_t, uint64_t>;  // (count, last access, key)
  SimResult result;
  absl::flat_hash_map<uint64_t, uint64_t> counts;
  absl::flat_hash_map<uint64_t, Rank> resident;
  std::set<Rank> by_rank;
  for (size_t i = 0; i < trace.size(); ++i) {
    const uint64_t key = trace[i];
    ++result.accesses;
    const uint64_t count = ++counts[key];
    const Rank rank{count, i, key};
    auto it = resident.find(key);
    if (it != resident.end()) {
      ++result.hits;
      by_rank.erase(it->second);
      it->second = rank;
      by_rank.insert(rank);
      continue;
    }
    if (capacity == 0) continue;
    resident.emplace(key, rank);
    by_rank.insert(rank);
    if (resident.size() > capacity) {
      resident.erase(std::get<2>(*by_rank.begin()));
      by_rank.erase(by_rank.begin());
    }
  }
  return result;
}

SimResult SimulateWTinyLfu(absl::Span<const uint64_t> trace, uint64_t capacity,
                           cache::WTinyLfuPolicyOptions options, int shards, uint64_t hash_seed,
                           const SimProbe& probe, uint64_t probe_every) {
  struct Node : cache::PolicyNode {
    uint64_t key = 0;
  };
  SimResult result;
  if (capacity == 0) {
    result.accesses = trace.size();
    return result;
  }
  shards = std::max(shards, 1);
  options.capacity = std::max<uint64_t>(capacity / static_cast<uint64_t>(shards), 1);
  // The shards share one window sizer, as the cache's do.
  std::unique_ptr<cache::WindowSizer> sizer;
  if (options.adaptive_window && options.sizer == nullptr) {
    sizer = std::make_unique<cache::WindowSizer>(options.initial_window_fraction);
    options.sizer = sizer.get();
  }
  std::vector<std::unique_ptr<cache::WTinyLfuPolicy>> policies;
  for (int i = 0; i < shards; ++i) {
    policies.push_back(std::make_unique<cache::WTinyLfuPolicy>(options));
  }
  absl::flat_hash_map<uint64_t, std::unique_ptr<Node>> nodes;
  std::vector<cache::PolicyNode*> evicted;
  const auto maybe_probe = [&] {
    if (probe && ((probe_every != 0 && result.accesses % probe_every == 0) ||
                  result.accesses == trace.size())) {
      probe(result, *policies[0]);
    }
  };
  for (uint64_t key : trace) {
    ++result.accesses;
    const uint64_t hash = Mix(key ^ hash_seed);
    cache::WTinyLfuPolicy& policy = *policies[(hash >> 32) % static_cast<uint64_t>(shards)];
    auto it = nodes.find(key);
    if (it != nodes.end()) {
      ++result.hits;
      policy.RecordHit(it->second.get());
      maybe_probe();
      continue;
    }
    policy.RecordMiss(hash);
    auto node = std::make_unique<Node>();
    node->hash = hash;
    node->weight = 1;
    node->key = key;
    policy.Add(node.get(), &evicted);
    nodes.emplace(key, std::move(node));
    for (cache::PolicyNode* p : evicted) nodes.erase(static_cast<Node*>(p)->key);
    evicted.clear();
    maybe_probe();
  }
  return result;
}

}  // namespace fanout::sim
