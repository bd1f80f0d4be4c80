// fanout-bench: a gRPC load generator for fanoutd and its baselines.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "bench/loadgen.h"
#include "bench/options.h"

int main(int argc, char** argv) {
  using namespace fanout::bench;
#ifdef NDEBUG
  // Keeps the generator's own cost down: Debian builds Abseil with deadlock
  // detection on every absl::Mutex, gRPC's included.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  absl::StatusOr<BenchOptions> options =
      ParseBenchArgs(std::vector<std::string>(argv + 1, argv + argc));
  if (!options.ok()) {
    std::fprintf(stderr, "fanout-bench: %s\n", std::string(options.status().message()).c_str());
    return 2;
  }
  if (options->help) {
    std::fputs(BenchUsage().c_str(), stdout);
    return 0;
  }
  absl::StatusOr<std::unique_ptr<CallSender>> sender = NewGrpcSender(*options);
  if (!sender.ok()) {
    std::fprintf(stderr, "fanout-bench: %s\n", std::string(sender.status().message()).c_str());
    return 2;
  }
  const Report report = RunLoad(*options, sender->get());
  if (!options->calls_out.empty()) {
    const std::string calls = FormatCalls(report);
    std::FILE* f = std::fopen(options->calls_out.c_str(), "w");
    bool written = f != nullptr && std::fwrite(calls.data(), 1, calls.size(), f) == calls.size();
    if (f != nullptr && std::fclose(f) != 0) written = false;
    if (!written) {
      std::fprintf(stderr, "fanout-bench: --calls_out: cannot write %s\n",
                   options->calls_out.c_str());
      return 2;
    }
  }
  const std::string out = options->json ? FormatJson(report) + "\n" : FormatText(report);
  std::fputs(out.c_str(), stdout);
  return report.codes.errors() == 0 ? 0 : 1;
}
