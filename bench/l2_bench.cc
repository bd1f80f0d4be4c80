// fanout-l2-bench: the Redis L2 tier against raw hiredis on the same Redis,
// in the same process and run, in interleaved pairs (tier, raw, tier, raw,
// ...), and the tier's lookups while Redis is frozen (SIGSTOP). Prints one
// JSON document; bench/run_l2.sh turns it into the l2 section of
// bench/RESULTS.md.
//
//   fanout-l2-bench --redis 127.0.0.1:6379 --redis_pid PID [--pairs 5]
//                   [--duration 1s] [--freeze 3s]
//
// Benchmarks (every tier call through RedisTier, every raw call through a
// blocking hiredis context):
//   c1      1 in flight: a caller thread calls Lookup and waits for its
//           answer, against a redisCommand GET loop
//   c32     32 in flight: each answer (on the tier's I/O thread) starts the
//           next Lookup, against windows of 32 pipelined GETs
//   batch   100 keys at a time: one LookupMany against 100 Lookups started
//           together (and a raw MGET of 100 for reference)
//   freeze  4 callers doing Lookups, each at most one a millisecond; Redis
//           is SIGSTOPped for
//           --freeze, then SIGCONT: the latency of the calls made while
//           it was frozen, when the circuit opened, when lookups hit again
//
// With --raw_get_only: one run of the hiredis GET loop alone (1 in flight,
// --value_bytes values), printed as fanout-bench prints a run: the baseline
// run_l2.sh adds to the Echo floor for fanoutd's L2-hit Get.
#include <hiredis/hiredis.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
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
#include "cache/tiers/redis/redis_tier.h"
#include "common/log.h"

ABSL_FLAG(std::string, redis, "127.0.0.1:6379", "Redis to measure against (host:port)");
ABSL_FLAG(int, redis_pid, 0, "pid of that redis-server, for the freeze benchmark (0: skip it)");
ABSL_FLAG(int, pairs, 5, "tier/raw pairs per benchmark");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(1), "length of one measured run");
ABSL_FLAG(absl::Duration, freeze, absl::Seconds(3), "how long Redis stays SIGSTOPped");
ABSL_FLAG(absl::Duration, timeout, absl::Milliseconds(50), "the tier's command timeout");
ABSL_FLAG(int, keys, 1000, "keys stored and read");
ABSL_FLAG(int, value_bytes, 128, "bytes per value");
ABSL_FLAG(bool, raw_get_only, false, "only a raw hiredis GET loop, as one fanout-bench run");

namespace fanout::bench {
namespace {

using cache::Entry;
using cache::RedisTier;

std::string Ckey(int i) { return cache::CompositeKey("bench", absl::StrCat("key-", i)); }

struct Run {
  std::string bench;
  std::string side;
  int pair = 0;
  double throughput = 0;  // successful calls (or keys, for batch) per second
  double p50_us = 0;
  double p99_us = 0;
  double max_us = 0;
  uint64_t errors = 0;
};

Run Finish(std::string bench, std::string side, int pair, const LatencyHistogram& h, uint64_t ok,
           uint64_t errors, absl::Duration took) {
  Run r;
  r.bench = std::move(bench);
  r.side = std::move(side);
  r.pair = pair;
  r.throughput = ok / absl::ToDoubleSeconds(took);
  r.p50_us = h.Percentile(50) / 1e3;
  r.p99_us = h.Percentile(99) / 1e3;
  r.max_us = h.max() / 1e3;
  r.errors = errors;
  return r;
}

uint64_t Nanos(absl::Duration d) { return static_cast<uint64_t>(absl::ToInt64Nanoseconds(d)); }

// ---- Tier side ------------------------------------------------------------

absl::StatusOr<Entry> LookupWait(RedisTier& tier, const std::string& key) {
  absl::Notification done;
  absl::StatusOr<Entry> out;
  tier.Lookup(key, absl::Now() + absl::Seconds(5), [&](absl::StatusOr<Entry> e) {
    out = std::move(e);
    done.Notify();
  });
  done.WaitForNotification();
  return out;
}

Run TierC1(RedisTier& tier, int keys, absl::Duration duration, int pair) {
  LatencyHistogram h;
  uint64_t ok = 0, errors = 0;
  const absl::Time start = absl::Now();
  for (int i = 0; absl::Now() - start < duration; ++i) {
    const absl::Time t0 = absl::Now();
    absl::StatusOr<Entry> e = LookupWait(tier, Ckey(i % keys));
    h.Record(Nanos(absl::Now() - t0));
    e.ok() ? ++ok : ++errors;
  }
  return Finish("c1", "tier", pair, h, ok, errors, absl::Now() - start);
}

// `inflight` lookups kept going by their own answers, on the tier's thread.
Run TierPipelined(RedisTier& tier, int keys, int inflight, absl::Duration duration, int pair) {
  struct State {
    RedisTier* tier;
    int keys;
    absl::Time end;
    LatencyHistogram h;  // recorded on the tier's I/O thread only
    uint64_t ok = 0, errors = 0;
    std::atomic<int> next{0};
    std::atomic<int> running;
    absl::Notification all_done;
  };
  auto s = std::make_shared<State>();
  s->tier = &tier;
  s->keys = keys;
  s->running = inflight;
  const absl::Time start = absl::Now();
  s->end = start + duration;
  struct Issuer {
    static void Go(std::shared_ptr<State> s) {
      const int i = s->next.fetch_add(1);
      const absl::Time t0 = absl::Now();
      s->tier->Lookup(Ckey(i % s->keys), absl::Now() + absl::Seconds(5),
                      [s, t0](absl::StatusOr<Entry> e) {
                        const absl::Time now = absl::Now();
                        s->h.Record(Nanos(now - t0));
                        e.ok() ? ++s->ok : ++s->errors;
                        // A refused call answers inline: do not recurse on it.
                        if (e.ok() && now < s->end) {
                          Go(s);
                        } else if (s->running.fetch_sub(1) == 1) {
                          s->all_done.Notify();
                        }
                      });
    }
  };
  for (int i = 0; i < inflight; ++i) Issuer::Go(s);
  s->all_done.WaitForNotification();
  return Finish(absl::StrCat("c", inflight), "tier", pair, s->h, s->ok, s->errors,
                absl::Now() - start);
}

Run TierBatch(RedisTier& tier, int keys, bool many, absl::Duration duration, int pair) {
  constexpr int kBatch = 100;
  LatencyHistogram h;
  uint64_t ok = 0, errors = 0;
  const absl::Time start = absl::Now();
  for (int round = 0; absl::Now() - start < duration; ++round) {
    std::vector<std::string> batch;
    for (int j = 0; j < kBatch; ++j) batch.push_back(Ckey((round * kBatch + j) % keys));
    const absl::Time t0 = absl::Now();
    if (many) {
      absl::Notification done;
      tier.LookupMany(batch, absl::Now() + absl::Seconds(5),
                      [&](std::vector<absl::StatusOr<Entry>> r) {
                        for (auto& e : r) e.ok() ? ++ok : ++errors;
                        done.Notify();
                      });
      done.WaitForNotification();
    } else {
      absl::Mutex mu;
      int left = kBatch;
      for (const std::string& k : batch) {
        tier.Lookup(k, absl::Now() + absl::Seconds(5), [&](absl::StatusOr<Entry> e) {
          absl::MutexLock l(&mu);
          e.ok() ? ++ok : ++errors;
          --left;
        });
      }
      absl::MutexLock l(&mu);
      mu.Await(absl::Condition(
          +[](int* n) { return *n == 0; }, &left));
    }
    h.Record(Nanos(absl::Now() - t0));
  }
  return Finish(many ? "batch" : "batch-single", "tier", pair, h, ok, errors, absl::Now() - start);
}

// ---- Raw hiredis side -----------------------------------------------------

class Raw {
 public:
  Raw(const cache::RedisAddress& a, const cache::RedisKeys& names, int keys) {
    ctx_ = redisConnect(a.host.c_str(), a.port);
    for (int i = 0; i < keys; ++i) keys_.push_back(names.Value(Ckey(i)));
  }
  ~Raw() {
    if (ctx_) redisFree(ctx_);
  }
  bool ok() const { return ctx_ != nullptr && ctx_->err == 0; }

  Run C1(absl::Duration duration, int pair) {
    LatencyHistogram h;
    uint64_t ok = 0, errors = 0;
    const absl::Time start = absl::Now();
    for (size_t i = 0; absl::Now() - start < duration; ++i) {
      const std::string& k = keys_[i % keys_.size()];
      const char* argv[] = {"GET", k.data()};
      const size_t lens[] = {3, k.size()};
      const absl::Time t0 = absl::Now();
      auto* r = static_cast<redisReply*>(redisCommandArgv(ctx_, 2, argv, lens));
      h.Record(Nanos(absl::Now() - t0));
      Count(r, &ok, &errors);
    }
    return Finish("c1", "raw", pair, h, ok, errors, absl::Now() - start);
  }

  // Windows of `inflight` pipelined GETs; each GET's latency runs from the
  // window's write to its reply.
  Run Pipelined(int inflight, absl::Duration duration, int pair) {
    LatencyHistogram h;
    uint64_t ok = 0, errors = 0;
    size_t i = 0;
    const absl::Time start = absl::Now();
    while (absl::Now() - start < duration) {
      const absl::Time t0 = absl::Now();
      for (int j = 0; j < inflight; ++j, ++i) {
        const std::string& k = keys_[i % keys_.size()];
        const char* argv[] = {"GET", k.data()};
        const size_t lens[] = {3, k.size()};
        redisAppendCommandArgv(ctx_, 2, argv, lens);
      }
      for (int j = 0; j < inflight; ++j) {
        void* r = nullptr;
        if (redisGetReply(ctx_, &r) != REDIS_OK) {
          ++errors;
          continue;
        }
        h.Record(Nanos(absl::Now() - t0));
        Count(static_cast<redisReply*>(r), &ok, &errors);
      }
    }
    return Finish(absl::StrCat("c", inflight), "raw", pair, h, ok, errors, absl::Now() - start);
  }

  Run Mget(absl::Duration duration, int pair) {
    constexpr int kBatch = 100;
    LatencyHistogram h;
    uint64_t ok = 0, errors = 0;
    const absl::Time start = absl::Now();
    for (int round = 0; absl::Now() - start < duration; ++round) {
      std::vector<const char*> argv = {"MGET"};
      std::vector<size_t> lens = {4};
      for (int j = 0; j < kBatch; ++j) {
        const std::string& k = keys_[(round * kBatch + j) % keys_.size()];
        argv.push_back(k.data());
        lens.push_back(k.size());
      }
      const absl::Time t0 = absl::Now();
      auto* r = static_cast<redisReply*>(
          redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()));
      h.Record(Nanos(absl::Now() - t0));
      if (r != nullptr && r->type == REDIS_REPLY_ARRAY) {
        for (size_t j = 0; j < r->elements; ++j) {
          r->element[j]->type == REDIS_REPLY_STRING ? ++ok : ++errors;
        }
      } else {
        errors += kBatch;
      }
      if (r) freeReplyObject(r);
    }
    return Finish("batch", "raw", pair, h, ok, errors, absl::Now() - start);
  }

 private:
  static void Count(redisReply* r, uint64_t* ok, uint64_t* errors) {
    if (r != nullptr && r->type == REDIS_REPLY_STRING) {
      ++*ok;
    } else {
      ++*errors;
    }
    if (r) freeReplyObject(r);
  }

  redisContext* ctx_ = nullptr;
  std::vector<std::string> keys_;
};

// ---- Freeze ---------------------------------------------------------------

struct Call {
  absl::Time start;
  absl::Duration took;
  bool ok;
};

std::string Freeze(RedisTier& tier, int keys, int pid, absl::Duration freeze) {
  constexpr int kCallers = 4;
  constexpr absl::Duration kPace = absl::Milliseconds(1);
  std::atomic<bool> stop{false};
  absl::Mutex mu;
  std::vector<Call> calls;
  std::vector<std::thread> callers;
  for (int t = 0; t < kCallers; ++t) {
    callers.emplace_back([&, t] {
      std::vector<Call> mine;
      // Paced, one call a millisecond per caller at most: refused calls
      // answer in microseconds, and an unpaced loop of them would only
      // measure how fast this machine spins.
      absl::Time next = absl::Now();
      for (int i = t; !stop.load(); i += kCallers) {
        const absl::Time t0 = absl::Now();
        absl::StatusOr<Entry> e = LookupWait(tier, Ckey(i % keys));
        mine.push_back({t0, absl::Now() - t0, e.ok()});
        next += kPace;
        const absl::Duration wait = next - absl::Now();
        if (wait > absl::ZeroDuration()) {
          absl::SleepFor(wait);
        } else {
          next = absl::Now();
        }
      }
      absl::MutexLock l(&mu);
      calls.insert(calls.end(), mine.begin(), mine.end());
    });
  }
  absl::SleepFor(absl::Seconds(1));  // baseline
  const absl::Time stopped = absl::Now();
  ::kill(pid, SIGSTOP);
  absl::Time opened = absl::InfiniteFuture();
  while (absl::Now() - stopped < freeze) {
    if (opened == absl::InfiniteFuture() &&
        tier.client_stats().circuit == cache::CircuitBreaker::State::kOpen) {
      opened = absl::Now();
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
  const absl::Time resumed = absl::Now();
  ::kill(pid, SIGCONT);
  absl::SleepFor(absl::Seconds(3));  // recovery
  stop = true;
  for (auto& c : callers) c.join();

  LatencyHistogram before, during, after;
  uint64_t during_ok = 0, during_n = 0, over_timeout = 0;
  absl::Time first_hit_after = absl::InfiniteFuture();
  const absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
  for (const Call& c : calls) {
    if (c.start < stopped) {
      before.Record(Nanos(c.took));
    } else if (c.start < resumed) {
      during.Record(Nanos(c.took));
      ++during_n;
      if (c.ok) ++during_ok;
      if (c.took > timeout) ++over_timeout;
    } else {
      after.Record(Nanos(c.took));
      if (c.ok) first_hit_after = std::min(first_hit_after, c.start + c.took);
    }
  }
  auto ms = [](absl::Duration d) {
    return d == absl::InfiniteDuration() ? -1.0 : absl::ToDoubleMilliseconds(d);
  };
  return absl::StrFormat(
      "{\"freeze_ms\": %.0f, \"timeout_ms\": %.0f, \"callers\": %d, "
      "\"before\": {\"calls\": %d, \"p50_us\": %.1f, \"p99_us\": %.1f}, "
      "\"during\": {\"calls\": %d, \"ok\": %d, \"p50_us\": %.1f, \"p99_us\": %.1f, "
      "\"max_us\": %.1f, \"over_timeout\": %d}, "
      "\"after\": {\"calls\": %d, \"p50_us\": %.1f, \"p99_us\": %.1f}, "
      "\"circuit_open_after_ms\": %.1f, \"first_hit_after_thaw_ms\": %.1f}",
      ms(freeze), ms(timeout), kCallers, before.count(), before.Percentile(50) / 1e3,
      before.Percentile(99) / 1e3, during_n, during_ok, during.Percentile(50) / 1e3,
      during.Percentile(99) / 1e3, during.max() / 1e3, over_timeout, after.count(),
      after.Percentile(50) / 1e3, after.Percentile(99) / 1e3, ms(opened - stopped),
      ms(first_hit_after - resumed));
}

std::string ToJson(const Run& r) {
  return absl::StrFormat(
      "{\"bench\": \"%s\", \"side\": \"%s\", \"pair\": %d, \"throughput\": %.1f, "
      "\"p50_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f, \"errors\": %d}",
      r.bench, r.side, r.pair, r.throughput, r.p50_us, r.p99_us, r.max_us, r.errors);
}

// The raw GET loop alone: --keys keys of --value_bytes bytes, one GET at a
// time for --duration after a quarter of it as warm-up.
int RawGetOnly(const cache::RedisAddress& address) {
  const int keys = absl::GetFlag(FLAGS_keys);
  const std::string value(absl::GetFlag(FLAGS_value_bytes), 'v');
  const cache::RedisKeys names("l2bench-raw:");
  redisContext* ctx = redisConnect(address.host.c_str(), address.port);
  if (ctx == nullptr || ctx->err) {
    std::fprintf(stderr, "raw hiredis cannot connect\n");
    return 1;
  }
  for (int i = 0; i < keys; ++i) {
    const std::string k = names.Value(Ckey(i));
    const char* argv[] = {"SET", k.data(), value.data()};
    const size_t lens[] = {3, k.size(), value.size()};
    if (auto* r = static_cast<redisReply*>(redisCommandArgv(ctx, 3, argv, lens))) {
      freeReplyObject(r);
    }
  }
  redisFree(ctx);
  Raw raw(address, names, keys);
  if (!raw.ok()) return 1;
  const absl::Duration d = absl::GetFlag(FLAGS_duration);
  raw.C1(d / 4, 0);
  const Run r = raw.C1(d, 1);
  std::printf(
      "{\"throughput\":%.3f,\"errors\":%d,\"latency_us\":{\"p50\":%.3f,\"p99\":%.3f,"
      "\"max\":%.3f}}\n",
      r.throughput, static_cast<int>(r.errors), r.p50_us, r.p99_us, r.max_us);
  return 0;
}

int Main() {
  SetLogLevel(LogLevel::kError);
  absl::StatusOr<cache::RedisAddress> address =
      cache::ParseRedisAddress(absl::GetFlag(FLAGS_redis));
  if (!address.ok() || address->is_unix()) {
    std::fprintf(stderr, "--redis: a host:port is needed\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_raw_get_only)) return RawGetOnly(*address);
  cache::RedisClientOptions o;
  o.address = *address;
  o.command_timeout = absl::GetFlag(FLAGS_timeout);
  cache::RedisTierOptions t;
  t.key_prefix = "l2bench:";
  absl::StatusOr<std::unique_ptr<RedisTier>> tier = cache::NewRedisTier(o, t, Clock::Real());
  if (!tier.ok() || !(*tier)->Stats().available) {
    std::fprintf(stderr, "cannot reach Redis at %s\n", address->ToString().c_str());
    return 1;
  }
  const int keys = absl::GetFlag(FLAGS_keys);
  const std::string value(absl::GetFlag(FLAGS_value_bytes), 'v');
  for (int i = 0; i < keys; ++i) {
    Entry e;
    const absl::Time now = absl::Now();
    e.value = value;
    e.fetched_at = now;
    e.fresh_until = now + absl::Hours(1);
    e.expires_at = now + absl::Hours(1);
    e.stale_until = now + absl::Hours(2);
    absl::Notification done;
    (*tier)->Store(Ckey(i), e, [&](absl::Status) { done.Notify(); });
    done.WaitForNotification();
  }
  Raw raw(*address, (*tier)->keys(), keys);
  if (!raw.ok()) {
    std::fprintf(stderr, "raw hiredis cannot connect\n");
    return 1;
  }

  const absl::Duration d = absl::GetFlag(FLAGS_duration);
  const int pairs = absl::GetFlag(FLAGS_pairs);
  std::vector<Run> runs;
  // Warm-up, not recorded.
  TierC1(**tier, keys, d / 4, 0);
  raw.C1(d / 4, 0);
  for (int p = 1; p <= pairs; ++p) {
    runs.push_back(TierC1(**tier, keys, d, p));
    runs.push_back(raw.C1(d, p));
  }
  for (int p = 1; p <= pairs; ++p) {
    runs.push_back(TierPipelined(**tier, keys, 32, d, p));
    runs.push_back(raw.Pipelined(32, d, p));
  }
  for (int p = 1; p <= pairs; ++p) {
    runs.push_back(TierBatch(**tier, keys, /*many=*/true, d, p));
    Run single = TierBatch(**tier, keys, /*many=*/false, d, p);
    single.side = "tier-single";
    single.bench = "batch";
    runs.push_back(single);
    runs.push_back(raw.Mget(d, p));
  }
  std::string freeze = "null";
  if (absl::GetFlag(FLAGS_redis_pid) > 0) {
    freeze = Freeze(**tier, keys, absl::GetFlag(FLAGS_redis_pid), absl::GetFlag(FLAGS_freeze));
  }
  std::printf("{\"runs\": [\n");
  for (size_t i = 0; i < runs.size(); ++i) {
    std::printf("  %s%s\n", ToJson(runs[i]).c_str(), i + 1 < runs.size() ? "," : "");
  }
  std::printf("], \"freeze\": %s}\n", freeze.c_str());
  return 0;
}

}  // namespace
}  // namespace fanout::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
#ifdef NDEBUG
  // As fanoutd does (server/main.cc): Debian's Abseil keeps a process-wide
  // lock graph for every absl::Mutex otherwise.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  return fanout::bench::Main();
}
