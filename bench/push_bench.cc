// Delay of the origin's push (bench/run_push.sh): how long after a file
// under the file origin's root changes a pod serves the new value, with no
// Invalidate call. Each round has every pod cache a key's current value,
// changes its file (in place, or written aside and renamed over it, in
// turn), and from the moment the write is done polls Get on every pod
// until it serves the new value. Prints one JSON object: the delays by way
// of writing, and the rounds in which a pod still served the old value
// after `--give_up`.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/inval_stats.h"
#include "bench/pod_clients.h"
#include "client/client.h"

ABSL_FLAG(std::vector<std::string>, pods, {}, "pod addresses (each watches the root)");
ABSL_FLAG(std::string, root, "", "the pods' file-origin root");
ABSL_FLAG(int, rounds, 200, "changes");
ABSL_FLAG(int, keys, 20, "distinct keys (under bench/), changed in turn");
ABSL_FLAG(absl::Duration, give_up, absl::Seconds(5), "longest wait for one pod in one round");

namespace {

// Writes `value` to `path`: truncated and rewritten in place, or written to
// a hidden file beside it and renamed over it (how editors and deploy tools
// replace files).
void Change(const std::string& path, const std::string& value, bool rename) {
  if (!rename) {
    std::ofstream(path, std::ios::trunc) << value;
    return;
  }
  const std::filesystem::path p(path);
  const std::string tmp =
      (p.parent_path() / absl::StrCat(".", p.filename().string(), ".tmp")).string();
  std::ofstream(tmp, std::ios::trunc) << value;
  std::filesystem::rename(tmp, path);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::vector<std::string> addrs = absl::GetFlag(FLAGS_pods);
  const std::string root = absl::GetFlag(FLAGS_root);
  if (addrs.empty() || root.empty()) {
    std::fprintf(stderr, "usage: fanout-push-bench --pods A[,B...] --root DIR\n");
    return 2;
  }
  std::vector<std::unique_ptr<fanout::client::Client>> pods = fanout::bench::ConnectPods(addrs);
  if (pods.empty()) return 1;
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int keys = absl::GetFlag(FLAGS_keys);
  std::filesystem::create_directories(root + "/bench");
  for (int k = 0; k < keys; ++k) {
    std::ofstream(absl::StrCat(root, "/bench/k", k), std::ios::trunc) << "initial";
  }
  std::vector<double> in_place, renamed, all;  // ms
  int late = 0, errors = 0;
  for (int i = 0; i < rounds; ++i) {
    const std::string key = absl::StrCat("bench/k", i % keys);
    const std::string value = absl::StrCat("v", i);
    // Every pod holds the current value (after the first round's push of
    // the initial files has settled, this is the value of the last change).
    for (auto& pod : pods) {
      if (!pod->Get(key).ok()) ++errors;
    }
    const bool rename = i % 2 == 1;
    Change(root + "/" + key, value, rename);
    const absl::Time written = absl::Now();
    std::vector<bool> seen(pods.size(), false);
    size_t left = pods.size();
    const absl::Time give_up = written + absl::GetFlag(FLAGS_give_up);
    while (left > 0 && absl::Now() < give_up) {
      for (size_t p = 0; p < pods.size(); ++p) {
        if (seen[p]) continue;
        auto got = pods[p]->Get(key);
        if (got.ok() && got->value() == value) {
          const double ms = absl::ToDoubleMilliseconds(absl::Now() - written);
          (rename ? renamed : in_place).push_back(ms);
          all.push_back(ms);
          seen[p] = true;
          --left;
        }
      }
      if (left > 0) ::usleep(500);
    }
    for (size_t p = 0; p < pods.size() && left > 0; ++p) {
      if (seen[p]) continue;
      auto got = pods[p]->Get(key);
      std::fprintf(stderr, "late: round %d, pod %zu, %s changed to %s (%s), still %s\n", i, p,
                   key.c_str(), value.c_str(), rename ? "renamed over" : "in place",
                   got.ok() ? absl::StrCat(got->value(), " from tier ", got->served_by(), " age ",
                                           got->age_ms(), " ms")
                                  .c_str()
                            : std::string(got.status().message()).c_str());
    }
    late += static_cast<int>(left);
  }
  std::printf("{\"rounds\": %d, \"pods\": %zu, \"late\": %d, \"errors\": %d, %s, %s, %s}\n", rounds,
              pods.size(), late, errors, fanout::bench::DelayJson("all", all).c_str(),
              fanout::bench::DelayJson("in_place", in_place).c_str(),
              fanout::bench::DelayJson("rename", renamed).c_str());
  return late == 0 && errors == 0 ? 0 : 1;
}
