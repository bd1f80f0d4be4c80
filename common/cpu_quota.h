// How much CPU this process may use, from its cgroup's CPU quota rather than
// the host's core count: a container limited to 2 CPUs on a 64-core node
// should size its thread pools for 2.
//
// cgroup v2 keeps the quota in "cpu.max" ("<quota> <period>" or
// "max <period>"); v1 in "cpu.cfs_quota_us" (-1 = none) and
// "cpu.cfs_period_us". The process's cgroup is found through
// /proc/self/cgroup and /proc/self/mountinfo; every level from it up to the
// mount's root may carry a quota, and the tightest one applies.
#ifndef FANOUT_COMMON_CPU_QUOTA_H_
#define FANOUT_COMMON_CPU_QUOTA_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fanout {

// CPUs allowed by a cgroup v2 "cpu.max" file: "150000 100000" → 1.5,
// "max 100000" → nullopt (no limit). InvalidArgument for anything else.
absl::StatusOr<std::optional<double>> ParseCgroupV2CpuMax(absl::string_view text);

// CPUs allowed by cgroup v1 "cpu.cfs_quota_us" and "cpu.cfs_period_us":
// "-1" → nullopt (no limit). InvalidArgument for anything else.
absl::StatusOr<std::optional<double>> ParseCgroupV1CpuQuota(absl::string_view quota,
                                                            absl::string_view period);

// The tightest cgroup CPU limit of this process, nullopt when there is none
// or it cannot be read (no cgroup file system, unreadable files). `root`
// prefixes every path read ("/proc/self/...", the cgroup mounts): "/" in
// production, a directory holding a fake tree in tests. Reads a few small
// files; call it at start-up, not on a hot path.
std::optional<double> CgroupCpuLimit(const std::string& root = "/");

// The CPUs this process may run on: the smaller of its CPU affinity mask and
// its cgroup CPU limit (fractional when the quota is).
double AvailableCpus();

}  // namespace fanout

#endif  // FANOUT_COMMON_CPU_QUOTA_H_
