// fanout-bench's command line: what to call, how hard, and for how long.
#ifndef FANOUT_BENCH_OPTIONS_H_
#define FANOUT_BENCH_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fanout::bench {

enum class Rpc { kGet, kBatchGet, kRoute, kEcho };
enum class LoadMode {
  kClosed,  // a fixed number of calls in flight; each completion starts the next
  kOpen,    // calls start at Poisson arrival times, whatever the answers do
};

absl::string_view RpcName(Rpc rpc);
absl::string_view LoadModeName(LoadMode mode);

// One payload size of a --payload_mix and its relative weight.
struct PayloadChoice {
  int bytes = 0;
  double weight = 1;
};

struct BenchOptions {
  std::string target;  // host:port or unix:///path
  Rpc rpc = Rpc::kGet;
  LoadMode mode = LoadMode::kClosed;
  int concurrency = 16;       // closed loop: calls in flight
  double rate = 0;            // open loop: calls per second
  int max_in_flight = 10000;  // open loop: sends wait (and their latency grows) past this
  int senders = 1;            // open loop: threads sending, each rate/senders
  absl::Duration duration = absl::Seconds(10);  // measured time; zero = bounded by count only
  int64_t count = 0;                            // measured calls; 0 = bounded by duration only
  absl::Duration warmup = absl::Seconds(1);     // calls started earlier are not measured
  int channels = 1;                             // separate connections
  absl::Duration timeout = absl::Seconds(5);    // deadline of each call

  // Get and BatchGet: keys are key_prefix + index, index in [0, keys).
  int keys = 1000;
  std::string key_prefix = "k";
  std::string ns;
  double zipf = 0;  // skew of the key popularity; 0 = uniform
  int batch_size = 10;

  // Route and Echo.
  std::string route;
  int payload_bytes = 0;
  // When not empty: each call's payload size is drawn from these by weight
  // (the same sequence for the same seed), instead of payload_bytes.
  std::vector<PayloadChoice> payload_mix;
  int64_t cost = 0;

  uint64_t seed = 1;
  bool json = false;
  // When not empty: every measured call is written to this file (FormatCalls).
  std::string calls_out;
  bool help = false;
};

// Parses arguments (without the program name): "--name=value" or
// "--name value"; a boolean flag alone means true. InvalidArgument naming
// the flag for unknown flags, missing or malformed values, and combinations
// that make no sense (e.g. --rate in closed mode). With --help, returns at
// once with `help` set and nothing validated.
absl::StatusOr<BenchOptions> ParseBenchArgs(const std::vector<std::string>& args);

// The --help text.
std::string BenchUsage();

}  // namespace fanout::bench

#endif  // FANOUT_BENCH_OPTIONS_H_
