// The outage drill's moving parts, shared by its integration test and
// bench/run_outage.sh's driver: the origin process (fanout-outage-origin),
// fanoutd on a gRPC origin with L3 on disk and its admin endpoint, and a
// pass that Gets every key once under a caller deadline and tallies the
// answers (tier, stale, value generation, latency).
//
// Everything here blocks its caller (bounded): call it from a test or a
// driver's main thread, never from a gRPC or executor thread.
#ifndef FANOUT_TESTS_INTEGRATION_OUTAGE_DRILL_H_
#define FANOUT_TESTS_INTEGRATION_OUTAGE_DRILL_H_

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "fanout/v1/sidecar.pb.h"
#include "tests/testing/http_client.h"
#include "tests/testing/subprocess.h"

namespace fanout::testing {

// The text after `marker` on its line of `text`, or "".
inline std::string AfterMarker(const std::string& text, absl::string_view marker) {
  const size_t at = text.find(std::string(marker));
  if (at == std::string::npos) return "";
  const size_t from = at + marker.size();
  const size_t end = text.find('\n', from);
  std::string out = text.substr(from, end == std::string::npos ? std::string::npos : end - from);
  while (!out.empty() && (out.back() == '"' || out.back() == ' ' || out.back() == '\r')) {
    out.pop_back();
  }
  return out;
}

// fanout-outage-origin answering every key with "g<generation>:<key>".
class DrillOrigin {
 public:
  DrillOrigin(const std::string& binary, const std::string& listen, int generation)
      : process_({binary, "--listen=" + listen, absl::StrCat("--generation=", generation)}) {
    if (process_.WaitForStderr("listening on ", absl::Seconds(20))) {
      address_ = AfterMarker(process_.err(), "listening on ");
    }
  }
  const std::string& address() const { return address_; }
  Subprocess& process() { return process_; }

 private:
  Subprocess process_;
  std::string address_;
};

struct DrillConfig {
  std::string l3_path;
  std::string origin;  // host:port
  absl::Duration ttl = absl::Seconds(1);
  absl::Duration retry_backoff = absl::Milliseconds(200);
  absl::Duration max_retry_backoff = absl::Seconds(30);  // the product's default
  absl::Duration origin_timeout = absl::Seconds(2);
  // Room for answers due together (a hung origin) on a loaded machine.
  absl::Duration deadline_margin = absl::Milliseconds(250);
};

inline std::string DrillYaml(const DrillConfig& c) {
  return absl::StrCat("server: {listen: \"127.0.0.1:0\"}\n", "admin: {listen: \"127.0.0.1:0\"}\n",
                      "limits: {max_in_flight: 10000}\n", "cache:\n",
                      "  ttl: ", absl::ToInt64Milliseconds(c.ttl), "ms\n", "  max_stale: 1h\n",
                      "  stale_ttl: 1h\n",
                      "  retry_backoff: ", absl::ToInt64Milliseconds(c.retry_backoff), "ms\n",
                      "  deadline_margin: ", absl::ToInt64Milliseconds(c.deadline_margin), "ms\n",
                      "  max_retry_backoff: ", absl::ToInt64Milliseconds(c.max_retry_backoff),
                      "ms\n", "  l3: {path: \"", c.l3_path, "\"}\n", "origin:\n", "  type: grpc\n",
                      "  timeout: ", absl::ToInt64Milliseconds(c.origin_timeout), "ms\n",
                      "  grpc: {target: \"", c.origin, "\"}\n");
}

// fanoutd on `config_path`; address() is empty when it did not start.
class DrillDaemon {
 public:
  DrillDaemon(const std::string& binary, const std::string& config_path)
      : process_({binary, "--config=" + config_path}) {
    if (process_.WaitForStderr("fanoutd listening on ", absl::Seconds(30))) {
      address_ = AfterMarker(process_.err(), "fanoutd listening on ");
      admin_ = AfterMarker(process_.err(), "admin endpoint on ");
    }
  }
  const std::string& address() const { return address_; }
  const std::string& admin() const { return admin_; }  // http://host:port
  Subprocess& process() { return process_; }

  // The value of the metric sample `name{labels}` on /metrics, or -1.
  double Metric(const std::string& sample) {
    absl::StatusOr<HttpResponse> r = HttpRequest(admin_ + "/metrics", "GET", absl::Seconds(5));
    if (!r.ok() || r->status != 200) return -1;
    for (absl::string_view line : absl::StrSplit(r->body, '\n')) {
      if (!absl::StartsWith(line, sample + " ")) continue;
      double v = 0;
      if (absl::SimpleAtod(line.substr(sample.size() + 1), &v)) return v;
    }
    return -1;
  }

  // Polls until L3 has written at least `n` entries (bounded). Whether it did.
  bool WaitForL3Stores(double n, absl::Duration timeout = absl::Seconds(30)) {
    const absl::Time give_up = absl::Now() + timeout;
    while (absl::Now() < give_up) {
      if (Metric("fanout_tier_stores_total{tier=\"l3\"}") >= n &&
          Metric("fanout_tier_queue_depth{tier=\"l3\"}") == 0) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  }

 private:
  Subprocess process_;
  std::string address_;
  std::string admin_;
};

inline std::vector<std::string> DrillKeys(int n) {
  std::vector<std::string> keys;
  keys.reserve(n);
  for (int i = 0; i < n; ++i) keys.push_back(absl::StrCat("drill/key-", i));
  return keys;
}

// What one pass over the keys saw.
struct DrillTally {
  int answered = 0;                       // OK answers carrying the key's value of some generation
  int stale = 0;                          // of those, flagged stale
  int failed = 0;                         // errors, and answers with a wrong value
  std::map<std::string, int> tiers;       // served_by name -> answers
  std::map<int64_t, int> generations;     // value generation -> answers
  std::map<std::string, int> errors;      // "CODE: message" -> count
  std::vector<absl::Duration> latencies;  // of every call, sorted

  absl::Duration Quantile(double q) const {
    if (latencies.empty()) return absl::ZeroDuration();
    const size_t i = std::min(latencies.size() - 1, static_cast<size_t>(q * latencies.size()));
    return latencies[i];
  }
  absl::Duration Max() const { return latencies.empty() ? absl::ZeroDuration() : latencies.back(); }
  std::string Describe() const {
    std::string s = absl::StrCat("answered=", answered, " stale=", stale, " failed=", failed);
    for (const auto& [tier, n] : tiers) absl::StrAppend(&s, " ", tier, "=", n);
    for (const auto& [g, n] : generations) absl::StrAppend(&s, " g", g, "=", n);
    absl::StrAppend(&s, " p50=", absl::FormatDuration(Quantile(0.5)),
                    " p99=", absl::FormatDuration(Quantile(0.99)),
                    " max=", absl::FormatDuration(Max()));
    int shown = 0;
    for (const auto& [e, n] : errors) {
      if (shown++ == 3) break;
      absl::StrAppend(&s, " [", n, "x ", e, "]");
    }
    return s;
  }
};

// Gets every key once from fanoutd at `address`, `threads` calls at a time,
// each with `deadline` as its gRPC deadline (the caller's deadline).
inline DrillTally GetAll(const std::string& address, const std::vector<std::string>& keys,
                         absl::Duration deadline, int threads) {
  DrillTally tally;
  client::ClientOptions options;
  options.timeout = deadline;
  absl::StatusOr<std::unique_ptr<client::Client>> c = client::Client::Connect(address, options);
  if (!c.ok()) {
    tally.failed = static_cast<int>(keys.size());
    tally.errors[std::string(c.status().message())] = tally.failed;
    return tally;
  }
  absl::Mutex mu;
  std::atomic<size_t> next{0};
  auto work = [&] {
    DrillTally mine;
    for (size_t i = next++; i < keys.size(); i = next++) {
      const absl::Time start = absl::Now();
      absl::StatusOr<fanout::v1::GetResponse> r = (*c)->Get(keys[i]);
      mine.latencies.push_back(absl::Now() - start);
      if (!r.ok()) {
        ++mine.failed;
        ++mine.errors[absl::StrCat(absl::StatusCodeToString(r.status().code()), ": ",
                                   r.status().message())];
        continue;
      }
      const std::string suffix = ":" + keys[i];
      int64_t generation = 0;
      const std::string& v = r->value();
      if (!absl::StartsWith(v, "g") || !absl::EndsWith(v, suffix) ||
          !absl::SimpleAtoi(absl::string_view(v).substr(1, v.size() - 1 - suffix.size()),
                            &generation)) {
        ++mine.failed;
        ++mine.errors[absl::StrCat("wrong value: ", v)];
        continue;
      }
      ++mine.answered;
      mine.stale += r->stale() ? 1 : 0;
      ++mine.tiers[fanout::v1::Tier_Name(r->served_by())];
      ++mine.generations[generation];
    }
    absl::MutexLock l(&mu);
    tally.answered += mine.answered;
    tally.stale += mine.stale;
    tally.failed += mine.failed;
    for (const auto& [k, n] : mine.tiers) tally.tiers[k] += n;
    for (const auto& [k, n] : mine.generations) tally.generations[k] += n;
    for (const auto& [k, n] : mine.errors) tally.errors[k] += n;
    tally.latencies.insert(tally.latencies.end(), mine.latencies.begin(), mine.latencies.end());
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < std::max(1, threads); ++t) pool.emplace_back(work);
  for (std::thread& t : pool) t.join();
  std::sort(tally.latencies.begin(), tally.latencies.end());
  return tally;
}

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_INTEGRATION_OUTAGE_DRILL_H_
