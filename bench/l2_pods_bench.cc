// fanout-l2-pods-bench: fanoutd pods sharing one Redis L2, measured end to
// end through gRPC. Prints one JSON document; bench/run_l2.sh starts the pods
// and Redis, and turns the document into the l2 section of bench/RESULTS.md.
//
//   fanout-l2-pods-bench --mode=pods --origin_listen 127.0.0.1:P
//       --targets A,B,C [--baseline_targets D,E,F]
//   fanout-l2-pods-bench --mode=freeze --targets X --redis_pid PID
//
// pods: serves the gRPC origin the pods ask (every key exists; each answer
// comes after --origin_delay; fetches are counted per key), then, for the
// pods in --targets and then in --baseline_targets:
//   stampede  --rounds rounds; each reads a new key with --concurrency
//             Gets started together, spread over the pods: origin fetches
//             per round, latencies, tiers
//   steady    one hot key read by --chains paced callers per pod for
//             --expiries x --ttl (the pods' cache.ttl): origin fetches per
//             expiry, how many reads were not answered by L1, latencies
// freeze: --chains paced callers read --keys keys from the first target,
// which must answer them from L2 (its L1 too small to keep them); after 1 s
// Redis is SIGSTOPped for --freeze, then SIGCONT, and the callers go on for
// 3 s: latency and tiers before, while frozen, and after.
#include <signal.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "bench/histogram.h"
#include "common/executor.h"
#include "fanout/v1/sidecar.grpc.pb.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, mode, "pods", "pods or freeze");
ABSL_FLAG(std::string, origin_listen, "127.0.0.1:0", "pods: where to serve the origin");
ABSL_FLAG(absl::Duration, origin_delay, absl::Milliseconds(50), "pods: the origin's answer time");
ABSL_FLAG(int, value_bytes, 128, "pods: bytes per origin value");
ABSL_FLAG(std::vector<std::string>, targets, {}, "the pods (host:port, comma-separated)");
ABSL_FLAG(std::vector<std::string>, baseline_targets, {},
          "pods: a second set of pods, measured the same way after the first");
ABSL_FLAG(int, rounds, 20, "pods: stampede rounds");
ABSL_FLAG(int, concurrency, 300, "pods: Gets started together in a stampede round");
ABSL_FLAG(int, expiries, 10, "pods: steady load lasts this many ttls");
ABSL_FLAG(absl::Duration, ttl, absl::Seconds(3), "pods: the pods' cache.ttl");
ABSL_FLAG(int, chains, 2, "paced callers per pod (steady) or in all (freeze)");
ABSL_FLAG(absl::Duration, pace, absl::Milliseconds(1), "each caller's least time between Gets");
ABSL_FLAG(int, redis_pid, 0, "freeze: the redis-server to SIGSTOP");
ABSL_FLAG(absl::Duration, freeze, absl::Seconds(3), "freeze: how long Redis stays stopped");
ABSL_FLAG(absl::Duration, timeout, absl::Milliseconds(50), "freeze: the pods' cache.l2.timeout");
ABSL_FLAG(int, keys, 1000, "freeze: keys k0..k{keys-1} read");

namespace fanout::bench {
namespace {

uint64_t Nanos(absl::Duration d) {
  return static_cast<uint64_t>(std::max<int64_t>(0, absl::ToInt64Nanoseconds(d)));
}

// The origin: every key exists; answers after a delay from a timer, so no
// gRPC thread waits. Counts fetches per key. Thread-safe.
class CountingOrigin final : public fanout::v1::Origin::CallbackService {
 public:
  CountingOrigin(absl::Duration delay, int value_bytes)
      : delay_(delay),
        padding_(value_bytes, 'v'),
        timers_(ThreadPoolExecutor::Create(1, "origin")) {}

  grpc::ServerUnaryReactor* Fetch(grpc::CallbackServerContext* context,
                                  const fanout::v1::FetchRequest* request,
                                  fanout::v1::FetchResponse* response) override {
    int64_t n;
    {
      absl::MutexLock l(&mu_);
      n = ++fetches_[request->key()];
    }
    response->set_found(true);
    response->set_value(absl::StrCat(request->key(), "#", n, ":", padding_));
    response->set_version(n);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    timers_->ScheduleAfter(delay_, [reactor] { reactor->Finish(grpc::Status::OK); });
    return reactor;
  }

  int64_t fetches(const std::string& key) {
    absl::MutexLock l(&mu_);
    auto it = fetches_.find(key);
    return it == fetches_.end() ? 0 : it->second;
  }

 private:
  const absl::Duration delay_;
  const std::string padding_;
  std::unique_ptr<ThreadPoolExecutor> timers_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, int64_t> fetches_ ABSL_GUARDED_BY(mu_);
};

struct Pod {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<fanout::v1::Sidecar::Stub> stub;
};

std::vector<Pod> Connect(const std::vector<std::string>& targets) {
  std::vector<Pod> pods;
  for (const std::string& t : targets) {
    Pod p;
    p.address = t;
    grpc::ChannelArguments args;
    args.SetInt("fanout.bench.channel", static_cast<int>(pods.size()));  // one connection each
    p.channel = grpc::CreateCustomChannel(t, grpc::InsecureChannelCredentials(), args);
    if (!p.channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(20))) {
      std::fprintf(stderr, "cannot connect to %s\n", t.c_str());
      std::exit(1);
    }
    p.stub = fanout::v1::Sidecar::NewStub(p.channel);
    pods.push_back(std::move(p));
  }
  return pods;
}

// One Get, blocking the calling thread (a bench caller's own thread).
struct Answer {
  bool ok = false;
  int tier = 0;
  absl::Duration took;
  std::string value;
};
Answer GetNow(Pod& pod, const std::string& key, absl::Duration timeout = absl::Seconds(10)) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
  fanout::v1::GetRequest req;
  req.set_key(key);
  fanout::v1::GetResponse resp;
  const absl::Time t0 = absl::Now();
  const grpc::Status s = pod.stub->Get(&ctx, req, &resp);
  Answer a;
  a.took = absl::Now() - t0;
  a.ok = s.ok();
  a.tier = s.ok() ? resp.served_by() : 0;
  a.value = resp.value();
  return a;
}

std::string Percentiles(const LatencyHistogram& h) {
  return absl::StrFormat("{\"count\": %d, \"p50_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f}",
                         h.count(), h.Percentile(50) / 1e3, h.Percentile(99) / 1e3, h.max() / 1e3);
}

std::string Tiers(const std::array<uint64_t, 5>& t) {
  return absl::StrFormat("{\"l1\": %d, \"l2\": %d, \"l3\": %d, \"origin\": %d, \"none\": %d}", t[1],
                         t[2], t[3], t[4], t[0]);
}

// ---- pods -----------------------------------------------------------------

std::string Stampede(std::vector<Pod>& pods, CountingOrigin& origin, const std::string& run) {
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int n = absl::GetFlag(FLAGS_concurrency);
  std::vector<int64_t> fetches;
  LatencyHistogram latency;
  std::array<uint64_t, 5> tiers{};
  uint64_t errors = 0;
  struct Call {
    grpc::ClientContext ctx;
    fanout::v1::GetRequest req;
    fanout::v1::GetResponse resp;
    absl::Time start;
  };
  for (int round = 0; round < rounds; ++round) {
    const std::string key = absl::StrCat("stampede-", run, "-", round);
    std::vector<std::unique_ptr<Call>> calls;
    for (int i = 0; i < n; ++i) {
      auto c = std::make_unique<Call>();
      c->req.set_key(key);
      c->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      calls.push_back(std::move(c));
    }
    absl::Mutex mu;
    int left = n;
    // Started together: the loop below takes far less than the origin's delay.
    for (int i = 0; i < n; ++i) {
      Call* c = calls[i].get();
      c->start = absl::Now();
      pods[i % pods.size()].stub->async()->Get(&c->ctx, &c->req, &c->resp, [&, c](grpc::Status s) {
        absl::MutexLock l(&mu);
        if (s.ok()) {
          latency.Record(Nanos(absl::Now() - c->start));
          ++tiers[std::clamp(static_cast<int>(c->resp.served_by()), 0, 4)];
        } else {
          ++errors;
        }
        --left;
      });
    }
    {
      absl::MutexLock l(&mu);
      mu.Await(absl::Condition(
          +[](int* x) { return *x == 0; }, &left));
    }
    fetches.push_back(origin.fetches(key));
  }
  int64_t total = 0, worst = 0;
  std::string per_round;
  for (size_t i = 0; i < fetches.size(); ++i) {
    total += fetches[i];
    worst = std::max(worst, fetches[i]);
    absl::StrAppend(&per_round, i ? ", " : "", fetches[i]);
  }
  return absl::StrFormat(
      "{\"rounds\": %d, \"gets_per_round\": %d, \"pods\": %d, \"origin_fetches\": [%s], "
      "\"mean_fetches\": %.3f, \"max_fetches\": %d, \"errors\": %d, \"latency\": %s, "
      "\"tiers\": %s}",
      rounds, n, pods.size(), per_round, static_cast<double>(total) / rounds, worst, errors,
      Percentiles(latency), Tiers(tiers));
}

std::string Steady(std::vector<Pod>& pods, CountingOrigin& origin, const std::string& run) {
  const std::string key = absl::StrCat("steady-", run);
  const absl::Duration ttl = absl::GetFlag(FLAGS_ttl);
  const int expiries = absl::GetFlag(FLAGS_expiries);
  const int chains = absl::GetFlag(FLAGS_chains);
  const absl::Duration pace = absl::GetFlag(FLAGS_pace);
  const absl::Duration delay = absl::GetFlag(FLAGS_origin_delay);
  // Every pod holds the key before the measured window opens.
  for (Pod& p : pods) {
    if (!GetNow(p, key).ok)
      std::fprintf(stderr, "steady: prefill failed on %s\n", p.address.c_str());
  }
  const int64_t before = origin.fetches(key);
  const absl::Time start = absl::Now();
  const absl::Time end = start + ttl * expiries;
  absl::Mutex mu;
  LatencyHistogram latency;
  std::array<uint64_t, 5> tiers{};
  uint64_t errors = 0, waited = 0;
  std::vector<std::thread> callers;
  for (size_t p = 0; p < pods.size(); ++p) {
    for (int c = 0; c < chains; ++c) {
      callers.emplace_back([&, p] {
        LatencyHistogram mine;
        std::array<uint64_t, 5> my_tiers{};
        uint64_t my_errors = 0, my_waited = 0;
        absl::Time next = absl::Now();
        while (absl::Now() < end) {
          const Answer a = GetNow(pods[p], key);
          if (a.ok) {
            mine.Record(Nanos(a.took));
            ++my_tiers[std::clamp(a.tier, 0, 4)];
            // A read that took half the origin's time waited for a fill.
            if (a.took >= delay / 2) ++my_waited;
          } else {
            ++my_errors;
          }
          next += pace;
          const absl::Duration wait = next - absl::Now();
          if (wait > absl::ZeroDuration()) {
            absl::SleepFor(wait);
          } else {
            next = absl::Now();
          }
        }
        absl::MutexLock l(&mu);
        latency.Merge(mine);
        for (int i = 0; i < 5; ++i) tiers[i] += my_tiers[i];
        errors += my_errors;
        waited += my_waited;
      });
    }
  }
  for (auto& t : callers) t.join();
  const int64_t fetched = origin.fetches(key) - before;
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return absl::StrFormat(
      "{\"pods\": %d, \"callers\": %d, \"seconds\": %.2f, \"ttl_ms\": %.0f, \"expiries\": %d, "
      "\"origin_fetches\": %d, \"fetches_per_expiry\": %.3f, \"reads\": %d, \"reads_per_s\": %.0f, "
      "\"not_from_l1\": %d, \"waited\": %d, \"errors\": %d, \"latency\": %s, \"tiers\": %s}",
      pods.size(), callers.size(), seconds, absl::ToDoubleMilliseconds(ttl), expiries, fetched,
      static_cast<double>(fetched) / (seconds / absl::ToDoubleSeconds(ttl)), latency.count(),
      latency.count() / seconds, latency.count() - tiers[1], waited, errors, Percentiles(latency),
      Tiers(tiers));
}

int PodsMain() {
  CountingOrigin origin(absl::GetFlag(FLAGS_origin_delay), absl::GetFlag(FLAGS_value_bytes));
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_origin_listen), grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&origin);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "cannot serve the origin on %s\n",
                 absl::GetFlag(FLAGS_origin_listen).c_str());
    return 1;
  }
  std::vector<std::string> sets;
  for (const auto& [name, targets] :
       {std::pair<std::string, std::vector<std::string>>{"subject", absl::GetFlag(FLAGS_targets)},
        {"baseline", absl::GetFlag(FLAGS_baseline_targets)}}) {
    if (targets.empty()) continue;
    std::vector<Pod> pods = Connect(targets);
    const std::string stampede = Stampede(pods, origin, name);
    const std::string steady = Steady(pods, origin, name);
    sets.push_back(
        absl::StrFormat("\"%s\": {\"stampede\": %s, \"steady\": %s}", name, stampede, steady));
  }
  std::printf("{\"origin_delay_ms\": %.0f, %s}\n",
              absl::ToDoubleMilliseconds(absl::GetFlag(FLAGS_origin_delay)),
              absl::StrJoin(sets, ", ").c_str());
  server->Shutdown(std::chrono::system_clock::now());
  return 0;
}

// ---- freeze ---------------------------------------------------------------

int FreezeMain() {
  const int pid = absl::GetFlag(FLAGS_redis_pid);
  if (pid <= 0 || absl::GetFlag(FLAGS_targets).empty()) {
    std::fprintf(stderr, "freeze: --redis_pid and --targets are needed\n");
    return 2;
  }
  std::vector<Pod> pods = Connect({absl::GetFlag(FLAGS_targets).front()});
  const int chains = absl::GetFlag(FLAGS_chains);
  const int keys = absl::GetFlag(FLAGS_keys);
  const absl::Duration pace = absl::GetFlag(FLAGS_pace);
  struct Call {
    absl::Time start;
    Answer a;
  };
  std::atomic<bool> stop{false};
  absl::Mutex mu;
  std::vector<Call> calls;
  std::vector<std::thread> callers;
  for (int t = 0; t < chains; ++t) {
    callers.emplace_back([&, t] {
      std::vector<Call> mine;
      absl::Time next = absl::Now();
      for (int i = t; !stop.load(); i += chains) {
        const absl::Time t0 = absl::Now();
        mine.push_back({t0, GetNow(pods[0], absl::StrCat("k", i % keys))});
        next += pace;
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
  absl::SleepFor(absl::Seconds(1));
  const absl::Time stopped = absl::Now();
  ::kill(pid, SIGSTOP);
  absl::SleepFor(absl::GetFlag(FLAGS_freeze));
  const absl::Time resumed = absl::Now();
  ::kill(pid, SIGCONT);
  absl::SleepFor(absl::Seconds(3));
  stop = true;
  for (auto& c : callers) c.join();

  // Phases: before; the first second frozen (the circuit opens in it);
  // the rest frozen; the first second thawed; the rest.
  struct Phase {
    const char* name = "";
    LatencyHistogram h;
    std::array<uint64_t, 5> tiers{};
    uint64_t errors = 0;
    uint64_t over = 0;
  };
  Phase phases[5];
  const char* names[5] = {"before", "frozen_first_s", "frozen_rest", "thawed_first_s",
                          "thawed_rest"};
  for (int i = 0; i < 5; ++i) phases[i].name = names[i];
  const absl::Duration bound = absl::GetFlag(FLAGS_timeout) + absl::Milliseconds(10);
  absl::Time first_l2_after = absl::InfiniteFuture();
  for (const Call& c : calls) {
    int i = 0;
    if (c.start >= resumed + absl::Seconds(1)) {
      i = 4;
    } else if (c.start >= resumed) {
      i = 3;
    } else if (c.start >= stopped + absl::Seconds(1)) {
      i = 2;
    } else if (c.start >= stopped) {
      i = 1;
    }
    Phase& p = phases[i];
    if (!c.a.ok) {
      ++p.errors;
      continue;
    }
    p.h.Record(Nanos(c.a.took));
    ++p.tiers[std::clamp(c.a.tier, 0, 4)];
    if (c.a.took > bound) ++p.over;
    if (c.start >= resumed && c.a.tier == fanout::v1::TIER_L2) {
      first_l2_after = std::min(first_l2_after, c.start + c.a.took);
    }
  }
  std::vector<std::string> out;
  for (const Phase& p : phases) {
    out.push_back(
        absl::StrFormat("\"%s\": {\"latency\": %s, \"tiers\": %s, \"errors\": %d, "
                        "\"over_bound\": %d}",
                        p.name, Percentiles(p.h), Tiers(p.tiers), p.errors, p.over));
  }
  std::printf(
      "{\"freeze_ms\": %.0f, \"timeout_ms\": %.0f, \"callers\": %d, %s, "
      "\"first_l2_after_thaw_ms\": %.1f}\n",
      absl::ToDoubleMilliseconds(absl::GetFlag(FLAGS_freeze)),
      absl::ToDoubleMilliseconds(absl::GetFlag(FLAGS_timeout)), chains,
      absl::StrJoin(out, ", ").c_str(),
      first_l2_after == absl::InfiniteFuture()
          ? -1.0
          : absl::ToDoubleMilliseconds(first_l2_after - resumed));
  return 0;
}

}  // namespace
}  // namespace fanout::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
#ifdef NDEBUG
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode == "pods") return fanout::bench::PodsMain();
  if (mode == "freeze") return fanout::bench::FreezeMain();
  std::fprintf(stderr, "--mode: pods or freeze\n");
  return 2;
}
