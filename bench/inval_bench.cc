// Cross-pod invalidation delay (bench/run_inval.sh): fanoutd pods sharing
// one Redis and one file-origin root. Each round changes a key's file, has
// every other pod cache the old value, calls Invalidate on the first pod,
// and from the moment it returns polls Get on the other pods until each
// serves the new value. Prints one JSON object: the delays (per pod and
// all together), the Invalidate call's own latency, and the rounds in which
// a pod still served the old value after `--give_up`.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/inval_stats.h"
#include "bench/pod_clients.h"
#include "client/client.h"

ABSL_FLAG(std::vector<std::string>, pods, {}, "pod addresses; the first invalidates");
ABSL_FLAG(std::string, root, "", "the pods' file-origin root");
ABSL_FLAG(int, rounds, 1000, "invalidations");
ABSL_FLAG(int, keys, 50, "distinct keys, used in turn");
ABSL_FLAG(absl::Duration, give_up, absl::Seconds(5), "longest wait for one pod in one round");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::vector<std::string> addrs = absl::GetFlag(FLAGS_pods);
  const std::string root = absl::GetFlag(FLAGS_root);
  if (addrs.size() < 2 || root.empty()) {
    std::fprintf(stderr, "usage: fanout-inval-bench --pods A,B[,C...] --root DIR\n");
    return 2;
  }
  std::vector<std::unique_ptr<fanout::client::Client>> pods = fanout::bench::ConnectPods(addrs);
  if (pods.empty()) return 1;
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int keys = absl::GetFlag(FLAGS_keys);
  for (int k = 0; k < keys; ++k) {
    std::ofstream(absl::StrCat(root, "/bench/k", k), std::ios::trunc) << "initial";
  }
  std::vector<std::vector<double>> delay(pods.size());
  std::vector<double> all, call;
  int late = 0, errors = 0;
  for (int i = 0; i < rounds; ++i) {
    const std::string key = absl::StrCat("bench/k", i % keys);
    const std::string value = absl::StrCat("v", i);
    // The others hold the old value (in L1, and L2 below it).
    for (size_t p = 1; p < pods.size(); ++p) {
      if (!pods[p]->Get(key).ok()) ++errors;
    }
    std::ofstream(root + "/" + key, std::ios::trunc) << value;
    fanout::v1::InvalidateRequest r;
    r.add_keys(key);
    const absl::Time start = absl::Now();
    auto inv = pods[0]->Invalidate(r);
    const absl::Time acked = absl::Now();
    if (!inv.ok() || !inv->broadcast()) {
      ++errors;
      continue;
    }
    call.push_back(absl::ToDoubleMilliseconds(acked - start));
    std::vector<bool> seen(pods.size(), false);
    size_t left = pods.size() - 1;
    const absl::Time give_up = acked + absl::GetFlag(FLAGS_give_up);
    while (left > 0 && absl::Now() < give_up) {
      for (size_t p = 1; p < pods.size(); ++p) {
        if (seen[p]) continue;
        auto got = pods[p]->Get(key);
        if (got.ok() && got->value() == value) {
          const double ms = absl::ToDoubleMilliseconds(absl::Now() - acked);
          delay[p].push_back(ms);
          all.push_back(ms);
          seen[p] = true;
          --left;
        }
      }
    }
    late += static_cast<int>(left);
  }
  std::string out = absl::StrCat("{\"rounds\": ", rounds, ", \"pods\": ", pods.size(),
                                 ", \"late\": ", late, ", \"errors\": ", errors, ", ");
  absl::StrAppend(&out, fanout::bench::DelayJson("invalidate_call", call), ", ");
  absl::StrAppend(&out, fanout::bench::DelayJson("propagation", all));
  for (size_t p = 1; p < pods.size(); ++p) {
    absl::StrAppend(&out, ", ", fanout::bench::DelayJson(absl::StrCat("pod", p), delay[p]));
  }
  std::printf("%s}\n", out.c_str());
  return late == 0 && errors == 0 ? 0 : 1;
}
