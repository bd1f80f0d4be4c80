#include "bench/sim/trace.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fanout::sim {
namespace {

constexpr uint64_t kMaxKeys = 100'000'000;

// Shell-quotes a path for popen.
std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

absl::StatusOr<std::string> ReadAll(const std::string& path) {
  if (absl::EndsWith(path, ".xz")) {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) return absl::NotFoundError(absl::StrCat("cannot open ", path));
    const std::string command = absl::StrCat("xz -dc ", Quote(path));
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) return absl::InternalError(absl::StrCat("cannot run ", command));
    std::string data;
    char buffer[1 << 16];
    size_t n;
    while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) data.append(buffer, n);
    if (pclose(pipe) != 0) return absl::InternalError(absl::StrCat(command, " failed"));
    return data;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A uniform double in [0, 1) from the top 53 bits: unlike
// std::uniform_real_distribution, the same on every standard library.
double Uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Inverse-CDF sampling of Zipf ranks 0..keys-1.
class ZipfSampler {
 public:
  ZipfSampler(uint64_t keys, double alpha) : cdf_(keys) {
    double sum = 0;
    for (uint64_t r = 0; r < keys; ++r) {
      sum += 1.0 / std::pow(static_cast<double>(r + 1), alpha);
      cdf_[r] = sum;
    }
    for (double& c : cdf_) c /= sum;
  }
  uint64_t Next(std::mt19937_64& rng) const {
    const double u = Uniform(rng);
    const auto it = std::upper_bound(cdf_.begin(), cdf_.end(), u);
    return std::min<uint64_t>(it - cdf_.begin(), cdf_.size() - 1);
  }

 private:
  std::vector<double> cdf_;
};

// Fisher-Yates with the generator's raw output: unlike std::shuffle, the
// same order on every standard library.
void Shuffle(std::vector<uint64_t>& v, std::mt19937_64& rng) {
  for (uint64_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng() % i]);
}

// The LRU stack model: each draw is a new key (numbered from first_key up)
// with probability new_fraction, else the key at a geometrically distributed
// depth of the stack of keys used so far, which then moves to the top.
class RecencyStack {
 public:
  RecencyStack(double new_fraction, double mean_depth, uint64_t first_key)
      : new_fraction_(new_fraction),
        // A geometric distribution on 0, 1, ... with mean m has p = 1/(m+1).
        log_keep_(std::log1p(-1.0 / (mean_depth + 1))),
        max_depth_(std::max<uint64_t>(1024, static_cast<uint64_t>(64 * mean_depth))),
        next_key_(first_key) {}

  uint64_t Next(std::mt19937_64& rng) {
    // Both draws are always taken, so the stream of randomness does not
    // depend on the outcome.
    const double u_new = Uniform(rng);
    const double u_depth = Uniform(rng);
    const uint64_t depth =
        log_keep_ == 0 ? 0 : static_cast<uint64_t>(std::floor(std::log1p(-u_depth) / log_keep_));
    if (u_new < new_fraction_ || depth >= stack_.size()) {
      stack_.push_back(next_key_++);
      if (stack_.size() > 2 * max_depth_) {
        // Depths beyond max_depth_ have probability below e^-64.
        stack_.erase(stack_.begin(), stack_.end() - static_cast<std::ptrdiff_t>(max_depth_));
      }
      return stack_.back();
    }
    // The top of the stack is the vector's end.
    const auto at = stack_.end() - 1 - static_cast<std::ptrdiff_t>(depth);
    std::rotate(at, at + 1, stack_.end());
    return stack_.back();
  }

 private:
  const double new_fraction_;
  const double log_keep_;
  const uint64_t max_depth_;
  uint64_t next_key_;
  std::vector<uint64_t> stack_;  // most recent last
};

}  // namespace

absl::StatusOr<TraceFormat> ParseTraceFormat(absl::string_view name) {
  if (name == "text") return TraceFormat::kText;
  if (name == "u32be") return TraceFormat::kU32Be;
  return absl::InvalidArgumentError(absl::StrCat("unknown trace format '", name, "'"));
}

absl::StatusOr<Trace> ParseTextTrace(absl::string_view text) {
  Trace trace;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    uint64_t key;
    if (!absl::SimpleAtoi(line, &key) || line[0] == '-' || line[0] == '+') {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": not an unsigned integer: '", line, "'"));
    }
    trace.push_back(key);
  }
  return trace;
}

absl::StatusOr<Trace> ParseU32BeTrace(absl::string_view bytes) {
  if (bytes.size() % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("u32be trace of ", bytes.size(), " bytes is not a multiple of 4"));
  }
  Trace trace;
  trace.reserve(bytes.size() / 4);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  for (size_t i = 0; i < bytes.size(); i += 4) {
    trace.push_back(uint64_t{p[i]} << 24 | uint64_t{p[i + 1]} << 16 | uint64_t{p[i + 2]} << 8 |
                    uint64_t{p[i + 3]});
  }
  return trace;
}

absl::StatusOr<Trace> ReadTrace(const std::string& path, TraceFormat format) {
  absl::StatusOr<std::string> data = ReadAll(path);
  if (!data.ok()) return data.status();
  return format == TraceFormat::kText ? ParseTextTrace(*data) : ParseU32BeTrace(*data);
}

absl::Status WriteTrace(const std::string& path, TraceFormat format, const Trace& trace) {
  std::string data;
  for (uint64_t key : trace) {
    if (format == TraceFormat::kText) {
      absl::StrAppend(&data, key, "\n");
      continue;
    }
    if (key > 0xffffffffu) {
      return absl::InvalidArgumentError(absl::StrCat("key ", key, " does not fit u32be"));
    }
    const char bytes[4] = {static_cast<char>(key >> 24), static_cast<char>(key >> 16),
                           static_cast<char>(key >> 8), static_cast<char>(key)};
    data.append(bytes, 4);
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status ParseSyntheticKind(absl::string_view text, SyntheticSpec* spec) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  const absl::string_view kind = parts[0];
  if ((kind == "loop" || kind == "recency") && parts.size() == 1) {
    spec->kind = kind == "loop" ? SyntheticSpec::Kind::kLoop : SyntheticSpec::Kind::kRecency;
    return absl::OkStatus();
  }
  const bool exponent_optional = kind == "scan-zipf" || kind == "shift-zipf" || kind == "mix";
  if ((kind == "zipf" && parts.size() == 2) || (exponent_optional && parts.size() <= 2)) {
    if (kind == "zipf") {
      spec->kind = SyntheticSpec::Kind::kZipf;
    } else if (kind == "scan-zipf") {
      spec->kind = SyntheticSpec::Kind::kScanZipf;
    } else if (kind == "shift-zipf") {
      spec->kind = SyntheticSpec::Kind::kShiftZipf;
    } else {
      spec->kind = SyntheticSpec::Kind::kMix;
    }
    if (parts.size() == 2 && (!absl::SimpleAtod(parts[1], &spec->alpha) || spec->alpha <= 0)) {
      return absl::InvalidArgumentError(absl::StrCat("bad Zipf exponent in '", text, "'"));
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown synthetic trace '", text,
                   "' (zipf:A, loop, scan-zipf[:A], shift-zipf[:A], recency, mix[:A])"));
}

absl::Status ValidateSyntheticSpec(const SyntheticSpec& spec) {
  const auto fraction = [](absl::string_view name, double v) -> absl::Status {
    if (v >= 0 && v <= 1) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(name, " must be from 0 to 1, got ", v));
  };
  using Kind = SyntheticSpec::Kind;
  if (spec.keys == 0 && spec.kind != Kind::kRecency) {
    return absl::InvalidArgumentError("keys must be positive");
  }
  // The Zipf sampler holds a table of `keys` doubles.
  if (spec.keys > kMaxKeys) {
    return absl::InvalidArgumentError(absl::StrCat("keys must be at most ", kMaxKeys));
  }
  if (spec.kind == Kind::kShiftZipf) {
    if (spec.phase_length == 0) return absl::InvalidArgumentError("phase_length must be positive");
    return fraction("shift_fraction", spec.shift_fraction);
  }
  if (spec.kind == Kind::kRecency || spec.kind == Kind::kMix) {
    if (absl::Status s = fraction("new_fraction", spec.new_fraction); !s.ok()) return s;
    if (!(spec.mean_depth >= 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("mean_depth must not be negative, got ", spec.mean_depth));
    }
    if (spec.kind == Kind::kMix) return fraction("mix_fraction", spec.mix_fraction);
  }
  return absl::OkStatus();
}

Trace GenerateTrace(const SyntheticSpec& spec) {
  Trace trace;
  trace.reserve(spec.length);
  using Kind = SyntheticSpec::Kind;
  if (spec.kind == Kind::kLoop) {
    for (uint64_t i = 0; i < spec.length; ++i) trace.push_back(i % spec.keys);
    return trace;
  }
  std::mt19937_64 rng(spec.seed);
  if (spec.kind == Kind::kRecency) {
    RecencyStack recency(spec.new_fraction, spec.mean_depth, /*first_key=*/0);
    while (trace.size() < spec.length) trace.push_back(recency.Next(rng));
    return trace;
  }
  const ZipfSampler zipf(spec.keys, spec.alpha);
  if (spec.kind == Kind::kMix) {
    RecencyStack recency(spec.new_fraction, spec.mean_depth, /*first_key=*/spec.keys);
    while (trace.size() < spec.length) {
      trace.push_back(Uniform(rng) < spec.mix_fraction ? recency.Next(rng) : zipf.Next(rng));
    }
    return trace;
  }
  if (spec.kind == Kind::kShiftZipf) {
    // ids[rank] is the key drawn for a rank in the current phase.
    std::vector<uint64_t> ids(spec.keys);
    for (uint64_t r = 0; r < spec.keys; ++r) ids[r] = r;
    Shuffle(ids, rng);
    std::vector<uint64_t> ranks(spec.keys);
    for (uint64_t r = 0; r < spec.keys; ++r) ranks[r] = r;
    const auto shifted =
        static_cast<uint64_t>(std::llround(spec.shift_fraction * static_cast<double>(spec.keys)));
    uint64_t next_key = spec.keys;
    for (uint64_t i = 0; i < spec.length; ++i) {
      if (i > 0 && i % spec.phase_length == 0) {
        // A seeded random subset of the ranks gets new keys, in random order.
        for (uint64_t j = 0; j < shifted; ++j) {
          std::swap(ranks[j], ranks[j + rng() % (spec.keys - j)]);
          ids[ranks[j]] = next_key++;
        }
      }
      trace.push_back(ids[zipf.Next(rng)]);
    }
    return trace;
  }
  uint64_t next_one_off = spec.keys;
  uint64_t since_scan = 0;
  while (trace.size() < spec.length) {
    if (spec.kind == Kind::kScanZipf && since_scan == spec.scan_period) {
      for (uint64_t i = 0; i < spec.scan_length && trace.size() < spec.length; ++i) {
        trace.push_back(next_one_off++);
      }
      since_scan = 0;
      continue;
    }
    trace.push_back(zipf.Next(rng));
    ++since_scan;
  }
  return trace;
}

}  // namespace fanout::sim
