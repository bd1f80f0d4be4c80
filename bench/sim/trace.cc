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
  if (kind == "loop" && parts.size() == 1) {
    spec->kind = SyntheticSpec::Kind::kLoop;
    return absl::OkStatus();
  }
  if ((kind == "zipf" && parts.size() == 2) || (kind == "scan-zipf" && parts.size() <= 2)) {
    spec->kind = kind == "zipf" ? SyntheticSpec::Kind::kZipf : SyntheticSpec::Kind::kScanZipf;
    if (parts.size() == 2 && (!absl::SimpleAtod(parts[1], &spec->alpha) || spec->alpha <= 0)) {
      return absl::InvalidArgumentError(absl::StrCat("bad Zipf exponent in '", text, "'"));
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown synthetic trace '", text, "' (zipf:A, loop, scan-zipf[:A])"));
}

Trace GenerateTrace(const SyntheticSpec& spec) {
  Trace trace;
  trace.reserve(spec.length);
  if (spec.kind == SyntheticSpec::Kind::kLoop) {
    for (uint64_t i = 0; i < spec.length; ++i) trace.push_back(i % spec.keys);
    return trace;
  }
  std::mt19937_64 rng(spec.seed);
  const ZipfSampler zipf(spec.keys, spec.alpha);
  uint64_t next_one_off = spec.keys;
  uint64_t since_scan = 0;
  while (trace.size() < spec.length) {
    if (spec.kind == SyntheticSpec::Kind::kScanZipf && since_scan == spec.scan_period) {
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
