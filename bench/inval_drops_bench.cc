// Invalidations lost across forced drops of one pod's invalidation link
// (bench/run_inval.sh): fanoutd pods sharing one Redis and one file-origin
// root, whose values only change through invalidations (a long cache.ttl,
// origin.push off).
//
// A writer changes the files of --keys keys in turn at --rate and calls
// Invalidate on the first pod after each change. One poller per other pod
// reads every key in a loop. Meanwhile the second pod's bus connection (named
// fanout-bus:POD in CLIENT LIST) is killed with CLIENT KILL ID --drops times,
// each after --drop_every and once the pod's Watch stream said RECOVERED for
// the drop before. After each drop, and at the end, every pod must serve
// every key at the version last acknowledged by the first pod, within
// --bound (a checkpoint). An invalidation is lost on a pod when a Get started
// more than --bound after Invalidate returned still answered an older value.
//
// Prints one JSON object: drops done, invalidations acknowledged, per pod the
// lost ones, the delays until the pod served the new value (all, and those
// acknowledged while the dropped pod's link was down), the DEGRADED /
// RECOVERED / gap events its Watch stream saw; the time from each kill to
// RECOVERED; the checkpoints.
#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/inval_stats.h"
#include "bench/pod_clients.h"
#include "bench/watch_reader.h"
#include "client/client.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::vector<std::string>, pods, {},
          "pod addresses: the first invalidates, the second's link is dropped, any others are "
          "controls");
ABSL_FLAG(std::string, drop_pod, "pod-b",
          "invalidation.pod of the second pod: its bus connection is fanout-bus:POD");
ABSL_FLAG(std::string, redis, "", "host:port of the pods' Redis");
ABSL_FLAG(std::string, root, "", "the pods' file-origin root");
ABSL_FLAG(int, drops, 20, "forced drops of the second pod's bus connection");
ABSL_FLAG(absl::Duration, drop_every, absl::Milliseconds(1500),
          "time between a drop's checkpoint and the next drop");
ABSL_FLAG(int, keys, 20, "keys changed in turn");
ABSL_FLAG(double, rate, 50, "invalidations per second on the first pod");
ABSL_FLAG(absl::Duration, bound, absl::Seconds(7),
          "how long after Invalidate returned a pod may still serve the old value "
          "(invalidation.max_local_ttl and a margin)");
ABSL_FLAG(absl::Duration, poll_pause, absl::Milliseconds(2),
          "pause between two sweeps of the keys on one pod");

namespace {

using fanout::bench::DelayJson;
using fanout::bench::WatchReader;

std::string Key(int k) { return absl::StrCat("drops/k", k); }

// Polls `done` every millisecond until it returns true (true) or `timeout`
// passes (false).
template <typename F>
bool PollUntil(F done, absl::Duration timeout) {
  for (const absl::Time give_up = absl::Now() + timeout;;) {
    if (done()) return true;
    if (absl::Now() > give_up) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
}

// Writes `value` to `path` by rename, so that a pod never reads half a file.
bool WriteFile(const std::string& path, const std::string& value) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << value;
    if (!out.good()) return false;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  return !ec;
}

// A Redis connection for CLIENT LIST and CLIENT KILL.
class RedisAdmin {
 public:
  static std::unique_ptr<RedisAdmin> Connect(const std::string& address) {
    std::vector<std::string> hp = absl::StrSplit(address, absl::MaxSplits(':', 1));
    int port = 0;
    if (hp.size() != 2 || !absl::SimpleAtoi(hp[1], &port)) return nullptr;
    redisContext* c = redisConnect(hp[0].c_str(), port);
    if (c == nullptr || c->err != 0) {
      if (c != nullptr) redisFree(c);
      return nullptr;
    }
    return std::unique_ptr<RedisAdmin>(new RedisAdmin(c));
  }
  ~RedisAdmin() { redisFree(c_); }

  // The id of the connection named `name` in CLIENT LIST; empty if none.
  std::string ClientId(const std::string& name) {
    auto* r = static_cast<redisReply*>(redisCommand(c_, "CLIENT LIST"));
    std::string id;
    if (r != nullptr && r->type == REDIS_REPLY_STRING) {
      for (absl::string_view line : absl::StrSplit(absl::string_view(r->str, r->len), '\n')) {
        if (!absl::StrContains(line, absl::StrCat(" name=", name, " "))) continue;
        for (absl::string_view field : absl::StrSplit(line, ' ')) {
          if (absl::StartsWith(field, "id=")) id = std::string(field.substr(3));
        }
      }
    }
    if (r != nullptr) freeReplyObject(r);
    return id;
  }

  bool Kill(const std::string& id) {
    auto* r = static_cast<redisReply*>(redisCommand(c_, "CLIENT KILL ID %s", id.c_str()));
    const bool killed = r != nullptr && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    if (r != nullptr) freeReplyObject(r);
    return killed;
  }

 private:
  explicit RedisAdmin(redisContext* c) : c_(c) {}
  redisContext* const c_;
};

struct Acked {
  int64_t n;
  absl::Time at;
  bool lost = false;
};

// What one observed pod served, against what the first pod acknowledged.
struct PodView {
  explicit PodView(int keys) : served(keys, -1), pending(keys) {}
  std::vector<int64_t> served;                        // per key: the newest version served
  std::vector<std::deque<Acked>> pending;             // per key: acknowledged, not served yet
  std::vector<std::pair<absl::Time, double>> delays;  // (acknowledged at, ms until served)
  int lost = 0;
  uint64_t gets = 0, errors = 0;
  std::vector<double> sweep_ms;
  // From the pod's Watch stream.
  int degraded = 0, recovered = 0, gaps = 0;
  std::vector<absl::Time> recovered_at;
};

class State {
 public:
  State(int keys, int pods) : acked_(keys, 0) {
    for (int p = 0; p < pods; ++p) views_.emplace_back(keys);
  }

  absl::Mutex mu;

  // The first pod acknowledged version `n` of key `k` at `at`.
  void Acknowledged(int k, int64_t n, absl::Time at) {
    absl::MutexLock l(&mu);
    acked_[k] = n;
    ++invalidations_;
    for (PodView& v : views_) {
      if (v.served[k] >= n) {
        v.delays.emplace_back(at, 0.0);  // served already (its L1 did not hold the key)
      } else {
        v.pending[k].push_back({n, at});
      }
    }
  }

  // Pod `p` answered version `n` of key `k` to a Get started at `start`
  // that returned at `end`.
  void Served(int p, int k, int64_t n, absl::Time start, absl::Time end, absl::Duration bound) {
    absl::MutexLock l(&mu);
    PodView& v = views_[p];
    ++v.gets;
    v.served[k] = std::max(v.served[k], n);
    std::deque<Acked>& q = v.pending[k];
    while (!q.empty() && q.front().n <= n) {
      v.delays.emplace_back(q.front().at,
                            std::max(0.0, absl::ToDoubleMilliseconds(end - q.front().at)));
      q.pop_front();
    }
    for (Acked& a : q) {
      if (!a.lost && a.at + bound < start) {
        a.lost = true;
        ++v.lost;
      }
    }
  }

  // Whether every pod serves every key at its last acknowledged version.
  bool Caught(const std::vector<int64_t>& want) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (const PodView& v : views_) {
      for (size_t k = 0; k < want.size(); ++k) {
        if (v.served[k] < want[k]) return false;
      }
    }
    return true;
  }
  bool AllPendingServed() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (const PodView& v : views_) {
      for (const auto& q : v.pending) {
        if (!q.empty()) return false;
      }
    }
    return true;
  }

  std::vector<int64_t> acked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return acked_; }
  PodView& view(int p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return views_[p]; }
  int64_t invalidations() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return invalidations_; }

 private:
  std::vector<int64_t> acked_ ABSL_GUARDED_BY(mu);
  std::vector<PodView> views_ ABSL_GUARDED_BY(mu);
  int64_t invalidations_ ABSL_GUARDED_BY(mu) = 0;
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::vector<std::string> addrs = absl::GetFlag(FLAGS_pods);
  const std::string root = absl::GetFlag(FLAGS_root);
  const int keys = absl::GetFlag(FLAGS_keys);
  const absl::Duration bound = absl::GetFlag(FLAGS_bound);
  if (addrs.size() < 2 || root.empty() || keys < 1 || absl::GetFlag(FLAGS_rate) <= 0) {
    std::fprintf(
        stderr, "usage: fanout-inval-drops-bench --pods A,B[,C...] --redis HOST:PORT --root DIR\n");
    return 2;
  }
  auto redis = RedisAdmin::Connect(absl::GetFlag(FLAGS_redis));
  if (redis == nullptr) {
    std::fprintf(stderr, "cannot connect to Redis at %s\n", absl::GetFlag(FLAGS_redis).c_str());
    return 2;
  }
  std::vector<std::unique_ptr<fanout::client::Client>> pods = fanout::bench::ConnectPods(addrs);
  if (pods.empty()) return 1;
  std::vector<std::unique_ptr<fanout::v1::Sidecar::Stub>> stubs;
  for (const std::string& a : addrs) {
    stubs.push_back(
        fanout::v1::Sidecar::NewStub(grpc::CreateChannel(a, grpc::InsecureChannelCredentials())));
  }
  const int observed = static_cast<int>(pods.size()) - 1;  // view i is pod i + 1
  std::filesystem::create_directories(root + "/drops");
  for (int k = 0; k < keys; ++k) {
    if (!WriteFile(absl::StrCat(root, "/", Key(k)), "0")) {
      std::fprintf(stderr, "cannot write under %s\n", root.c_str());
      return 1;
    }
  }
  State state(keys, observed);

  // Each observed pod's Watch stream: link changes and gaps.
  std::vector<std::unique_ptr<WatchReader>> watches;
  for (int p = 0; p < observed; ++p) {
    fanout::v1::WatchRequest req;
    req.add_keys("drops/link");  // no value key: only link events, gaps and heartbeats
    watches.push_back(std::make_unique<WatchReader>(
        stubs[p + 1].get(), req, [&state, p](const fanout::v1::WatchEvent& e, absl::Time at) {
          absl::MutexLock l(&state.mu);
          PodView& v = state.view(p);
          if (e.kind() == fanout::v1::DEGRADED) ++v.degraded;
          if (e.kind() == fanout::v1::RECOVERED) {
            ++v.recovered;
            v.recovered_at.push_back(at);
          }
          if (e.kind() == fanout::v1::INVALIDATED && e.all_keys()) ++v.gaps;
        }));
  }

  std::atomic<bool> stop_polling{false};
  std::vector<std::thread> pollers;
  for (int p = 0; p < observed; ++p) {
    pollers.emplace_back([&, p] {
      fanout::client::Client& pod = *pods[p + 1];
      while (!stop_polling.load()) {
        const absl::Time sweep = absl::Now();
        for (int k = 0; k < keys; ++k) {
          const absl::Time start = absl::Now();
          auto got = pod.Get(Key(k));
          const absl::Time end = absl::Now();
          int64_t n = 0;
          if (!got.ok() || !absl::SimpleAtoi(got->value(), &n)) {
            absl::MutexLock l(&state.mu);
            ++state.view(p).errors;
            continue;
          }
          state.Served(p, k, n, start, end, bound);
        }
        {
          absl::MutexLock l(&state.mu);
          state.view(p).sweep_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - sweep));
        }
        absl::SleepFor(absl::GetFlag(FLAGS_poll_pause));
      }
    });
  }
  // Every observed pod holds every key before the first change.
  PollUntil(
      [&] {
        absl::MutexLock l(&state.mu);
        return state.Caught(std::vector<int64_t>(keys, 0));
      },
      absl::Seconds(30));

  std::atomic<bool> stop_writing{false};
  fanout::bench::ErrorCounts not_broadcast;  // writer thread only until it is joined
  std::thread writer([&] {
    const absl::Duration period = absl::Seconds(1) / absl::GetFlag(FLAGS_rate);
    absl::Time next = absl::Now();
    int64_t n = 0;
    for (int i = 0; !stop_writing.load(); ++i) {
      const absl::Time now = absl::Now();
      if (next > now) absl::SleepFor(next - now);
      next = std::max(next + period, absl::Now() - period);  // no bursts after a stall
      const int k = i % keys;
      ++n;
      if (!WriteFile(absl::StrCat(root, "/", Key(k)), absl::StrCat(n))) {
        not_broadcast.Add(absl::InternalError("cannot write the origin's file"));
        continue;
      }
      fanout::v1::InvalidateRequest r;
      r.add_keys(Key(k));
      auto inv = pods[0]->Invalidate(r);
      const absl::Time acked = absl::Now();
      if (!inv.ok() || !inv->broadcast()) {
        not_broadcast.Add(inv.ok() ? absl::UnavailableError("answered broadcast=false")
                                   : inv.status());
        continue;
      }
      state.Acknowledged(k, n, acked);
    }
  });

  // A checkpoint of the versions acknowledged now: passed once every pod
  // served them (or later ones) within the bound. The time it took, or -1.
  auto checkpoint_now = [&]() -> double {
    const absl::Time from = absl::Now();
    std::vector<int64_t> want;
    {
      absl::MutexLock l(&state.mu);
      want = state.acked();
    }
    const bool ok = PollUntil(
        [&] {
          absl::MutexLock l(&state.mu);
          return state.Caught(want);
        },
        bound);
    return ok ? absl::ToDoubleMilliseconds(absl::Now() - from) : -1;
  };

  const std::string bus_name = absl::StrCat("fanout-bus:", absl::GetFlag(FLAGS_drop_pod));
  const absl::Time began = absl::Now();
  int drops_done = 0, checkpoints_failed = 0, not_recovered = 0;
  std::vector<double> recover_ms, checkpoint_ms;
  std::vector<std::pair<absl::Time, absl::Time>> down;  // kill .. RECOVERED
  for (int d = 0; d < absl::GetFlag(FLAGS_drops); ++d) {
    absl::SleepFor(absl::GetFlag(FLAGS_drop_every));
    std::string id;
    for (absl::Time give_up = absl::Now() + absl::Seconds(10);
         (id = redis->ClientId(bus_name)).empty() && absl::Now() < give_up;) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    int recovered_before;
    {
      absl::MutexLock l(&state.mu);
      recovered_before = state.view(0).recovered;
    }
    const absl::Time killed = absl::Now();
    if (id.empty() || !redis->Kill(id)) {
      std::fprintf(stderr, "drop %d: no %s connection to kill\n", d + 1, bus_name.c_str());
      continue;
    }
    ++drops_done;
    absl::Time recovered_at = absl::InfiniteFuture();
    PollUntil(
        [&] {
          absl::MutexLock l(&state.mu);
          if (state.view(0).recovered <= recovered_before) return false;
          recovered_at = state.view(0).recovered_at.back();
          return true;
        },
        absl::Seconds(10));
    if (recovered_at == absl::InfiniteFuture()) {
      ++not_recovered;
      down.emplace_back(killed, absl::Now());
    } else {
      recover_ms.push_back(absl::ToDoubleMilliseconds(recovered_at - killed));
      down.emplace_back(killed, recovered_at);
    }
    const double ms = checkpoint_now();
    if (ms < 0) {
      ++checkpoints_failed;
    } else {
      checkpoint_ms.push_back(ms);
    }
  }
  stop_writing.store(true);
  writer.join();
  const double final_checkpoint = checkpoint_now();
  if (final_checkpoint < 0) ++checkpoints_failed;
  // Every acknowledged version served, or the bound passed for the last one.
  PollUntil(
      [&] {
        absl::MutexLock l(&state.mu);
        return state.AllPendingServed();
      },
      bound + absl::Seconds(1));
  const double elapsed_s = absl::ToDoubleSeconds(absl::Now() - began);
  stop_polling.store(true);
  for (std::thread& t : pollers) t.join();
  for (auto& w : watches) w->Cancel();
  for (auto& w : watches) {
    if (!w->WaitDone(absl::Seconds(10)).has_value()) (void)w.release();  // never ended: leak
  }

  absl::MutexLock l(&state.mu);
  int lost_total = 0;
  std::string out = absl::StrCat(
      "{\"drops_asked\": ", absl::GetFlag(FLAGS_drops), ", \"drops\": ", drops_done,
      ", \"not_recovered\": ", not_recovered, ", \"invalidations\": ", state.invalidations(),
      ", \"not_broadcast\": ", not_broadcast.total(),
      ", \"not_broadcast_by_error\": ", not_broadcast.Json(), ", \"keys\": ", keys,
      ", \"rate\": ", absl::GetFlag(FLAGS_rate),
      ", \"drop_every_ms\": ", absl::ToDoubleMilliseconds(absl::GetFlag(FLAGS_drop_every)),
      ", \"bound_ms\": ", absl::ToDoubleMilliseconds(bound), ", \"seconds\": ", elapsed_s,
      ", \"checkpoints\": ",
      checkpoint_ms.size() + (final_checkpoint < 0 ? 0 : 1) +
          static_cast<size_t>(checkpoints_failed),
      ", \"checkpoints_failed\": ", checkpoints_failed,
      ", \"final_checkpoint_ms\": ", final_checkpoint, ", ", DelayJson("checkpoint", checkpoint_ms),
      ", ", DelayJson("kill_to_recovered", recover_ms), ", \"pods\": [");
  for (int p = 0; p < observed; ++p) {
    PodView& v = state.view(p);
    int unserved = 0;
    for (auto& q : v.pending) {
      for (Acked& a : q) {
        ++unserved;
        if (!a.lost) {
          a.lost = true;  // never served, and the bound passed above
          ++v.lost;
        }
      }
    }
    lost_total += v.lost;
    std::vector<double> all, while_down;
    for (const auto& [at, ms] : v.delays) {
      all.push_back(ms);
      for (const auto& [from, to] : down) {
        if (at >= from && at <= to) {
          while_down.push_back(ms);
          break;
        }
      }
    }
    absl::StrAppend(&out, p == 0 ? "" : ", ", "{\"pod\": ", p + 1, ", \"lost\": ", v.lost,
                    ", \"never_served\": ", unserved, ", \"gets\": ", v.gets,
                    ", \"errors\": ", v.errors, ", \"degraded\": ", v.degraded,
                    ", \"recovered\": ", v.recovered, ", \"gaps\": ", v.gaps, ", ",
                    DelayJson("delay", all), ", ", DelayJson("delay_while_down", while_down), ", ",
                    DelayJson("sweep", v.sweep_ms), "}");
  }
  std::printf("%s], \"lost\": %d}\n", out.c_str(), lost_total);
  return lost_total == 0 && checkpoints_failed == 0 && drops_done == absl::GetFlag(FLAGS_drops) ? 0
                                                                                                : 1;
}
