// Watch fan-out (bench/run_inval.sh): how long one invalidation takes to
// reach every Watch stream open on a pod, with one stream and with
// --streams of them, all held by this process on gRPC's callback API over
// --channels connections.
//
// Every stream watches the prefix "w/". A stream is established once it has
// received an INVALIDATED (Watch sends nothing when it opens): invalidations
// of fresh keys are made on the watched pod until every stream has one. Each
// round then invalidates a fresh key "w/N", alternately on the other pod
// (through Redis) and on the watched pod itself (local), and waits until
// every stream has its INVALIDATED. Times are taken from Invalidate
// returning (and from the call's start) to the first and the last stream.
//
// Prints one JSON object with, per phase (one stream, then --streams) and
// side (remote, local): the delays to the first and to the last stream, and
// the Invalidate calls' own latency.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/inval_stats.h"
#include "bench/pod_clients.h"
#include "bench/watch_reader.h"
#include "client/client.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::vector<std::string>, pods, {},
          "two pod addresses: the first invalidates remotely, the second holds the streams");
ABSL_FLAG(int, streams, 1000, "Watch streams in the large phase");
ABSL_FLAG(int, rounds, 20, "invalidations per phase and side");
ABSL_FLAG(int, channels, 8, "connections the streams are spread over");
ABSL_FLAG(absl::Duration, give_up, absl::Seconds(10),
          "longest wait for every stream to have one invalidation");
ABSL_FLAG(absl::Duration, pause, absl::Milliseconds(50), "pause between two rounds");

namespace {

using fanout::bench::DelayJson;
using fanout::bench::WatchReader;

constexpr int kMaxIds = 4096;

// When the streams received the INVALIDATED of one key: how many, the first
// and the last (Unix ns).
struct Arrivals {
  std::atomic<int> count{0};
  std::atomic<int64_t> first{INT64_MAX};
  std::atomic<int64_t> last{0};

  void Add(int64_t ns) {
    int64_t f = first.load();
    while (ns < f && !first.compare_exchange_weak(f, ns)) {
    }
    int64_t l = last.load();
    while (ns > l && !last.compare_exchange_weak(l, ns)) {
    }
    count.fetch_add(1);
  }
};

struct Streams {
  std::vector<Arrivals> by_id = std::vector<Arrivals>(kMaxIds);
  std::vector<std::unique_ptr<std::atomic<bool>>> ready;
  std::atomic<int> ready_count{0};
  std::vector<std::unique_ptr<WatchReader>> readers;
};

template <typename F>
bool PollUntil(F done, absl::Duration timeout) {
  for (const absl::Time give_up = absl::Now() + timeout;;) {
    if (done()) return true;
    if (absl::Now() > give_up) return false;
    absl::SleepFor(absl::Microseconds(200));
  }
}

void Open(Streams& s, const std::vector<std::unique_ptr<fanout::v1::Sidecar::Stub>>& stubs,
          int total) {
  fanout::v1::WatchRequest req;
  req.add_prefixes("w/");
  while (static_cast<int>(s.readers.size()) < total) {
    const size_t i = s.readers.size();
    s.ready.push_back(std::make_unique<std::atomic<bool>>(false));
    std::atomic<bool>* ready = s.ready.back().get();
    s.readers.push_back(std::make_unique<WatchReader>(
        stubs[i % stubs.size()].get(), req,
        [&s, ready](const fanout::v1::WatchEvent& e, absl::Time at) {
          int id = 0;
          if (e.kind() != fanout::v1::INVALIDATED || !absl::StartsWith(e.key(), "w/") ||
              !absl::SimpleAtoi(absl::string_view(e.key()).substr(2), &id) || id < 0 ||
              id >= kMaxIds) {
            return;
          }
          s.by_id[id].Add(absl::ToUnixNanos(at));
          if (!ready->exchange(true)) s.ready_count.fetch_add(1);
        }));
  }
}

struct Side {
  std::vector<double> first, last, first_from_call, last_from_call, call;
  int late = 0;
  fanout::bench::ErrorCounts errors;
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::vector<std::string> addrs = absl::GetFlag(FLAGS_pods);
  const int streams = absl::GetFlag(FLAGS_streams);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int channels = std::max(1, absl::GetFlag(FLAGS_channels));
  const absl::Duration give_up = absl::GetFlag(FLAGS_give_up);
  if (addrs.size() != 2 || streams < 1) {
    std::fprintf(stderr, "usage: fanout-watch-fanout-bench --pods A,B [--streams N]\n");
    return 2;
  }
  std::vector<std::unique_ptr<fanout::client::Client>> pods = fanout::bench::ConnectPods(addrs);
  if (pods.empty()) return 1;
  std::vector<std::unique_ptr<fanout::v1::Sidecar::Stub>> stubs;
  for (int i = 0; i < channels; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
    args.SetInt("fanout.bench.channel", i);
    stubs.push_back(fanout::v1::Sidecar::NewStub(
        grpc::CreateCustomChannel(addrs[1], grpc::InsecureChannelCredentials(), args)));
  }

  Streams s;
  int next_id = 0;
  int warmups = 0;
  auto invalidate = [&](fanout::client::Client& pod, int id) {
    fanout::v1::InvalidateRequest r;
    r.add_keys(absl::StrCat("w/", id));
    return pod.Invalidate(r);
  };
  // Invalidates fresh keys on the watched pod until every stream has had one.
  auto establish = [&](int total) {
    return PollUntil(
        [&] {
          if (s.ready_count.load() >= total) return true;
          if (next_id >= kMaxIds) return false;
          const int id = next_id++;
          ++warmups;
          (void)invalidate(*pods[1], id);
          PollUntil([&] { return s.by_id[id].count.load() >= total; }, absl::Milliseconds(200));
          return s.ready_count.load() >= total;
        },
        absl::Seconds(60));
  };
  std::string out = "{";
  bool ok = true;
  for (const int total : {1, streams}) {
    const absl::Time opening = absl::Now();
    Open(s, stubs, total);
    if (!establish(total)) {
      std::fprintf(stderr, "only %d of %d streams established\n", s.ready_count.load(), total);
      ok = false;
      break;
    }
    const double open_s = absl::ToDoubleSeconds(absl::Now() - opening);
    Side sides[2];  // remote, local
    for (int r = 0; r < rounds && next_id + 2 <= kMaxIds; ++r) {
      for (int side = 0; side < 2; ++side) {
        Side& x = sides[side];
        const int id = next_id++;
        const absl::Time start = absl::Now();
        auto inv = invalidate(side == 0 ? *pods[0] : *pods[1], id);
        const absl::Time returned = absl::Now();
        if (!inv.ok() || (side == 0 && !inv->broadcast())) {
          x.errors.Add(inv.ok() ? absl::UnavailableError("answered broadcast=false")
                                : inv.status());
          continue;
        }
        if (!PollUntil([&] { return s.by_id[id].count.load() >= total; }, give_up)) {
          ++x.late;
          continue;
        }
        const absl::Time first = absl::FromUnixNanos(s.by_id[id].first.load());
        const absl::Time last = absl::FromUnixNanos(s.by_id[id].last.load());
        x.call.push_back(absl::ToDoubleMilliseconds(returned - start));
        x.first.push_back(absl::ToDoubleMilliseconds(first - returned));
        x.last.push_back(absl::ToDoubleMilliseconds(last - returned));
        x.first_from_call.push_back(absl::ToDoubleMilliseconds(first - start));
        x.last_from_call.push_back(absl::ToDoubleMilliseconds(last - start));
        absl::SleepFor(absl::GetFlag(FLAGS_pause));
      }
    }
    absl::StrAppend(&out, total == 1 ? "" : ", ", "\"streams", total == 1 ? "1" : "N",
                    "\": {\"streams\": ", total, ", \"established_s\": ", open_s);
    for (int side = 0; side < 2; ++side) {
      const Side& x = sides[side];
      absl::StrAppend(
          &out, ", \"", side == 0 ? "remote" : "local", "\": {\"late\": ", x.late,
          ", \"errors\": ", x.errors.total(), ", \"errors_by_message\": ", x.errors.Json(), ", ",
          DelayJson("first", x.first), ", ", DelayJson("last", x.last), ", ",
          DelayJson("first_from_call", x.first_from_call), ", ",
          DelayJson("last_from_call", x.last_from_call), ", ", DelayJson("call", x.call), "}");
      ok = ok && x.late == 0 && x.errors.total() == 0;
    }
    absl::StrAppend(&out, "}");
  }
  // Every stream should still be open: it ends CANCELLED, by us.
  int ended_early = 0;
  for (auto& r : s.readers) r->Cancel();
  for (auto& r : s.readers) {
    auto status = r->WaitDone(absl::Seconds(10));
    if (!status.has_value()) {
      (void)r.release();  // never ended: leaked rather than destroyed under gRPC
      ++ended_early;
    } else if (status->error_code() != grpc::StatusCode::CANCELLED) {
      ++ended_early;
    }
  }
  std::printf(
      "%s, \"channels\": %d, \"warmup_invalidations\": %d, \"streams_not_cancelled_by_us\": "
      "%d}\n",
      out.c_str(), channels, warmups, ended_early);
  return ok && ended_early == 0 ? 0 : 1;
}
