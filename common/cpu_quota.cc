#include "common/cpu_quota.h"

#include <sched.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fanout {
namespace {

std::optional<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// mountinfo escapes ' ', '\t', '\n' and '\\' as octal ("\040").
std::string Unescape(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && absl::ascii_isdigit(s[i + 1]) &&
        absl::ascii_isdigit(s[i + 2]) && absl::ascii_isdigit(s[i + 3])) {
      out.push_back(
          static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool HasItem(absl::string_view comma_list, absl::string_view item) {
  for (absl::string_view x : absl::StrSplit(comma_list, ',')) {
    if (x == item) return true;
  }
  return false;
}

struct Mount {
  std::string root;         // the directory of the cgroup tree mounted here
  std::string mount_point;  // where it is mounted
};

// The cgroup v2 mount and the cgroup v1 mount carrying the "cpu" controller.
void FindMounts(absl::string_view mountinfo, std::optional<Mount>* v1_cpu,
                std::optional<Mount>* v2) {
  for (absl::string_view line : absl::StrSplit(mountinfo, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    // id parent major:minor root mount-point options [optional...] - type source super-options
    auto dash = std::find(fields.begin(), fields.end(), "-");
    if (fields.size() < 5 || dash == fields.end() || fields.end() - dash < 3) continue;
    const absl::string_view type = *(dash + 1);
    const absl::string_view super_options = *(dash + 3);
    Mount m{Unescape(fields[3]), Unescape(fields[4])};
    if (type == "cgroup2" && !v2->has_value()) {
      *v2 = std::move(m);
    } else if (type == "cgroup" && HasItem(super_options, "cpu") && !v1_cpu->has_value()) {
      *v1_cpu = std::move(m);
    }
  }
}

// The process's cgroup paths from /proc/self/cgroup.
void FindCgroupPaths(absl::string_view cgroup, std::optional<std::string>* v1_cpu,
                     std::optional<std::string>* v2) {
  for (absl::string_view line : absl::StrSplit(cgroup, '\n', absl::SkipEmpty())) {
    // hierarchy-id:controllers:path (the path may itself contain ':').
    std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (parts.size() != 3) continue;
    if (parts[0] == "0" && parts[1].empty()) {
      *v2 = std::string(parts[2]);
    } else if (HasItem(parts[1], "cpu")) {
      *v1_cpu = std::string(parts[2]);
    }
  }
}

// The directories from the process's cgroup up to the mount point, under
// `root`; empty when the cgroup path is not inside the mounted tree.
std::vector<std::string> CgroupDirs(const std::string& root, const Mount& mount,
                                    absl::string_view cgroup_path) {
  absl::string_view relative = cgroup_path;
  if (mount.root != "/" && !absl::ConsumePrefix(&relative, mount.root)) {
    // A cgroup outside the mounted subtree (seen with some container
    // runtimes): the mount point is this process's view of its own cgroup.
    relative = "";
  }
  std::string base = absl::StrCat(absl::StripSuffix(root, "/"), mount.mount_point);
  std::vector<std::string> dirs;
  std::string rel(absl::StripSuffix(relative, "/"));
  for (;;) {
    dirs.push_back(absl::StrCat(base, rel));
    if (rel.empty() || rel == "/") break;
    const size_t slash = rel.rfind('/');
    rel = slash == std::string::npos ? "" : rel.substr(0, slash);
  }
  return dirs;
}

std::optional<double> Tighter(std::optional<double> a, std::optional<double> b) {
  if (!a.has_value()) return b;
  if (!b.has_value()) return a;
  return std::min(*a, *b);
}

}  // namespace

absl::StatusOr<std::optional<double>> ParseCgroupV2CpuMax(absl::string_view text) {
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::StripAsciiWhitespace(text), ' ', absl::SkipEmpty());
  int64_t period = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &period) || period <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu.max: \"", text, "\" is not \"<quota> <period>\""));
  }
  if (parts[0] == "max") return std::optional<double>();
  int64_t quota = 0;
  if (!absl::SimpleAtoi(parts[0], &quota) || quota <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu.max: quota \"", parts[0], "\" is not a number"));
  }
  return std::optional<double>(static_cast<double>(quota) / static_cast<double>(period));
}

absl::StatusOr<std::optional<double>> ParseCgroupV1CpuQuota(absl::string_view quota_text,
                                                            absl::string_view period_text) {
  int64_t quota = 0;
  int64_t period = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(quota_text), &quota)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu.cfs_quota_us: \"", quota_text, "\" is not a number"));
  }
  if (quota < 0) return std::optional<double>();
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(period_text), &period) || period <= 0 ||
      quota == 0) {
    return absl::InvalidArgumentError(absl::StrCat("cpu.cfs_quota_us / cpu.cfs_period_us: \"",
                                                   quota_text, "\" / \"", period_text,
                                                   "\" is not a quota"));
  }
  return std::optional<double>(static_cast<double>(quota) / static_cast<double>(period));
}

std::optional<double> CgroupCpuLimit(const std::string& root) {
  const std::string prefix(absl::StripSuffix(root, "/"));
  std::optional<std::string> mountinfo = ReadSmallFile(prefix + "/proc/self/mountinfo");
  std::optional<std::string> cgroup = ReadSmallFile(prefix + "/proc/self/cgroup");
  if (!mountinfo.has_value() || !cgroup.has_value()) return std::nullopt;
  std::optional<Mount> v1_mount, v2_mount;
  FindMounts(*mountinfo, &v1_mount, &v2_mount);
  std::optional<std::string> v1_path, v2_path;
  FindCgroupPaths(*cgroup, &v1_path, &v2_path);

  std::optional<double> limit;
  if (v2_mount.has_value() && v2_path.has_value()) {
    for (const std::string& dir : CgroupDirs(prefix, *v2_mount, *v2_path)) {
      std::optional<std::string> max = ReadSmallFile(dir + "/cpu.max");
      if (!max.has_value()) continue;
      absl::StatusOr<std::optional<double>> cpus = ParseCgroupV2CpuMax(*max);
      if (cpus.ok()) limit = Tighter(limit, *cpus);
    }
  }
  if (v1_mount.has_value() && v1_path.has_value()) {
    for (const std::string& dir : CgroupDirs(prefix, *v1_mount, *v1_path)) {
      std::optional<std::string> quota = ReadSmallFile(dir + "/cpu.cfs_quota_us");
      std::optional<std::string> period = ReadSmallFile(dir + "/cpu.cfs_period_us");
      if (!quota.has_value() || !period.has_value()) continue;
      absl::StatusOr<std::optional<double>> cpus = ParseCgroupV1CpuQuota(*quota, *period);
      if (cpus.ok()) limit = Tighter(limit, *cpus);
    }
  }
  return limit;
}

double AvailableCpus() {
  double cpus = std::max(1u, std::thread::hardware_concurrency());
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) {
    cpus = CPU_COUNT(&set);
  }
  std::optional<double> limit = CgroupCpuLimit();
  return limit.has_value() ? std::min(cpus, *limit) : cpus;
}

}  // namespace fanout
