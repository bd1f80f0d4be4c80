// End to end under load: fills and invalidations racing across real fanoutd
// pods that share one redis-server (cache.l2) and one file-origin root.
//
// Three pods run from the start; three more are started while invalidations
// flow (the start-up race: fills under way when a pod's link to the
// invalidation stream first comes up). Threads of this process read the keys
// on every pod (Get, and BatchGet of all of them) without pause, and writers
// (each key has one) write a key's file to its next version (a temporary file
// renamed over it; the value starts with the version) and then Invalidate the
// key (one time in four by a prefix that matches only it) on a random pod,
// its link up or not yet, until it answers OK with broadcast=true, and go on
// to the next version at once, while the pods are still refilling the last
// one. The pods run with origin.push off (only Invalidate tells them of a
// change) and a short cache.ttl (300ms), so that background refreshes (XFetch)
// and expiries race the invalidations too. The second test also cuts one
// pod's connections to Redis for a moment and later freezes them past
// invalidation.dead_after (a fault proxy): its link goes down and comes back,
// replaying what it missed.
//
// What "propagated" means here, exactly. Every Invalidate call also names a
// marker key "m/K/V/A" (key K, version V, attempt A) that nobody reads: a
// Watch event for it on a pod says that this pod has applied that very call.
// Every pod has a Watch stream open, and a floor per key that rises
//   - to V for key K once the pod's Watch delivered the marker of a call for
//     version V that was acknowledged (OK, broadcast=true; a call that failed
//     may still have been published, without the guarantee);
//   - when the call was made on another pod (it came through the stream), to
//     every version whose Invalidate was acknowledged before that one was
//     first sent, for every key: the pod applies the stream in order, so it
//     applied those too, or, for a pod started meanwhile, they are older than
//     where its stream reading starts, and it must not hold what they
//     replaced once its link is up (README: a pod just started has an empty
//     L1).
// The invariant: a read returns a version at or above the floor its key had
// on that pod when the read was sent. It is the README's "once Invalidate
// returned broadcast=true, every pod stops answering the old value as soon as
// it reads the entry", with "reads the entry" observed rather than guessed.
// A pod whose link is down has no floor from what it has not applied (it may
// answer its own copies for invalidation.max_local_ttl), so it is not judged
// on those. Propagation is bounded too: every pod whose link was up when an
// invalidation was first sent delivers the acknowledged call's marker within
// kPropagationBound of the acknowledgement (the mean and the longest are
// printed).
#include <algorithm>
#include <array>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "tests/testing/fault_proxy.h"
#include "tests/testing/http_client.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/subprocess.h"

namespace fanout {
namespace {

namespace fs = std::filesystem;
using ::fanout::testing::RedisServer;

constexpr int kKeys = 8;
constexpr int kFixedPods = 3;
constexpr int kLatePods = 3;
constexpr int kPods = kFixedPods + kLatePods;
constexpr int kReaders = 3;
constexpr int kWriters = 4;  // writer w owns the keys k with k % kWriters == w
// How long the readers and writers run, and when the late pods start.
constexpr absl::Duration kLoad = absl::Seconds(6);
constexpr std::array<absl::Duration, kLatePods> kLateStarts = {
    absl::Milliseconds(1000), absl::Milliseconds(2500), absl::Milliseconds(4000)};
// With faults, the pod whose connections to Redis are cut, then frozen.
constexpr int kCutPod = 2;
// Generous: the measured delay is a few milliseconds (it is printed).
constexpr absl::Duration kPropagationBound = absl::Seconds(10);
// Most violations kept for the report.
constexpr size_t kMaxReported = 30;

std::string KeyName(int k) { return absl::StrCat("k", k); }
// An invalidation's id: "K/V" for version V of key K, "w-..." for a warm-up.
std::string MadeId(int k, int64_t v) { return absl::StrCat(k, "/", v); }
// The marker key of attempt `a` (an Invalidate call) of invalidation `id`.
std::string MarkerName(const std::string& id, size_t a) { return absl::StrCat("m/", id, "/", a); }
std::string ValueOf(int k, int64_t v) {
  return absl::StrCat("v=", v, " key=", KeyName(k), " ", std::string(64, 'x'), "\n");
}
// The version a value carries; -1 when it carries none.
int64_t VersionOf(absl::string_view value) {
  if (!absl::StartsWith(value, "v=")) return -1;
  value.remove_prefix(2);
  int64_t v = -1;
  if (!absl::SimpleAtoi(value.substr(0, value.find(' ')), &v)) return -1;
  return v;
}

void RaiseTo(std::atomic<int64_t>& floor, int64_t v) {
  int64_t cur = floor.load();
  while (cur < v && !floor.compare_exchange_weak(cur, v)) {
  }
}

struct Pod {
  int index = 0;
  std::string name;
  std::unique_ptr<testing::FanoutdProcess> process;
  std::unique_ptr<client::Client> client;
  std::string admin;  // http://host:port of its admin endpoint
  std::array<std::atomic<int64_t>, kKeys> floor{};
  // Its Watch delivered an invalidation made on another pod: its link is up
  // and it applied the stream up to there.
  std::atomic<bool> linked{false};
  std::atomic<bool> ready{false};  // started: readers use it
  std::atomic<int> degraded{0};
  std::atomic<int> recovered{0};
  std::atomic<int> all_keys{0};
  std::atomic<bool> stop{false};
  std::thread watch;
};

// One Invalidate call, with a marker of its own: a call that failed may still
// have been published (the stream took it, an erase of L2 did not finish),
// and what its pods then answer is not judged.
struct Attempt {
  int pod = 0;
  absl::Time sent;
  bool acked = false;  // answered OK with broadcast=true
  // Pods whose Watch delivered its marker, and when.
  absl::flat_hash_map<int, absl::Time> delivered;
};

// One invalidation the writers made: a version of a key (or a warm-up's).
struct Made {
  int key = -1;
  int64_t version = 0;
  std::array<int64_t, kKeys> acked_before{};  // acknowledged versions when it was first sent
  // The pods whose link was up when it was first sent (a pod linked later
  // may have started reading the stream after it) must deliver the
  // acknowledged attempt's marker within kPropagationBound of the answer.
  std::vector<int> expected;
  std::vector<Attempt> attempts;
  absl::Time acked_at = absl::InfiniteFuture();
};

class InvalidationStressE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    redis_ = RedisServer::Start(&error);
    ASSERT_NE(redis_, nullptr) << error;
    root_ = testing::TempPath("stress_root");
    fs::create_directories(root_);
    for (int k = 0; k < kKeys; ++k) WriteVersion(k, 1);
    for (int i = 0; i < kPods; ++i) {
      pods_[i] = std::make_unique<Pod>();
      pods_[i]->index = i;
      pods_[i]->name = absl::StrCat(i < kFixedPods ? "pod-" : "late-", i);
    }
  }
  void TearDown() override {
    for (auto& p : pods_) StopWatch(*p);
    for (auto& p : pods_) p->process.reset();
    fs::remove_all(root_);
  }

  void WriteVersion(int k, int64_t v) {
    const fs::path tmp = fs::path(root_) / absl::StrCat(".tmp-", KeyName(k));
    std::ofstream(tmp, std::ios::binary | std::ios::trunc) << ValueOf(k, v);
    fs::rename(tmp, fs::path(root_) / KeyName(k));
  }

  std::string Config(const Pod& p) const {
    return absl::StrCat(
        "origin:\n  type: file\n  push: false\n  file:\n    root: ", root_,
        "\ncache:\n  l2:\n    redis: ",
        p.index == kCutPod && proxy_ != nullptr ? proxy_->address() : redis_->address(),
        "\n    key_prefix: \"stress:\"\n    timeout: 250ms\n  ttl: 300ms\n",
        "invalidation:\n  pod: ", p.name, "\n  heartbeat: 200ms\n  dead_after: 2s\n",
        "watch:\n  heartbeat: 200ms\nadmin:\n  listen: \"127.0.0.1:0\"\n");
  }

  // Starts pod `i`, its client and its Watch stream.
  void StartPod(int i) {
    Pod& p = *pods_[i];
    p.process = std::make_unique<testing::FanoutdProcess>(FANOUTD_PATH, Config(p));
    ASSERT_FALSE(p.process->address().empty()) << p.process->process().err();
    absl::StatusOr<std::unique_ptr<client::Client>> c = client::Client::Connect(
        p.process->address(), client::ClientOptions{.timeout = absl::Seconds(10)});
    ASSERT_TRUE(c.ok()) << c.status();
    p.client = *std::move(c);
    const std::string err = p.process->process().err();
    const size_t at = err.find("admin endpoint on ");
    if (at != std::string::npos) {
      const size_t from = at + 18;
      p.admin = err.substr(from, err.find_first_of(" \n", from) - from);
    }
    p.watch = std::thread([this, &p] { WatchLoop(p); });
    p.ready.store(true);
  }

  void StopWatch(Pod& p) {
    p.stop.store(true);
    if (p.watch.joinable()) p.watch.join();
  }

  void WatchLoop(Pod& p) {
    fanout::v1::WatchRequest every_key;
    absl::Status s =
        p.client->Watch(every_key, absl::ZeroDuration(), [&](const fanout::v1::WatchEvent& e) {
          if (p.stop.load()) return false;
          switch (e.kind()) {
            case fanout::v1::INVALIDATED:
              if (e.all_keys()) ++p.all_keys;
              if (absl::StartsWith(e.key(), "m/")) OnMarker(p, e.key());
              break;
            case fanout::v1::DEGRADED:
              ++p.degraded;
              break;
            case fanout::v1::RECOVERED:
              ++p.recovered;
              break;
            default:
              break;
          }
          return true;
        });
    if (!s.ok() && !p.stop.load()) {
      Fail(absl::StrCat(p.name, ": its Watch stream ended: ", s.ToString()));
    }
  }

  // Marker "m/ID/A" delivered on `p`.
  void OnMarker(Pod& p, const std::string& marker) {
    const size_t slash = marker.rfind('/');
    size_t a = 0;
    if (slash < 2 || !absl::SimpleAtoi(marker.substr(slash + 1), &a)) return;
    absl::MutexLock l(&mu_);
    auto it = made_.find(marker.substr(2, slash - 2));
    if (it == made_.end() || a >= it->second.attempts.size()) return;
    Made& m = it->second;
    Attempt& at = m.attempts[a];
    at.delivered.emplace(p.index, absl::Now());
    if (at.acked && m.key >= 0) RaiseTo(p.floor[m.key], m.version);
    if (at.pod == p.index) return;
    // Through the stream: everything acknowledged before it was sent was
    // applied here before it.
    for (int j = 0; j < kKeys; ++j) RaiseTo(p.floor[j], m.acked_before[j]);
    p.linked.store(true);
  }

  // Invalidates invalidation `id`'s key (by a prefix that matches only it if
  // `by_prefix`; none for a warm-up) and its attempt's marker on a random
  // pod of `targets` until one answers OK with broadcast=true (bounded);
  // whether one did.
  bool InvalidateUntilBroadcast(const std::string& id, bool by_prefix, std::vector<int> targets,
                                std::mt19937_64& rng) {
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    std::string last;
    while (absl::Now() < give_up) {
      Pod& target = *pods_[targets[rng() % targets.size()]];
      int k = -1;
      size_t a = 0;
      {
        absl::MutexLock l(&mu_);
        Made& m = made_[id];
        k = m.key;
        a = m.attempts.size();
        Attempt& at = m.attempts.emplace_back();
        at.pod = target.index;
        at.sent = absl::Now();
      }
      fanout::v1::InvalidateRequest req;
      if (k >= 0 && by_prefix) {
        req.set_prefix(KeyName(k));
      } else if (k >= 0) {
        req.add_keys(KeyName(k));
      }
      req.add_keys(MarkerName(id, a));
      absl::StatusOr<fanout::v1::InvalidateResponse> r = target.client->Invalidate(req);
      if (r.ok() && r->broadcast()) {
        absl::MutexLock l(&mu_);
        Made& m = made_[id];
        m.acked_at = absl::Now();
        Attempt& at = m.attempts[a];
        at.acked = true;
        // The pods that applied it before the answer came.
        if (k >= 0) {
          for (const auto& [i, when] : at.delivered) RaiseTo(pods_[i]->floor[k], m.version);
        }
        return true;
      }
      ++invalidate_retries_;
      last = r.ok() ? "broadcast=false" : r.status().ToString();
      // Redis may be briefly unavailable to that pod (a command timed out and
      // its circuit opened): retry, elsewhere, a little later.
      absl::SleepFor(absl::Milliseconds(20));
    }
    Fail(absl::StrCat("Invalidate ", id, " never answered broadcast=true: ", last));
    return false;
  }

  // What happened to invalidation `id`, for a report (times from the start).
  std::string History(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = made_.find(id);
    if (it == made_.end()) return "unknown";
    std::string out;
    for (const Attempt& at : it->second.attempts) {
      absl::StrAppend(&out, "[on ", pods_[at.pod]->name, " at ", Ms(at.sent),
                      at.acked ? " acked" : " failed", "; delivered:");
      for (const auto& [i, when] : at.delivered) {
        absl::StrAppend(&out, " ", pods_[i]->name, "@", Ms(when));
      }
      absl::StrAppend(&out, "] ");
    }
    return out;
  }
  std::string Ms(absl::Time t) const {
    return absl::StrCat(absl::ToInt64Milliseconds(t - t0_), "ms");
  }

  // Waits (bounded) until every acknowledged invalidation's marker reached
  // the pods it had to reach; reports those it did not, and how long
  // propagation took (acknowledgement to the last pod's Watch event).
  void CheckPropagation() {
    // The acknowledged attempt of `m`; null if none.
    auto acked = [](const Made& m) -> const Attempt* {
      for (const Attempt& at : m.attempts) {
        if (at.acked) return &at;
      }
      return nullptr;
    };
    auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (const auto& [id, m] : made_) {
        const Attempt* at = acked(m);
        if (at == nullptr) continue;
        for (int i : m.expected) {
          if (!at->delivered.contains(i)) return false;
        }
      }
      return true;
    };
    absl::MutexLock l(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&all), kPropagationBound);
    for (const auto& [id, m] : made_) {
      for (const Attempt& a : m.attempts) {
        if (!a.acked && !a.delivered.empty()) ++failed_but_published_;
      }
      const Attempt* at = acked(m);
      if (at == nullptr || m.key < 0) continue;
      absl::Duration longest;
      for (int i : m.expected) {
        auto it = at->delivered.find(i);
        if (it == at->delivered.end()) {
          Fail(absl::StrCat(id, " never reached ", pods_[i]->name));
          continue;
        }
        longest = std::max(longest, it->second - m.acked_at);
      }
      absl::MutexLock s(&stats_mu_);
      max_propagation_ = std::max(max_propagation_, longest);
      total_propagation_ += longest;
      if (longest > kPropagationBound) {
        failures_.push_back(
            absl::StrCat(id, " took ", absl::FormatDuration(longest), " to reach every pod"));
      }
    }
  }

  // Until every fixed pod has applied an invalidation made on each other one.
  void WarmUp() {
    std::mt19937_64 rng(7);
    for (int i = 0; i < kFixedPods; ++i) {
      std::vector<int> others;
      for (int j = 0; j < kFixedPods; ++j) {
        if (j != i) others.push_back(j);
      }
      bool delivered = false;
      for (int round = 0; round < 20 && !delivered; ++round) {
        const std::string id = absl::StrCat("w-", i, "-", round);
        if (!InvalidateUntilBroadcast(id, false, {i}, rng)) return;
        // A pod whose link is not up yet never gets it: send another.
        absl::MutexLock l(&mu_);
        auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          for (int j : others) {
            if (!made_[id].attempts.back().delivered.contains(j)) return false;
          }
          return true;
        };
        delivered = mu_.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(1));
      }
      ASSERT_TRUE(delivered) << "the fixed pods' links did not come up";
    }
  }

  // Every pod started, linked or not: a pod whose link is not up yet
  // applies its own invalidations, and refills what they erased.
  std::vector<int> Ready() const {
    std::vector<int> out;
    for (int i = 0; i < kPods; ++i) {
      if (pods_[i]->ready.load()) out.push_back(i);
    }
    return out;
  }

  std::vector<int> Linked() const {
    std::vector<int> out;
    for (int i = 0; i < kPods; ++i) {
      if (i < kFixedPods || (pods_[i]->ready.load() && pods_[i]->linked.load())) out.push_back(i);
    }
    return out;
  }

  void WriteLoop(int w) {
    std::mt19937_64 rng(1000 + w);
    std::array<int64_t, kKeys> version;
    version.fill(1);
    for (int turn = 0; absl::Now() < end_; ++turn) {
      const int k = w + kWriters * (turn % (kKeys / kWriters));
      const int64_t v = ++version[k];
      WriteVersion(k, v);
      const std::string id = MadeId(k, v);
      {
        absl::MutexLock l(&mu_);
        Made& m = made_[id];
        m.key = k;
        m.version = v;
        for (int j = 0; j < kKeys; ++j) m.acked_before[j] = acked_[j].load();
        // Pods whose link was up before it was sent: a pod linked later may
        // have started reading the stream after it.
        m.expected = Linked();
      }
      // One in four by prefix: the prefix's fence and L2 scan, not the key's.
      if (!InvalidateUntilBroadcast(id, (turn / (kKeys / kWriters)) % 4 == 3, Ready(), rng)) {
        return;
      }
      acked_[k].store(v);
      // No wait for the pods: the next version goes out at once, while
      // they are still refilling this one.
      absl::MutexLock l(&stats_mu_);
      ++invalidations_;
    }
  }

  void Judge(const Pod& p, int k, int64_t floor, absl::Time sent, const std::string& value,
             fanout::v1::Tier served_by, bool stale, int64_t age_ms, const char* how) {
    const int64_t v = VersionOf(value);
    ++reads_;
    if (floor > 1) ++judged_;
    ++served_by_[served_by >= 0 && served_by < 5 ? served_by : 0];
    if (v >= floor && v >= 1) return;
    ++violations_;
    std::string history;
    {
      absl::MutexLock l(&mu_);
      history = History(MadeId(k, floor));
    }
    absl::MutexLock l(&stats_mu_);
    if (reported_.size() < kMaxReported) {
      reported_.push_back(absl::StrCat(
          how, " of ", KeyName(k), " on ", p.name, " sent at ", Ms(sent), ", answered at ",
          Ms(absl::Now()), ": version ", v, " below its floor ", floor,
          " (served_by=", fanout::v1::Tier_Name(served_by), " stale=", stale, " age_ms=", age_ms,
          " linked=", p.linked.load(), "); the floor's invalidation: ", history));
    }
  }

  void ReadLoop(int r) {
    std::mt19937_64 rng(2000 + r);
    while (absl::Now() < end_) {
      Pod& p = *pods_[rng() % kPods];
      if (!p.ready.load()) continue;
      if (rng() % 8 == 0) {
        std::array<int64_t, kKeys> floors;
        fanout::v1::BatchGetRequest req;
        for (int k = 0; k < kKeys; ++k) {
          floors[k] = p.floor[k].load();
          req.add_keys(KeyName(k));
        }
        const absl::Time sent = absl::Now();
        absl::StatusOr<fanout::v1::BatchGetResponse> b = p.client->BatchGet(req);
        if (!b.ok() || b->items_size() != kKeys) {
          ++read_errors_;
          continue;
        }
        for (int k = 0; k < kKeys; ++k) {
          const fanout::v1::BatchGetItem& it = b->items(k);
          if (it.code() != 0) {
            ++read_errors_;
            continue;
          }
          Judge(p, k, floors[k], sent, it.value(), it.served_by(), it.stale(), it.age_ms(),
                "BatchGet");
        }
        continue;
      }
      const int k = static_cast<int>(rng() % kKeys);
      const int64_t floor = p.floor[k].load();
      const absl::Time sent = absl::Now();
      absl::StatusOr<fanout::v1::GetResponse> g = p.client->Get(KeyName(k));
      if (!g.ok()) {
        ++read_errors_;
        continue;
      }
      Judge(p, k, floor, sent, g->value(), g->served_by(), g->stale(), g->age_ms(), "Get");
    }
  }

  // The scenario; `faults`: kCutPod's link is cut, then frozen, meanwhile.
  void Run(bool faults);

  void Fail(std::string what) {
    absl::MutexLock l(&stats_mu_);
    failures_.push_back(std::move(what));
  }

  // What each pod says about itself, for a failure's report.
  std::string Describe() {
    std::string out;
    for (auto& pp : pods_) {
      Pod& p = *pp;
      if (!p.ready.load()) continue;
      absl::StrAppend(&out, "\n== ", p.name, " linked=", p.linked.load(),
                      " degraded=", p.degraded.load(), " recovered=", p.recovered.load(),
                      " all_keys=", p.all_keys.load(), " floors:");
      for (int k = 0; k < kKeys; ++k) absl::StrAppend(&out, " ", p.floor[k].load());
      absl::StrAppend(&out, "\n");
      if (!p.admin.empty()) {
        absl::StatusOr<testing::HttpResponse> m =
            testing::HttpRequest(p.admin + "/metrics", "GET", absl::Seconds(5));
        if (m.ok()) {
          for (absl::string_view line : absl::StrSplit(m->body, '\n')) {
            if (!absl::StartsWith(line, "#") &&
                (absl::StrContains(line, "invalidation") || absl::StrContains(line, "detached") ||
                 absl::StrContains(line, "fenced"))) {
              absl::StrAppend(&out, "  ", line, "\n");
            }
          }
        }
      }
      const std::string err = p.process->process().err();
      absl::StrAppend(&out, "  log tail:\n", err.substr(err.size() > 3000 ? err.size() - 3000 : 0));
    }
    return out;
  }

  std::unique_ptr<RedisServer> redis_;
  // With faults: kCutPod reaches Redis through it.
  std::unique_ptr<testing::FaultProxy> proxy_;
  std::string root_;
  std::array<std::unique_ptr<Pod>, kPods> pods_;
  std::array<std::atomic<int64_t>, kKeys> acked_{};
  const absl::Time t0_ = absl::Now();
  absl::Time end_;

  absl::Mutex mu_;
  // By marker.
  absl::flat_hash_map<std::string, Made> made_ ABSL_GUARDED_BY(mu_);

  std::atomic<uint64_t> reads_{0};
  std::atomic<uint64_t> judged_{0};
  std::atomic<uint64_t> read_errors_{0};
  std::atomic<uint64_t> violations_{0};
  std::atomic<uint64_t> invalidate_retries_{0};
  // Invalidate calls that failed, whose marker some pod delivered all the same.
  std::atomic<uint64_t> failed_but_published_{0};
  std::array<std::atomic<uint64_t>, 5> served_by_{};
  absl::Mutex stats_mu_;
  uint64_t invalidations_ ABSL_GUARDED_BY(stats_mu_) = 0;
  absl::Duration max_propagation_ ABSL_GUARDED_BY(stats_mu_);
  absl::Duration total_propagation_ ABSL_GUARDED_BY(stats_mu_);
  std::vector<std::string> reported_ ABSL_GUARDED_BY(stats_mu_);
  std::vector<std::string> failures_ ABSL_GUARDED_BY(stats_mu_);
};

void InvalidationStressE2eTest::Run(bool faults) {
  if (faults) {
    std::string error;
    proxy_ = testing::FaultProxy::Start("127.0.0.1", redis_->port(), &error);
    ASSERT_NE(proxy_, nullptr) << error;
  }
  for (int i = 0; i < kFixedPods; ++i) {
    StartPod(i);
    if (HasFatalFailure()) return;
  }
  WarmUp();
  if (HasFatalFailure()) return;

  const absl::Time start = absl::Now();
  end_ = start + kLoad;
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) threads.emplace_back([this, w] { WriteLoop(w); });
  for (int r = 0; r < kReaders; ++r) threads.emplace_back([this, r] { ReadLoop(r); });
  const int degraded_before = pods_[kCutPod]->degraded.load();
  if (faults) {
    // Pacing the scenario, not waiting for a condition. Every connection
    // cut (reset, new ones too) for a moment; later Redis frozen to that
    // pod for longer than invalidation.dead_after, bytes held, not lost.
    threads.emplace_back([this, start] {
      absl::SleepFor(start + absl::Milliseconds(1500) - absl::Now());
      proxy_->Reset();
      absl::SleepFor(absl::Milliseconds(300));
      proxy_->Pass();
      absl::SleepFor(start + absl::Milliseconds(2800) - absl::Now());
      proxy_->Blackhole();
      absl::SleepFor(absl::Milliseconds(2500));
      proxy_->Pass();
    });
  }
  for (int i = 0; i < kLatePods; ++i) {
    // Pacing the scenario, not waiting for a condition.
    absl::SleepFor(start + kLateStarts[i] - absl::Now());
    StartPod(kFixedPods + i);
  }
  for (std::thread& t : threads) t.join();
  CheckPropagation();

  uint64_t invalidations = 0;
  absl::Duration max_propagation;
  absl::Duration mean_propagation;
  std::vector<std::string> reported;
  std::vector<std::string> failures;
  {
    absl::MutexLock l(&stats_mu_);
    invalidations = invalidations_;
    max_propagation = max_propagation_;
    mean_propagation =
        invalidations_ > 0 ? total_propagation_ / invalidations_ : absl::ZeroDuration();
    reported = reported_;
    failures = failures_;
  }
  std::cerr << "reads " << reads_.load() << " (judged " << judged_.load() << ", errors "
            << read_errors_.load() << "; L1 " << served_by_[1].load() << ", L2 "
            << served_by_[2].load() << ", origin " << served_by_[4].load() << "), invalidations "
            << invalidations << " (retries " << invalidate_retries_.load()
            << ", failed but published " << failed_but_published_.load() << "), propagation mean "
            << absl::FormatDuration(mean_propagation) << " max "
            << absl::FormatDuration(max_propagation) << ", violations " << violations_.load()
            << "\n";
  const bool bad = violations_.load() > 0 || !failures.empty();
  for (const std::string& f : failures) ADD_FAILURE() << f;
  for (const std::string& v : reported) ADD_FAILURE() << v;
  EXPECT_EQ(violations_.load(), 0u);
  for (int i = kFixedPods; i < kPods; ++i) {
    EXPECT_TRUE(pods_[i]->linked.load()) << pods_[i]->name << " never applied another pod's entry";
  }
  // Enough happened for the run to mean something.
  EXPECT_GE(invalidations, 50u);
  EXPECT_GE(judged_.load(), 1000u);
  EXPECT_LT(read_errors_.load(), reads_.load() / 100 + 10);
  if (faults) {
    EXPECT_GT(pods_[kCutPod]->degraded.load(), degraded_before);
    EXPECT_GT(pods_[kCutPod]->recovered.load(), 0);
  }
  if (bad) ADD_FAILURE() << Describe();
}

TEST_F(InvalidationStressE2eTest, NoPodAnswersAVersionOlderThanAnInvalidationItApplied) {
  Run(/*faults=*/false);
}

TEST_F(InvalidationStressE2eTest, NorWhenOnePodsLinkIsCutThenFrozen) { Run(/*faults=*/true); }

}  // namespace
}  // namespace fanout
