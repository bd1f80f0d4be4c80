#include "router/route_config.h"

#include <array>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fanout::router {
namespace {

constexpr std::array<std::pair<absl::string_view, Policy>, 8> kPolicies = {{
    {"all", Policy::kAll},
    {"all_settled", Policy::kAllSettled},
    {"first_success", Policy::kFirstSuccess},
    {"fallback", Policy::kFallback},
    {"hedged", Policy::kHedged},
    {"least_loaded", Policy::kLeastLoaded},
    {"round_robin", Policy::kRoundRobin},
    {"adaptive", Policy::kAdaptive},
}};

absl::Status Invalid(const RouteConfig& route, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("route '", route.name, "': ", what));
}

}  // namespace

absl::StatusOr<Policy> ParsePolicy(absl::string_view name) {
  for (const auto& [text, policy] : kPolicies) {
    if (name == text) return policy;
  }
  std::string names;
  for (const auto& entry : kPolicies) {
    absl::StrAppend(&names, names.empty() ? "" : ", ", entry.first);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("policy: unknown value '", name, "'; want one of ", names));
}

absl::string_view PolicyName(Policy policy) {
  for (const auto& [text, p] : kPolicies) {
    if (p == policy) return text;
  }
  return "unknown";
}

absl::Status ValidateRouteConfig(const RouteConfig& route) {
  if (route.name.empty()) return absl::InvalidArgumentError("route: empty name");
  if (route.backends.empty()) return Invalid(route, "backends: none configured");
  if (!absl::StartsWith(route.method, "/") || route.method.find('/', 1) == std::string::npos ||
      absl::EndsWith(route.method, "/")) {
    return Invalid(route, absl::StrCat("method: '", route.method,
                                       "' is not of the form /package.Service/Method"));
  }
  if (route.timeout <= absl::ZeroDuration()) return Invalid(route, "timeout: must be positive");
  if (route.hedge_after < absl::ZeroDuration()) return Invalid(route, "hedge_after: negative");
  if (route.attempt_timeout <= absl::ZeroDuration()) {
    return Invalid(route, "attempt_timeout: must be positive");
  }
  absl::flat_hash_set<std::string> names;
  for (const BackendConfig& backend : route.backends) {
    if (backend.address.empty()) return Invalid(route, "backends: empty address");
    const std::string& name = backend.name.empty() ? backend.address : backend.name;
    if (!names.insert(name).second) {
      return Invalid(route, absl::StrCat("backends: duplicate name '", name, "'"));
    }
  }
  const EjectionConfig& e = route.ejection;
  if (e.consecutive_failures < 0 || e.base_ejection <= absl::ZeroDuration() ||
      e.max_ejection < e.base_ejection) {
    return Invalid(route, "ejection: need consecutive_failures >= 0 and 0 < base <= max");
  }
  if (e.max_ejection_percent < 0 || e.max_ejection_percent > 100) {
    return Invalid(route, absl::StrCat("ejection.max_ejection_percent: ", e.max_ejection_percent,
                                       " is not within 0..100"));
  }
  const AdaptiveConfig& a = route.adaptive;
  if (a.window < 1 || a.min_races < 1 || a.commit_share <= 0.5 || a.commit_share > 1 ||
      a.explore_share < 0 || a.explore_share >= 1 || a.regression_factor < 1 ||
      a.max_error_rate < 0 || a.max_error_rate > 1) {
    return Invalid(route,
                   "adaptive: need window, min_races >= 1, 0.5 < commit_share <= 1, "
                   "0 <= explore_share < 1, regression_factor >= 1, 0 <= max_error_rate <= 1");
  }
  if (a.min_races > a.window) {
    return Invalid(
        route, absl::StrCat("adaptive.min_races: ", a.min_races, " is more than adaptive.window (",
                            a.window, "); want min_races <= window"));
  }
  return absl::OkStatus();
}

}  // namespace fanout::router
