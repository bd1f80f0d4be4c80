// fanout-l1-bench: throughput of the L1 engines against a plain sharded
// absl::flat_hash_map + absl::Mutex (the floor any cache pays: hash, lock,
// find, copy the entry out), measured side by side in one binary.
//
//   BM_ReadHit<Impl>/threads:N   lookups that all hit: Zipf(0.99) over 100k
//                                keys, every key resident
//   BM_Mixed<Impl>/threads:N     90% lookups, 10% inserts, Zipf(0.99) over
//                                100k keys with room for about a quarter of
//                                them (the baseline holds them all)
// items_per_second is the aggregate rate of all threads (real time).
//
//   fanout-l1-bench --entry_memory   instead of the benchmarks, what an entry
//                                    costs: inserts a million entries (250k
//                                    of 1000-byte values) into each engine and
//                                    prints, per entry, the heap bytes in use
//                                    (mallinfo2), the resident set growth and
//                                    the charge (L1Stats::bytes):
//     memory ENGINE KEY_BYTES VALUE_BYTES ENTRIES HEAP RSS CHARGED
//
//   valgrind --tool=callgrind --instr-atstart=no fanout-l1-bench
//       --count_ops=read|mixed --impl=baseline|wtinylfu|lru
//                                    instead of the benchmarks, one thread
//                                    inserts every key once, runs the
//                                    workload's first 400k operations and
//                                    has callgrind count the instructions of
//                                    the last 200k: a measure of the work per
//                                    operation that load on the machine does
//                                    not move.
#include <malloc.h>
#include <valgrind/callgrind.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "bench/sim/trace.h"
#include "benchmark/benchmark.h"
#include "cache/l1_cache.h"
#include "cache/l1/wtinylfu_cache.h"

namespace fanout::cache {
namespace {

constexpr int kKeys = 100'000;
constexpr int kValueBytes = 100;
constexpr int kSequenceLength = 1 << 20;  // per thread; a power of two
constexpr int kMaxThreads = 2;
constexpr int kShards = 16;
const absl::Time kNow = absl::FromUnixSeconds(1'700'000'000);

struct Workload {
  std::vector<std::string> keys;
  std::vector<std::vector<uint32_t>> sequences;  // key indices, one per thread
  Entry entry;
};

const Workload& GetWorkload() {
  static const Workload* const workload = [] {
    auto* w = new Workload;
    for (int i = 0; i < kKeys; ++i) {
      w->keys.push_back(CompositeKey("bench", absl::StrFormat("config/item-%06d", i)));
    }
    for (int t = 0; t < kMaxThreads; ++t) {
      sim::SyntheticSpec spec;
      spec.kind = sim::SyntheticSpec::Kind::kZipf;
      spec.alpha = 0.99;
      spec.keys = kKeys;
      spec.length = kSequenceLength;
      spec.seed = 1 + t;
      std::vector<uint32_t> seq;
      for (uint64_t k : sim::GenerateTrace(spec)) seq.push_back(static_cast<uint32_t>(k));
      w->sequences.push_back(std::move(seq));
    }
    w->entry.value = std::string(kValueBytes, 'v');
    w->entry.fresh_until = kNow + absl::Hours(1);
    w->entry.expires_at = kNow + absl::Hours(2);
    w->entry.stale_until = kNow + absl::Hours(3);
    return w;
  }();
  return *workload;
}

// The floor: a sharded hash map behind mutexes, no policy, no bound.
class ShardedMapBaseline final : public L1Cache {
 public:
  std::optional<Freshness> Lookup(absl::string_view key, absl::Time now, Entry* out) override {
    Shard& s = ShardFor(key);
    absl::MutexLock l(&s.mu);
    auto it = s.map.find(key);
    if (it == s.map.end()) return std::nullopt;
    *out = it->second;
    return FreshnessAt(*out, now);
  }
  bool Insert(absl::string_view key, Entry entry) override {
    Shard& s = ShardFor(key);
    absl::MutexLock l(&s.mu);
    s.map.insert_or_assign(std::string(key), std::move(entry));
    return true;
  }
  bool Erase(absl::string_view) override { return false; }
  uint64_t ErasePrefix(absl::string_view) override { return 0; }
  L1Stats Stats() const override { return {}; }

 private:
  struct alignas(64) Shard {
    absl::Mutex mu;
    absl::flat_hash_map<std::string, Entry> map ABSL_GUARDED_BY(mu);
  };
  Shard& ShardFor(absl::string_view key) { return shards_[(absl::HashOf(key) >> 32) % kShards]; }
  Shard shards_[kShards];
};

enum class Impl { kBaseline, kWTinyLfu, kLru };

std::unique_ptr<L1Cache> Make(Impl impl, uint64_t capacity_bytes) {
  L1Options options;
  options.capacity_bytes = capacity_bytes;
  options.shards = kShards;
  switch (impl) {
    case Impl::kBaseline:
      return std::make_unique<ShardedMapBaseline>();
    case Impl::kWTinyLfu:
      return NewWTinyLfuCache(options);
    case Impl::kLru:
      return NewLruL1Cache(options);
  }
  return nullptr;
}

// One cache per implementation, shared by the threads of a run and built
// once (function-local statics initialize thread-safely).
template <Impl kImpl>
L1Cache& ReadCache() {
  static L1Cache* const cache = [] {
    const Workload& w = GetWorkload();
    L1Cache* c = Make(kImpl, 256ull << 20).release();
    for (const std::string& key : w.keys) c->Insert(key, w.entry);
    return c;
  }();
  return *cache;
}

template <Impl kImpl>
L1Cache& MixedCache() {
  static L1Cache* const cache = [] {
    const Workload& w = GetWorkload();
    const uint64_t all = kKeys * ChargeOf(w.keys[0], w.entry);
    return Make(kImpl, all / 4).release();
  }();
  return *cache;
}

template <Impl kImpl>
void BM_ReadHit(benchmark::State& state) {
  const Workload& w = GetWorkload();
  L1Cache& cache = ReadCache<kImpl>();
  const std::vector<uint32_t>& seq = w.sequences[state.thread_index() % kMaxThreads];
  uint32_t i = 0;
  uint64_t misses = 0;
  Entry out;
  for (auto _ : state) {
    const auto freshness = cache.Lookup(w.keys[seq[i++ & (kSequenceLength - 1)]], kNow, &out);
    misses += freshness.has_value() ? 0 : 1;
    benchmark::DoNotOptimize(out.value.view().data());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["misses"] = benchmark::Counter(static_cast<double>(misses));
}

template <Impl kImpl>
void BM_Mixed(benchmark::State& state) {
  const Workload& w = GetWorkload();
  L1Cache& cache = MixedCache<kImpl>();
  const std::vector<uint32_t>& seq = w.sequences[state.thread_index() % kMaxThreads];
  uint32_t i = 0;
  uint64_t hits = 0;
  uint64_t lookups = 0;
  Entry out;
  for (auto _ : state) {
    const std::string& key = w.keys[seq[i & (kSequenceLength - 1)]];
    if (i % 10 == 9) {
      cache.Insert(key, w.entry);
    } else {
      hits += cache.Lookup(key, kNow, &out).has_value() ? 1 : 0;
      ++lookups;
    }
    ++i;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["hit_ratio"] = benchmark::Counter(
      lookups == 0 ? 0 : static_cast<double>(hits) / static_cast<double>(lookups),
      benchmark::Counter::kAvgThreads);
}

BENCHMARK_TEMPLATE(BM_ReadHit, Impl::kBaseline)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_ReadHit, Impl::kWTinyLfu)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_ReadHit, Impl::kLru)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Mixed, Impl::kBaseline)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Mixed, Impl::kWTinyLfu)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Mixed, Impl::kLru)->Threads(1)->Threads(2)->UseRealTime();

uint64_t HeapInUse() {
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

uint64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t pages = 0;
  uint64_t resident = 0;
  statm >> pages >> resident;
  return resident * 4096;
}

void MeasureEntryMemory() {
  for (Impl impl : {Impl::kWTinyLfu, Impl::kLru}) {
    for (const size_t value_bytes : {size_t{10}, size_t{100}, size_t{1000}}) {
      const int entries = value_bytes >= 1000 ? 250'000 : 1'000'000;
      std::vector<std::string> keys;
      keys.reserve(entries);
      for (int i = 0; i < entries; ++i) {
        keys.push_back(CompositeKey("tenant", absl::StrFormat("config/item-%07d", i)));
      }
      L1Options options;
      options.capacity_bytes = 64ull << 30;
      options.max_entry_fraction = 1;
      std::unique_ptr<L1Cache> cache =
          impl == Impl::kWTinyLfu ? NewWTinyLfuCache(options) : NewLruL1Cache(options);
      malloc_trim(0);
      const uint64_t heap = HeapInUse();
      const uint64_t rss = ResidentBytes();
      for (const std::string& key : keys) {
        Entry e;
        e.value = std::string(value_bytes, 'v');
        e.fresh_until = e.expires_at = e.stale_until = kNow + absl::Hours(1);
        cache->Insert(key, std::move(e));
      }
      const L1Stats stats = cache->Stats();
      const auto per_entry = [&](uint64_t bytes) {
        return static_cast<double>(bytes) / static_cast<double>(stats.entries);
      };
      std::printf("memory %s %zu %zu %llu %.1f %.1f %.1f\n",
                  impl == Impl::kWTinyLfu ? "wtinylfu" : "lru", keys[0].size(), value_bytes,
                  static_cast<unsigned long long>(stats.entries), per_entry(HeapInUse() - heap),
                  per_entry(ResidentBytes() - rss), per_entry(stats.bytes));
      std::fflush(stdout);
      cache.reset();
      keys = {};
      malloc_trim(0);
    }
  }
}

// Returns false on an unknown workload or implementation.
bool CountOps(const std::string& workload, const std::string& impl_name) {
  Impl impl;
  if (impl_name == "baseline") {
    impl = Impl::kBaseline;
  } else if (impl_name == "wtinylfu") {
    impl = Impl::kWTinyLfu;
  } else if (impl_name == "lru") {
    impl = Impl::kLru;
  } else {
    return false;
  }
  if (workload != "read" && workload != "mixed") return false;
  const bool mixed = workload == "mixed";
  const Workload& w = GetWorkload();
  std::unique_ptr<L1Cache> cache =
      Make(impl, mixed ? kKeys * ChargeOf(w.keys[0], w.entry) / 4 : 256ull << 20);
  // Every key once: all resident for reads; for the mixed workload, a full
  // cache that has evicted (its steady state).
  for (const std::string& key : w.keys) cache->Insert(key, w.entry);
  constexpr uint32_t kOps = 400'000;
  const std::vector<uint32_t>& seq = w.sequences[0];
  uint64_t hits = 0;
  Entry out;
  for (uint32_t i = 0; i < kOps; ++i) {
    if (i == kOps / 2) CALLGRIND_START_INSTRUMENTATION;
    const std::string& key = w.keys[seq[i]];
    if (mixed && i % 10 == 9) {
      cache->Insert(key, w.entry);
    } else {
      hits += cache->Lookup(key, kNow, &out).has_value() ? 1 : 0;
    }
  }
  CALLGRIND_STOP_INSTRUMENTATION;
  std::printf("ops %s %s %u hits %llu\n", workload.c_str(), impl_name.c_str(), kOps / 2,
              static_cast<unsigned long long>(hits));
  return true;
}

}  // namespace
}  // namespace fanout::cache

int main(int argc, char** argv) {
  std::string count_ops;
  std::string impl = "wtinylfu";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--entry_memory") {
      fanout::cache::MeasureEntryMemory();
      return 0;
    }
    if (arg.rfind("--count_ops=", 0) == 0) count_ops = arg.substr(12);
    if (arg.rfind("--impl=", 0) == 0) impl = arg.substr(7);
  }
  if (!count_ops.empty()) {
    if (fanout::cache::CountOps(count_ops, impl)) return 0;
    std::fprintf(stderr, "fanout-l1-bench: --count_ops=read|mixed --impl=baseline|wtinylfu|lru\n");
    return 2;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
