// fanout-sim: hit ratios of the L1 policy (W-TinyLFU, the cache's own code),
// LRU, Bélády's optimum and perfect-knowledge LFU on a trace, at several
// cache sizes (in entries). Prints one line per policy and size:
//   policy size hit_ratio
//
//   fanout-sim --trace FILE [--format text|u32be] --sizes N,N,...
//   fanout-sim --synthetic zipf:A|loop|scan-zipf[:A]|shift-zipf[:A]|recency|mix[:A]
//              [--length N] [--keys K] [--seed S] [--scan-period P]
//              [--scan-length L] [--phase-length N] [--shift-fraction F]
//              [--new-fraction F] [--mean-depth D] [--mix-fraction F]
//              --sizes N,...
// (see SyntheticSpec in trace.h for what each kind and parameter means).
// Options: --policies wtinylfu,lru,opt,lfu (default all); --shards N splits
// the W-TinyLFU budget over N hash shards as the cache does (default 1);
// --fixed-window turns off window adaptation; --window F starts the window at
// fraction F of the capacity (default the policy's own); --hash-seed S varies
// the key hash of W-TinyLFU (default 0); --write-trace FILE writes the
// trace (in --format, default text) and exits; --timeline N also prints,
// every N accesses of each W-TinyLFU run, a line
//   timeline size accesses window_capacity protected_capacity hit_ratio
// with the first shard's region sizes and the hit ratio of those N accesses.
// A FILE ending in .xz is read through `xz -dc`; its format defaults to
// u32be, otherwise to text.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/sim/simulate.h"
#include "bench/sim/trace.h"

namespace fanout::sim {
namespace {

struct Flags {
  std::string trace_path;
  std::string format;
  std::string synthetic;
  std::string write_trace;
  std::vector<uint64_t> sizes;
  std::vector<std::string> policies = {"wtinylfu", "lru", "opt", "lfu"};
  SyntheticSpec spec;
  int shards = 1;
  uint64_t hash_seed = 0;
  uint64_t timeline = 0;
  double window = -1;
  bool fixed_window = false;
};

[[noreturn]] void Usage(const std::string& error) {
  std::fprintf(
      stderr,
      "fanout-sim: %s\n"
      "usage: fanout-sim (--trace FILE [--format text|u32be] | --synthetic SPEC\n"
      "       [--length N] [--keys K] [--seed S] [--scan-period P] [--scan-length L]\n"
      "       [--phase-length N] [--shift-fraction F] [--new-fraction F]\n"
      "       [--mean-depth D] [--mix-fraction F])\n"
      "       --sizes N,N,... [--policies wtinylfu,lru,opt,lfu] [--shards N]\n"
      "       [--fixed-window] [--window F] [--hash-seed S] [--timeline N] [--write-trace FILE]\n",
      error.c_str());
  std::exit(2);
}

uint64_t ParseCount(const std::string& flag, const std::string& value) {
  uint64_t n;
  if (!absl::SimpleAtoi(value, &n)) Usage(flag + " wants an unsigned integer, got '" + value + "'");
  return n;
}

double ParseNumber(const std::string& flag, const std::string& value) {
  double v;
  if (!absl::SimpleAtod(value, &v)) Usage(flag + " wants a number, got '" + value + "'");
  return v;
}

Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--fixed-window") {
      flags.fixed_window = true;
      continue;
    }
    if (i + 1 >= argc) Usage("missing value for " + arg);
    const std::string value = argv[++i];
    if (arg == "--trace") {
      flags.trace_path = value;
    } else if (arg == "--format") {
      flags.format = value;
    } else if (arg == "--synthetic") {
      flags.synthetic = value;
    } else if (arg == "--write-trace") {
      flags.write_trace = value;
    } else if (arg == "--sizes") {
      for (absl::string_view s : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        flags.sizes.push_back(ParseCount(arg, std::string(s)));
      }
    } else if (arg == "--policies") {
      flags.policies = absl::StrSplit(value, ',', absl::SkipEmpty());
    } else if (arg == "--length") {
      flags.spec.length = ParseCount(arg, value);
    } else if (arg == "--keys") {
      flags.spec.keys = ParseCount(arg, value);
    } else if (arg == "--seed") {
      flags.spec.seed = ParseCount(arg, value);
    } else if (arg == "--scan-period") {
      flags.spec.scan_period = ParseCount(arg, value);
    } else if (arg == "--scan-length") {
      flags.spec.scan_length = ParseCount(arg, value);
    } else if (arg == "--phase-length") {
      flags.spec.phase_length = ParseCount(arg, value);
    } else if (arg == "--shift-fraction") {
      flags.spec.shift_fraction = ParseNumber(arg, value);
    } else if (arg == "--new-fraction") {
      flags.spec.new_fraction = ParseNumber(arg, value);
    } else if (arg == "--mean-depth") {
      flags.spec.mean_depth = ParseNumber(arg, value);
    } else if (arg == "--mix-fraction") {
      flags.spec.mix_fraction = ParseNumber(arg, value);
    } else if (arg == "--window") {
      flags.window = ParseNumber(arg, value);
      if (!(flags.window >= 0 && flags.window <= 1)) Usage("--window wants a fraction from 0 to 1");
    } else if (arg == "--timeline") {
      flags.timeline = ParseCount(arg, value);
    } else if (arg == "--hash-seed") {
      flags.hash_seed = ParseCount(arg, value);
    } else if (arg == "--shards") {
      flags.shards = static_cast<int>(ParseCount(arg, value));
    } else {
      Usage("unknown flag " + arg);
    }
  }
  if (flags.trace_path.empty() == flags.synthetic.empty()) {
    Usage("give exactly one of --trace and --synthetic");
  }
  if (flags.sizes.empty() && flags.write_trace.empty()) Usage("--sizes is required");
  if (flags.spec.keys == 0) Usage("--keys must be positive");
  for (const std::string& p : flags.policies) {
    if (p != "wtinylfu" && p != "lru" && p != "opt" && p != "lfu") Usage("unknown policy " + p);
  }
  return flags;
}

int Main(int argc, char** argv) {
  Flags flags = ParseFlags(argc, argv);
  std::string format_name = flags.format;
  if (format_name.empty()) {
    format_name = absl::EndsWith(flags.trace_path, ".xz") ? "u32be" : "text";
  }
  absl::StatusOr<TraceFormat> format = ParseTraceFormat(format_name);
  if (!format.ok()) Usage(std::string(format.status().message()));

  Trace trace;
  if (!flags.synthetic.empty()) {
    if (absl::Status s = ParseSyntheticKind(flags.synthetic, &flags.spec); !s.ok()) {
      Usage(std::string(s.message()));
    }
    if (absl::Status s = ValidateSyntheticSpec(flags.spec); !s.ok()) {
      Usage(std::string(s.message()));
    }
    trace = GenerateTrace(flags.spec);
  } else {
    absl::StatusOr<Trace> read = ReadTrace(flags.trace_path, *format);
    if (!read.ok()) {
      std::fprintf(stderr, "fanout-sim: %s\n", read.status().ToString().c_str());
      return 1;
    }
    trace = *std::move(read);
  }
  if (!flags.write_trace.empty()) {
    if (absl::Status s = WriteTrace(flags.write_trace, *format, trace); !s.ok()) {
      std::fprintf(stderr, "fanout-sim: %s\n", s.ToString().c_str());
      return 1;
    }
    return 0;
  }

  cache::WTinyLfuPolicyOptions options;
  options.adaptive_window = !flags.fixed_window;
  if (flags.window >= 0) options.initial_window_fraction = flags.window;
  for (const std::string& policy : flags.policies) {
    for (uint64_t size : flags.sizes) {
      SimResult r;
      if (policy == "wtinylfu") {
        SimResult last;
        const SimProbe probe = [&](const SimResult& so_far, const cache::WTinyLfuPolicy& p) {
          const uint64_t n = so_far.accesses - last.accesses;
          std::printf(
              "timeline %llu %llu %llu %llu %.4f\n", static_cast<unsigned long long>(size),
              static_cast<unsigned long long>(so_far.accesses),
              static_cast<unsigned long long>(p.window_capacity()),
              static_cast<unsigned long long>(p.protected_capacity()),
              n == 0 ? 0.0 : static_cast<double>(so_far.hits - last.hits) / static_cast<double>(n));
          last = so_far;
        };
        r = SimulateWTinyLfu(trace, size, options, flags.shards, flags.hash_seed,
                             flags.timeline != 0 ? probe : SimProbe(), flags.timeline);
      } else if (policy == "lru") {
        r = SimulateLru(trace, size);
      } else if (policy == "opt") {
        r = SimulateOpt(trace, size);
      } else {
        r = SimulateLfu(trace, size);
      }
      std::printf("%s %llu %.4f\n", policy.c_str(), static_cast<unsigned long long>(size),
                  r.hit_ratio());
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace fanout::sim

int main(int argc, char** argv) { return fanout::sim::Main(argc, argv); }
