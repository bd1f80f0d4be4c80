// fanout-outage-drill: the outage drill at scale, for bench/run_outage.sh.
//
//   fanout-outage-drill --fanoutd=PATH --origin=PATH --dir=DIR [--keys=10000]
//       [--threads=128] [--deadline=1s] [--phase=20s] [--ttl=1s]
//
// Real processes: fanoutd (L3 in DIR) in front of fanout-outage-origin.
// Phases, each a series of passes that Get every key once under the caller
// deadline: the fill (origin up); a wait until every key is past its ttl;
// the origin hung (SIGSTOP) for --phase; the
// origin killed (kill -9) for --phase; fanoutd killed (kill -9) and
// restarted with the origin still down, for --phase; the origin back (new
// values), until every key is fresh again. Prints one markdown table row per
// phase on stdout (answered / stale / failed, tiers, latency against the
// deadline) and progress on stderr. Exit 1 when a step cannot be done.
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "tests/integration/outage_drill.h"

ABSL_FLAG(std::string, fanoutd, "", "path of the fanoutd binary");
ABSL_FLAG(std::string, origin, "", "path of the fanout-outage-origin binary");
ABSL_FLAG(std::string, dir, "", "a directory for L3 and the config (emptied first)");
ABSL_FLAG(int, keys, 10000, "keys in the drill");
ABSL_FLAG(int, threads, 128, "Gets in flight at once");
ABSL_FLAG(absl::Duration, deadline, absl::Seconds(1), "every Get's deadline (the caller's)");
ABSL_FLAG(absl::Duration, phase, absl::Seconds(20), "length of each outage phase");
ABSL_FLAG(absl::Duration, ttl, absl::Seconds(1), "cache.ttl");
ABSL_FLAG(absl::Duration, max_retry_backoff, absl::Seconds(30), "cache.max_retry_backoff");

namespace {

using ::fanout::testing::DrillTally;

// Adds `pass` to `total`.
void Merge(DrillTally& total, const DrillTally& pass) {
  total.answered += pass.answered;
  total.stale += pass.stale;
  total.failed += pass.failed;
  for (const auto& [k, n] : pass.tiers) total.tiers[k] += n;
  for (const auto& [k, n] : pass.generations) total.generations[k] += n;
  for (const auto& [k, n] : pass.errors) total.errors[k] += n;
  total.latencies.insert(total.latencies.end(), pass.latencies.begin(), pass.latencies.end());
  std::sort(total.latencies.begin(), total.latencies.end());
}

std::string Ms(absl::Duration d) {
  return absl::StrFormat("%.1f ms", absl::ToDoubleMilliseconds(d));
}

std::string Tiers(const DrillTally& t) {
  std::string s;
  for (const char* tier : {"TIER_L1", "TIER_L3", "TIER_ORIGIN"}) {
    auto it = t.tiers.find(tier);
    if (it == t.tiers.end()) continue;
    absl::StrAppend(&s, s.empty() ? "" : ", ", absl::string_view(tier).substr(5), " ", it->second);
  }
  return s.empty() ? "-" : s;
}

void Row(const std::string& phase, int passes, absl::Duration took, const DrillTally& t,
         absl::Duration deadline, const std::string& note) {
  const int gets = t.answered + t.failed;
  std::string errors;
  for (const auto& [e, n] : t.errors) {
    absl::StrAppend(&errors, errors.empty() ? "" : "; ", n, "× ", e.substr(0, 60));
  }
  std::printf(
      "| %s | %d | %.1f s | %d | %d (%.2f%%) | %d (%.2f%%) | %d | %s | %s | %s | %s | %s | %s |\n",
      phase.c_str(), passes, absl::ToDoubleSeconds(took), gets, t.answered,
      gets ? 100.0 * t.answered / gets : 0.0, t.stale,
      t.answered ? 100.0 * t.stale / t.answered : 0.0, t.failed, Tiers(t).c_str(),
      Ms(t.Quantile(0.5)).c_str(), Ms(t.Quantile(0.99)).c_str(), Ms(t.Max()).c_str(),
      Ms(deadline).c_str(), (note + (errors.empty() ? "" : " " + errors)).c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "outage drill: %s: %s\n", phase.c_str(), t.Describe().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  namespace fs = std::filesystem;
  namespace ft = fanout::testing;
  const std::string fanoutd = absl::GetFlag(FLAGS_fanoutd);
  const std::string origin_bin = absl::GetFlag(FLAGS_origin);
  const std::string dir = absl::GetFlag(FLAGS_dir);
  const int threads = absl::GetFlag(FLAGS_threads);
  const absl::Duration deadline = absl::GetFlag(FLAGS_deadline);
  const absl::Duration phase = absl::GetFlag(FLAGS_phase);
  if (fanoutd.empty() || origin_bin.empty() || dir.empty() || absl::GetFlag(FLAGS_keys) < 1) {
    std::fprintf(stderr, "usage: fanout-outage-drill --fanoutd=P --origin=P --dir=D [--keys=N]\n");
    return 2;
  }
  const std::vector<std::string> keys = ft::DrillKeys(absl::GetFlag(FLAGS_keys));
  fs::remove_all(dir);
  fs::create_directories(dir);

  auto origin = std::make_unique<ft::DrillOrigin>(origin_bin, "127.0.0.1:0", 1);
  if (origin->address().empty()) {
    std::fprintf(stderr, "the origin did not start: %s\n", origin->process().err().c_str());
    return 1;
  }
  const std::string origin_address = origin->address();
  ft::DrillConfig config;
  config.l3_path = dir + "/l3";
  config.origin = origin_address;
  config.ttl = absl::GetFlag(FLAGS_ttl);
  config.max_retry_backoff = absl::GetFlag(FLAGS_max_retry_backoff);
  const std::string config_path = dir + "/fanoutd.yaml";
  std::ofstream(config_path) << ft::DrillYaml(config);
  auto daemon = std::make_unique<ft::DrillDaemon>(fanoutd, config_path);
  if (daemon->address().empty()) {
    std::fprintf(stderr, "fanoutd did not start: %s\n", daemon->process().err().c_str());
    return 1;
  }

  // Passes over every key for `length` (at least one pass).
  auto passes_for = [&](absl::Duration length, DrillTally& total) {
    int passes = 0;
    const absl::Time end = absl::Now() + length;
    do {
      const DrillTally pass = ft::GetAll(daemon->address(), keys, deadline, threads);
      Merge(total, pass);
      ++passes;
      std::fprintf(stderr, "outage drill:   pass %d: %s\n", passes, pass.Describe().c_str());
    } while (absl::Now() < end);
    return passes;
  };

  // 1. The fill.
  absl::Time start = absl::Now();
  DrillTally fill = ft::GetAll(daemon->address(), keys, deadline, threads);
  Row("fill, origin up", 1, absl::Now() - start, fill, deadline, "");
  start = absl::Now();
  if (!daemon->WaitForL3Stores(static_cast<double>(keys.size()), absl::Seconds(120))) {
    std::fprintf(stderr, "L3 never held every key\n");
    return 1;
  }
  const absl::Duration l3_lag = absl::Now() - start;
  // Every key past its ttl (spread by ±10%) before the outage starts, so
  // that each phase measures stale serves, not fresh hits.
  absl::SleepFor(absl::GetFlag(FLAGS_ttl) * 1.2);

  // 2. The origin hangs.
  origin->process().Signal(SIGSTOP);
  start = absl::Now();
  DrillTally hung;
  int n = passes_for(phase, hung);
  Row("origin hung (SIGSTOP)", n, absl::Now() - start, hung, deadline, "");

  // 3. The origin dies.
  origin->process().Signal(SIGKILL);
  origin->process().Wait(absl::Seconds(10));
  start = absl::Now();
  DrillTally killed;
  n = passes_for(phase, killed);
  Row("origin killed (kill -9)", n, absl::Now() - start, killed, deadline, "");

  // 4. fanoutd dies and comes back while the origin is still down.
  daemon->process().Signal(SIGKILL);
  daemon->process().Wait(absl::Seconds(10));
  start = absl::Now();
  daemon = std::make_unique<ft::DrillDaemon>(fanoutd, config_path);
  if (daemon->address().empty()) {
    std::fprintf(stderr, "fanoutd did not restart: %s\n", daemon->process().err().c_str());
    return 1;
  }
  const absl::Duration restart = absl::Now() - start;
  start = absl::Now();
  DrillTally first = ft::GetAll(daemon->address(), keys, deadline, threads);
  Row("fanoutd restarted (kill -9), origin down: first pass", 1, absl::Now() - start, first,
      deadline, absl::StrCat("restart to listening ", Ms(restart)));
  start = absl::Now();
  DrillTally after;
  n = passes_for(phase, after);
  Row("fanoutd restarted, origin down: later passes", n, absl::Now() - start, after, deadline, "");

  // 5. The origin is back, with new values.
  origin = std::make_unique<ft::DrillOrigin>(origin_bin, origin_address, 2);
  if (origin->address().empty()) {
    std::fprintf(stderr, "the origin did not come back: %s\n", origin->process().err().c_str());
    return 1;
  }
  start = absl::Now();
  DrillTally back;
  n = 0;
  absl::Duration to_fresh = absl::InfiniteDuration();
  while (absl::Now() < start + absl::Seconds(120)) {
    DrillTally pass = ft::GetAll(daemon->address(), keys, deadline, threads);
    Merge(back, pass);
    ++n;
    if (pass.generations[2] == static_cast<int>(keys.size()) && pass.stale == 0) {
      to_fresh = absl::Now() - start;
      break;
    }
  }
  Row("origin back (new values)", n, absl::Now() - start, back, deadline,
      to_fresh == absl::InfiniteDuration()
          ? "not every key fresh within 120 s"
          : absl::StrCat("every key fresh (new value) after ", Ms(to_fresh)));
  std::fprintf(stderr, "outage drill: L3 held every key %s after the fill\n", Ms(l3_lag).c_str());
  return 0;
}
