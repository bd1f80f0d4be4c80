// fanout-l3-bench: the survival tier's read latency and fill throughput,
// each measured side by side with a baseline in the same binary, subject
// and baseline alternating in pairs. One JSON object per line on stdout.
//
//   --mode=read   L3 fallback read on a warm DB, one thread, keys uniform
//                 over --keys: RocksDbTier::Lookup (answered from memory on
//                 the calling thread) against a plain rocksdb::DB::Get loop
//                 on the very same DB (same options, block cache and data).
//                 Then, for the record, without a baseline: every read
//                 through the reader pool (inline reads off), and reads
//                 whose blocks are not in the block cache (the OS page cache
//                 has them), which go through the pool.
//   --mode=fill   fill throughput on --threads threads: every operation is a
//                 fill of a never-seen key as the read path makes one (L1
//                 miss, lower tier miss, the origin's value, stored in the
//                 lower tier and inserted into L1), with an origin that
//                 answers from memory at once. L1 only against L1 + L3
//                 write-through; the L3 side also reports how many stores
//                 the tier applied and dropped while measured.
#include <stdlib.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "bench/histogram.h"
#include "cache/l1/wtinylfu_cache.h"
#include "cache/tiers/rocksdb/rocksdb_tier.h"
#include "rocksdb/db.h"

ABSL_FLAG(std::string, mode, "read", "read or fill");
ABSL_FLAG(int, keys, 100000, "read: keys in the DB");
ABSL_FLAG(int, value_bytes, 128, "bytes of each value");
ABSL_FLAG(int, reads, 200000, "read: lookups per run");
ABSL_FLAG(int, pairs, 5, "subject/baseline pairs");
ABSL_FLAG(int, threads, 1, "fill: filling threads");
ABSL_FLAG(double, seconds, 1.0, "fill: length of each run");
ABSL_FLAG(int, origin_cpu_us, 0,
          "fill: CPU time the origin spends on each answer (0: it answers at once)");
ABSL_FLAG(std::string, dir, "", "where to put the DBs (default: a new directory under TMPDIR)");

namespace fanout::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// CPU time this process has used (every thread: fillers, the tier's writer,
// RocksDB's flushes and compactions).
double ProcessCpuSeconds() {
  rusage u;
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

uint64_t Nanos(Clock::duration d) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
}

std::string Key(int i) { return cache::CompositeKey("bench", absl::StrFormat("config/%08d", i)); }

cache::Entry MakeEntry(std::string value, absl::Time now) {
  cache::Entry e;
  e.value = std::move(value);
  e.version = 1;
  e.fetched_at = now;
  e.fresh_until = now + absl::Hours(1);
  e.expires_at = now + absl::Hours(2);
  e.stale_until = now + absl::Hours(24);
  return e;
}

std::unique_ptr<cache::RocksDbTier> OpenTier(const cache::RocksDbTierOptions& o) {
  absl::StatusOr<std::unique_ptr<cache::RocksDbTier>> t = cache::RocksDbTier::Open(o);
  if (!t.ok()) {
    std::fprintf(stderr, "l3-bench: %s\n", std::string(t.status().message()).c_str());
    std::exit(1);
  }
  return *std::move(t);
}

// A lookup through the tier, waited for: inline when answered from memory,
// else the reader pool's hand-off is part of the latency.
bool LookupAndWait(cache::RocksDbTier& tier, const std::string& key) {
  std::atomic<int> state{0};  // 0 waiting, 1 found, 2 not
  tier.Lookup(key, absl::Now() + absl::Seconds(10), [&](absl::StatusOr<cache::Entry> e) {
    state.store(e.ok() ? 1 : 2, std::memory_order_release);
  });
  int s;
  // Inline answers are already in; a pool answer needs a core to run on.
  while ((s = state.load(std::memory_order_acquire)) == 0) std::this_thread::yield();
  return s == 1;
}

struct Run {
  LatencyHistogram hist;
  int misses = 0;
};

Run RunLookups(cache::RocksDbTier& tier, const std::vector<std::string>& keys,
               const std::vector<uint32_t>& seq) {
  Run r;
  for (uint32_t i : seq) {
    const auto t0 = Clock::now();
    const bool found = LookupAndWait(tier, keys[i]);
    r.hist.Record(Nanos(Clock::now() - t0));
    r.misses += found ? 0 : 1;
  }
  return r;
}

Run RunRawGets(rocksdb::DB& db, const std::vector<std::string>& keys,
               const std::vector<uint32_t>& seq) {
  Run r;
  const rocksdb::ReadOptions read;
  std::string value;
  for (uint32_t i : seq) {
    const auto t0 = Clock::now();
    const rocksdb::Status s = db.Get(read, rocksdb::Slice(keys[i]), &value);
    r.hist.Record(Nanos(Clock::now() - t0));
    r.misses += s.ok() ? 0 : 1;
  }
  return r;
}

std::string Summary(const char* side, int pair, const Run& r) {
  return absl::StrFormat(
      R"({"mode":"read","side":"%s","pair":%d,"n":%d,"misses":%d,"p50_ns":%d,"p99_ns":%d,"mean_ns":%.0f})",
      side, pair, r.hist.count(), r.misses, r.hist.Percentile(50), r.hist.Percentile(99),
      r.hist.mean());
}

void ReadMode(const std::string& dir) {
  const int n_keys = absl::GetFlag(FLAGS_keys);
  const std::string value(absl::GetFlag(FLAGS_value_bytes), 'v');
  std::vector<std::string> keys;
  for (int i = 0; i < n_keys; ++i) keys.push_back(Key(i));
  std::mt19937 rng(1);
  std::vector<uint32_t> seq(absl::GetFlag(FLAGS_reads));
  for (uint32_t& i : seq) i = std::uniform_int_distribution<uint32_t>(0, n_keys - 1)(rng);

  cache::RocksDbTierOptions o;
  o.path = dir + "/read";
  {
    auto tier = OpenTier(o);
    // Stored no faster than the writer applies them: none may be dropped.
    const absl::Time now = absl::Now();
    std::atomic<int> outstanding{0};
    std::atomic<int> failed{0};
    for (int i = 0; i < n_keys; ++i) {
      while (outstanding.load() >= 1000) std::this_thread::yield();
      outstanding.fetch_add(1);
      tier->Store(keys[i], MakeEntry(value, now), [&](absl::Status s) {
        if (!s.ok()) failed.fetch_add(1);
        outstanding.fetch_sub(1);
      });
    }
    while (outstanding.load() > 0) std::this_thread::yield();
    if (failed.load() > 0) {
      std::fprintf(stderr, "l3-bench: %d stores failed\n", failed.load());
      std::exit(1);
    }
    if (!tier->Flush().ok() || !tier->CompactAll().ok()) std::exit(1);
  }
  // Warm: the DB reopened (as after a restart), every key read once.
  auto tier = OpenTier(o);
  rocksdb::DB& db = *tier->db_for_benchmarks();
  for (const std::string& k : keys) LookupAndWait(*tier, k);
  RunRawGets(db, keys, seq);

  const int pairs = absl::GetFlag(FLAGS_pairs);
  for (int p = 1; p <= pairs; ++p) {
    // Alternate which side goes first, so drift in the machine's load does
    // not favour one.
    if (p % 2 == 1) {
      std::printf("%s\n", Summary("subject", p, RunLookups(*tier, keys, seq)).c_str());
      std::printf("%s\n", Summary("baseline", p, RunRawGets(db, keys, seq)).c_str());
    } else {
      std::printf("%s\n", Summary("baseline", p, RunRawGets(db, keys, seq)).c_str());
      std::printf("%s\n", Summary("subject", p, RunLookups(*tier, keys, seq)).c_str());
    }
    std::fflush(stdout);
  }
  const cache::TierStats stats = tier->Stats();
  tier.reset();

  // Every read through the reader pool.
  o.inline_cached_reads = false;
  tier = OpenTier(o);
  for (const std::string& k : keys) LookupAndWait(*tier, k);
  std::printf("%s\n", Summary("pool", 0, RunLookups(*tier, keys, seq)).c_str());
  tier.reset();

  // Blocks not in the block cache (1 MiB for a DB of many times that): the
  // OS page cache has them; the reads go through the pool.
  o.inline_cached_reads = true;
  o.block_cache_bytes = 1 << 20;
  tier = OpenTier(o);
  for (const std::string& k : keys) LookupAndWait(*tier, k);
  std::printf("%s\n", Summary("block_cache_miss", 0, RunLookups(*tier, keys, seq)).c_str());
  absl::PrintF(R"({"mode":"read","side":"stats","hits":%d,"misses":%d,"timeouts":%d})"
               "\n",
               stats.hits, stats.misses, stats.timeouts);
}

// One fill of a never-seen key, as the read path makes one; `l3` may be null.
void Fill(cache::L1Cache& l1, cache::RocksDbTier* l3, const std::string& key,
          const std::string& origin_value) {
  const absl::Time now = absl::Now();
  cache::Entry e;
  if (l1.Lookup(key, now, &e).has_value()) return;  // never: keys are new
  // The lookup answers inline unless it needs the disk (a bloom filter's
  // false positive on a block not in the cache): then it is waited for, as a
  // fill waits for the next tier.
  if (l3 != nullptr && LookupAndWait(*l3, key)) return;
  // The origin's answer, after the CPU it is told to spend.
  static const auto origin_cpu = std::chrono::microseconds(absl::GetFlag(FLAGS_origin_cpu_us));
  if (origin_cpu.count() > 0) {
    const auto until = Clock::now() + origin_cpu;
    while (Clock::now() < until) {
    }
  }
  cache::Entry filled = MakeEntry(origin_value, now);
  if (l3 != nullptr) l3->Store(key, filled, [](absl::Status) {});
  l1.Insert(key, std::move(filled));
}

void FillMode(const std::string& dir) {
  const int threads = absl::GetFlag(FLAGS_threads);
  const absl::Duration length = absl::Seconds(absl::GetFlag(FLAGS_seconds));
  const std::string value(absl::GetFlag(FLAGS_value_bytes), 'v');
  int run_id = 0;
  auto run = [&](bool with_l3, const char* side, int pair) {
    cache::L1Options l1o;
    l1o.capacity_bytes = 64ull << 20;
    std::unique_ptr<cache::L1Cache> l1 = cache::NewWTinyLfuCache(l1o);
    std::unique_ptr<cache::RocksDbTier> l3;
    if (with_l3) {
      cache::RocksDbTierOptions o;
      o.path = absl::StrCat(dir, "/fill-", run_id++);
      l3 = OpenTier(o);
    }
    std::atomic<bool> go{false};
    std::atomic<bool> stop{false};
    std::vector<uint64_t> done(threads, 0);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        while (!go.load()) {
        }
        uint64_t n = 0;
        while (!stop.load(std::memory_order_relaxed)) {
          Fill(*l1, l3.get(), cache::CompositeKey("bench", absl::StrCat("t", t, "-", n)), value);
          ++n;
        }
        done[t] = n;
      });
    }
    const cache::TierStats before = l3 ? l3->Stats() : cache::TierStats{};
    const double cpu_before = ProcessCpuSeconds();
    go.store(true);
    const absl::Time start = absl::Now();
    absl::SleepFor(length);
    stop.store(true);
    for (auto& w : workers) w.join();
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    const cache::TierStats after = l3 ? l3->Stats() : cache::TierStats{};
    // The stores still queued are applied now, and their CPU counted: the
    // writer's work belongs to the fills that made it.
    if (l3 != nullptr && !l3->Flush().ok()) std::exit(1);
    const double cpu = ProcessCpuSeconds() - cpu_before;
    uint64_t fills = 0;
    for (uint64_t n : done) fills += n;
    absl::PrintF(
        R"({"mode":"fill","side":"%s","pair":%d,"threads":%d,"origin_cpu_us":%d,"fills_per_s":%.0f,"l3_stores_per_s":%.0f,"l3_dropped":%d,"l3_queued_at_end":%d,"cpu_us_per_fill":%.2f})"
        "\n",
        side, pair, threads, absl::GetFlag(FLAGS_origin_cpu_us), fills / seconds,
        (after.stores - before.stores) / seconds, after.stores_dropped - before.stores_dropped,
        after.queue_depth, cpu * 1e6 / fills);
    std::fflush(stdout);
    l3.reset();  // applies what is still queued, outside the measured time
    if (with_l3) fs::remove_all(absl::StrCat(dir, "/fill-", run_id - 1));
  };
  run(true, "warmup", 0);
  const int pairs = absl::GetFlag(FLAGS_pairs);
  for (int p = 1; p <= pairs; ++p) {
    if (p % 2 == 1) {
      run(true, "subject", p);
      run(false, "baseline", p);
    } else {
      run(false, "baseline", p);
      run(true, "subject", p);
    }
  }
}

}  // namespace
}  // namespace fanout::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
#ifdef NDEBUG
  // As fanoutd does: Debian's Abseil keeps its lock-order graph on in
  // release builds, a global lock on every absl::Mutex operation.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  std::string dir = absl::GetFlag(FLAGS_dir);
  bool made = false;
  if (dir.empty()) {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = absl::StrCat(base != nullptr ? base : "/tmp", "/fanout_l3bench_XXXXXX");
    dir = ::mkdtemp(pattern.data());
    made = true;
  }
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode == "read") {
    fanout::bench::ReadMode(dir);
  } else if (mode == "fill") {
    fanout::bench::FillMode(dir);
  } else {
    std::fprintf(stderr, "l3-bench: --mode must be read or fill\n");
    return 2;
  }
  if (made) std::filesystem::remove_all(dir);
  return 0;
}
