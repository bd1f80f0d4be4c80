#include "bench/options.h"

#include <functional>
#include <limits>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fanout::bench {
namespace {

absl::Status BadValue(absl::string_view flag, absl::string_view value, absl::string_view want) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": \"", value, "\" is not ", want));
}

absl::Status ParseInt(absl::string_view flag, absl::string_view value, int64_t min, int64_t max,
                      int64_t* out) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(value, &v)) return BadValue(flag, value, "an integer");
  if (v < min || v > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", v, " is out of range [", min, ", ", max, "]"));
  }
  *out = v;
  return absl::OkStatus();
}

absl::Status ParseInt32(absl::string_view flag, absl::string_view value, int min, int* out) {
  int64_t v = 0;
  absl::Status s = ParseInt(flag, value, min, std::numeric_limits<int>::max(), &v);
  if (s.ok()) *out = static_cast<int>(v);
  return s;
}

absl::Status ParseDouble(absl::string_view flag, absl::string_view value, double* out) {
  double v = 0;
  if (!absl::SimpleAtod(value, &v) || !(v >= 0) || v == std::numeric_limits<double>::infinity()) {
    return BadValue(flag, value, "a finite number >= 0");
  }
  *out = v;
  return absl::OkStatus();
}

absl::Status ParseDurationFlag(absl::string_view flag, absl::string_view value,
                               absl::Duration* out) {
  absl::Duration d;
  if (!absl::ParseDuration(value, &d) || d < absl::ZeroDuration() ||
      d == absl::InfiniteDuration()) {
    return BadValue(flag, value, "a duration such as 10s or 500ms");
  }
  *out = d;
  return absl::OkStatus();
}

absl::Status ParseBool(absl::string_view flag, absl::string_view value, bool* out) {
  if (value == "true" || value == "1") {
    *out = true;
  } else if (value == "false" || value == "0") {
    *out = false;
  } else {
    return BadValue(flag, value, "true or false");
  }
  return absl::OkStatus();
}

// "BYTES:WEIGHT,BYTES:WEIGHT,..."; ":WEIGHT" may be left out (weight 1).
absl::Status ParsePayloadMix(absl::string_view flag, absl::string_view value,
                             std::vector<PayloadChoice>* out) {
  std::vector<PayloadChoice> mix;
  for (absl::string_view item : absl::StrSplit(value, ',')) {
    const std::pair<absl::string_view, absl::string_view> parts =
        absl::StrSplit(item, absl::MaxSplits(':', 1));
    PayloadChoice choice;
    int64_t bytes = 0;
    if (!ParseInt(flag, parts.first, 0, std::numeric_limits<int>::max(), &bytes).ok()) {
      return BadValue(flag, value, "a list of BYTES:WEIGHT such as 100:0.5,40000:0.5");
    }
    choice.bytes = static_cast<int>(bytes);
    if (!parts.second.empty() &&
        (!ParseDouble(flag, parts.second, &choice.weight).ok() || choice.weight <= 0)) {
      return BadValue(flag, value, "a list of BYTES:WEIGHT with weights > 0");
    }
    mix.push_back(choice);
  }
  *out = std::move(mix);
  return absl::OkStatus();
}

using Setter =
    std::function<absl::Status(absl::string_view flag, absl::string_view value, BenchOptions* o)>;

struct Flag {
  bool is_bool;
  Setter set;
};

const std::map<std::string, Flag, std::less<>>& Flags() {
  static const auto* flags = new std::map<std::string, Flag, std::less<>>{
      {"target",
       {false,
        [](auto, auto v, BenchOptions* o) {
          o->target = std::string(v);
          return absl::OkStatus();
        }}},
      {"rpc",
       {false,
        [](auto f, auto v, BenchOptions* o) {
          if (v == "get")
            o->rpc = Rpc::kGet;
          else if (v == "batchget")
            o->rpc = Rpc::kBatchGet;
          else if (v == "route")
            o->rpc = Rpc::kRoute;
          else if (v == "echo")
            o->rpc = Rpc::kEcho;
          else
            return BadValue(f, v, "one of get, batchget, route, echo");
          return absl::OkStatus();
        }}},
      {"mode",
       {false,
        [](auto f, auto v, BenchOptions* o) {
          if (v == "closed")
            o->mode = LoadMode::kClosed;
          else if (v == "open")
            o->mode = LoadMode::kOpen;
          else
            return BadValue(f, v, "closed or open");
          return absl::OkStatus();
        }}},
      {"concurrency",
       {false,
        [](auto f, auto v, BenchOptions* o) { return ParseInt32(f, v, 1, &o->concurrency); }}},
      {"rate",
       {false, [](auto f, auto v, BenchOptions* o) { return ParseDouble(f, v, &o->rate); }}},
      {"max_in_flight",
       {false,
        [](auto f, auto v, BenchOptions* o) { return ParseInt32(f, v, 1, &o->max_in_flight); }}},
      {"senders",
       {false, [](auto f, auto v, BenchOptions* o) { return ParseInt32(f, v, 1, &o->senders); }}},
      {"duration",
       {false,
        [](auto f, auto v, BenchOptions* o) { return ParseDurationFlag(f, v, &o->duration); }}},
      {"count",
       {false,
        [](auto f, auto v, BenchOptions* o) {
          return ParseInt(f, v, 0, std::numeric_limits<int64_t>::max(), &o->count);
        }}},
      {"warmup",
       {false,
        [](auto f, auto v, BenchOptions* o) { return ParseDurationFlag(f, v, &o->warmup); }}},
      {"channels",
       {false, [](auto f, auto v, BenchOptions* o) { return ParseInt32(f, v, 1, &o->channels); }}},
      {"timeout",
       {false,
        [](auto f, auto v, BenchOptions* o) { return ParseDurationFlag(f, v, &o->timeout); }}},
      {"keys",
       {false, [](auto f, auto v, BenchOptions* o) { return ParseInt32(f, v, 1, &o->keys); }}},
      {"key_prefix",
       {false,
        [](auto, auto v, BenchOptions* o) {
          o->key_prefix = std::string(v);
          return absl::OkStatus();
        }}},
      {"namespace",
       {false,
        [](auto, auto v, BenchOptions* o) {
          o->ns = std::string(v);
          return absl::OkStatus();
        }}},
      {"zipf",
       {false, [](auto f, auto v, BenchOptions* o) { return ParseDouble(f, v, &o->zipf); }}},
      {"batch_size",
       {false,
        [](auto f, auto v, BenchOptions* o) { return ParseInt32(f, v, 1, &o->batch_size); }}},
      {"route",
       {false,
        [](auto, auto v, BenchOptions* o) {
          o->route = std::string(v);
          return absl::OkStatus();
        }}},
      {"payload_bytes",
       {false,
        [](auto f, auto v, BenchOptions* o) { return ParseInt32(f, v, 0, &o->payload_bytes); }}},
      {"payload_mix",
       {false,
        [](auto f, auto v, BenchOptions* o) { return ParsePayloadMix(f, v, &o->payload_mix); }}},
      {"calls_out",
       {false,
        [](auto, auto v, BenchOptions* o) {
          o->calls_out = std::string(v);
          return absl::OkStatus();
        }}},
      {"cost",
       {false,
        [](auto f, auto v, BenchOptions* o) {
          return ParseInt(f, v, 0, std::numeric_limits<int64_t>::max(), &o->cost);
        }}},
      {"seed",
       {false,
        [](auto f, auto v, BenchOptions* o) {
          int64_t seed = 0;
          absl::Status s = ParseInt(f, v, 0, std::numeric_limits<int64_t>::max(), &seed);
          o->seed = static_cast<uint64_t>(seed);
          return s;
        }}},
      {"json", {true, [](auto f, auto v, BenchOptions* o) { return ParseBool(f, v, &o->json); }}},
      {"help", {true, [](auto f, auto v, BenchOptions* o) { return ParseBool(f, v, &o->help); }}},
  };
  return *flags;
}

// Checks that hold between flags.
absl::Status Validate(const BenchOptions& o, const std::map<std::string, bool, std::less<>>& seen) {
  if (o.target.empty()) return absl::InvalidArgumentError("--target: required (host:port)");
  if (o.duration == absl::ZeroDuration() && o.count == 0) {
    return absl::InvalidArgumentError("--duration and --count are both 0: the run has no end");
  }
  if (o.mode == LoadMode::kOpen) {
    if (o.rate <= 0) return absl::InvalidArgumentError("--rate: required (> 0) with --mode=open");
    if (seen.contains("concurrency")) {
      return absl::InvalidArgumentError(
          "--concurrency: applies to --mode=closed; use --rate and --max_in_flight with "
          "--mode=open");
    }
  } else if (seen.contains("rate") || seen.contains("max_in_flight") || seen.contains("senders")) {
    const char* flag = seen.contains("rate")            ? "rate"
                       : seen.contains("max_in_flight") ? "max_in_flight"
                                                        : "senders";
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": applies to --mode=open only"));
  }
  if (o.rpc == Rpc::kRoute && o.route.empty()) {
    return absl::InvalidArgumentError("--route: required with --rpc=route");
  }
  if (o.rpc != Rpc::kRoute && (seen.contains("route") || seen.contains("cost"))) {
    return absl::InvalidArgumentError(absl::StrCat("--", seen.contains("route") ? "route" : "cost",
                                                   ": applies to --rpc=route only"));
  }
  if (seen.contains("payload_mix")) {
    if (o.rpc != Rpc::kRoute && o.rpc != Rpc::kEcho) {
      return absl::InvalidArgumentError("--payload_mix: applies to --rpc=route and echo only");
    }
    if (seen.contains("payload_bytes")) {
      return absl::InvalidArgumentError("--payload_mix: replaces --payload_bytes; give one");
    }
  }
  if (o.rpc != Rpc::kBatchGet && seen.contains("batch_size")) {
    return absl::InvalidArgumentError("--batch_size: applies to --rpc=batchget only");
  }
  if (o.rpc == Rpc::kBatchGet && o.batch_size > o.keys) {
    return absl::InvalidArgumentError(
        absl::StrCat("--batch_size: ", o.batch_size, " is more than --keys (", o.keys, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view RpcName(Rpc rpc) {
  switch (rpc) {
    case Rpc::kGet:
      return "get";
    case Rpc::kBatchGet:
      return "batchget";
    case Rpc::kRoute:
      return "route";
    case Rpc::kEcho:
      return "echo";
  }
  return "?";
}

absl::string_view LoadModeName(LoadMode mode) {
  return mode == LoadMode::kOpen ? "open" : "closed";
}

absl::StatusOr<BenchOptions> ParseBenchArgs(const std::vector<std::string>& args) {
  BenchOptions o;
  std::map<std::string, bool, std::less<>> seen;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (!absl::ConsumePrefix(&arg, "--") || arg.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", args[i], "\": expected a flag such as --target=host:port"));
    }
    absl::string_view name = arg;
    absl::string_view value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    auto flag = Flags().find(name);
    if (flag == Flags().end()) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": unknown flag (see --help)"));
    }
    if (!has_value) {
      if (flag->second.is_bool) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", name, ": missing value"));
      }
    }
    if (absl::Status s = flag->second.set(name, value, &o); !s.ok()) return s;
    seen[std::string(name)] = true;
    if (o.help) return o;
  }
  if (absl::Status s = Validate(o, seen); !s.ok()) return s;
  return o;
}

std::string BenchUsage() {
  return R"(fanout-bench: a gRPC load generator for fanoutd and its baselines.

usage: fanout-bench --target=HOST:PORT [flags]

What to call
  --rpc=get|batchget|route|echo  fanout.v1.Sidecar Get/BatchGet/Route, or fanout.v1.Echo/Echo (get)
  --keys=K                       Get/BatchGet keys are KEY_PREFIX0 .. KEY_PREFIX(K-1) (1000)
  --key_prefix=P                 (k)
  --namespace=NS                 ("")
  --zipf=S                       key popularity skew; 0 = uniform (0)
  --batch_size=N                 BatchGet keys per call (10)
  --route=NAME                   Route: the route to call (required with --rpc=route)
  --payload_bytes=N              Route and Echo request payload size (0)
  --payload_mix=B:W,B:W,...      Route and Echo: each call's payload size drawn from sizes B
                                 (bytes) by weight W, e.g. 128:0.5,14000:0.25,38000:0.25
  --cost=N                       Route: cost estimate (0)

How hard
  --mode=closed|open             closed: a fixed number in flight; open: Poisson arrivals (closed)
  --concurrency=N                closed: calls in flight (16)
  --rate=R                       open: calls per second (required with --mode=open)
  --max_in_flight=N              open: past this, sends wait; their latency still counts (10000)
  --senders=N                    open: threads sending, each a Poisson stream of RATE/N (1)
  --channels=N                   separate connections (1)
  --timeout=D                    deadline of each call (5s)

How long
  --duration=D                   measured time, after the warm-up; 0 = until --count (10s)
  --count=N                      measured calls; 0 = until --duration (0)
  --warmup=D                     calls started in this time are not measured (1s)

Output
  --json                         one JSON object instead of text
  --seed=N                       seed of the key, payload and arrival sequences (1)
  --calls_out=FILE               write every measured call to FILE, one line each:
                                 start_ns latency_ns code payload_bytes (start from the
                                 window's opening; errors included)

Latency is measured from the intended send time (open loop: the arrival time,
even when the generator sends late), to the answer. Every status is checked;
errors are counted by gRPC code and never as throughput. Exit status: 0 when
every measured call succeeded, 1 when some failed, 2 on bad flags or no
connection.
)";
}

}  // namespace fanout::bench
