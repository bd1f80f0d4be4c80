#include "router/router.h"

#include <algorithm>
#include <atomic>
#include <random>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "common/task_group.h"
#include "router/balancer.h"

namespace fanout::router {

fanout::v1::Policy ToProto(Policy policy) {
  switch (policy) {
    case Policy::kAll:
      return fanout::v1::ALL;
    case Policy::kAllSettled:
      return fanout::v1::ALL_SETTLED;
    case Policy::kFirstSuccess:
      return fanout::v1::FIRST_SUCCESS;
    case Policy::kFallback:
      return fanout::v1::FALLBACK;
    case Policy::kHedged:
      return fanout::v1::HEDGED;
    case Policy::kLeastLoaded:
      return fanout::v1::LEAST_LOADED;
    case Policy::kRoundRobin:
      return fanout::v1::ROUND_ROBIN;
    case Policy::kAdaptive:
      return fanout::v1::ADAPTIVE;
  }
  return fanout::v1::POLICY_UNSPECIFIED;
}

absl::StatusOr<Policy> FromProto(int policy) {
  switch (policy) {
    case fanout::v1::ALL:
      return Policy::kAll;
    case fanout::v1::ALL_SETTLED:
      return Policy::kAllSettled;
    case fanout::v1::FIRST_SUCCESS:
      return Policy::kFirstSuccess;
    case fanout::v1::FALLBACK:
      return Policy::kFallback;
    case fanout::v1::HEDGED:
      return Policy::kHedged;
    case fanout::v1::LEAST_LOADED:
      return Policy::kLeastLoaded;
    case fanout::v1::ROUND_ROBIN:
      return Policy::kRoundRobin;
    case fanout::v1::ADAPTIVE:
      return Policy::kAdaptive;
    default:
      return absl::InvalidArgumentError(absl::StrCat("policy: unknown value ", policy));
  }
}

namespace router_internal {

struct RouteState {
  struct Backend {
    std::string name;
    std::string address;
    std::shared_ptr<Downstream> downstream;
    std::unique_ptr<BackendStats> stats;
  };

  RouteConfig config;
  Executor* executor = nullptr;
  std::vector<Backend> backends;
  std::unique_ptr<AdaptiveController> adaptive;
  std::atomic<uint64_t> round_robin{0};

  absl::Mutex rng_mu;
  std::mt19937_64 rng ABSL_GUARDED_BY(rng_mu);

  size_t Uniform(size_t n) {
    absl::MutexLock l(&rng_mu);
    return std::uniform_int_distribution<size_t>(0, n - 1)(rng);
  }
  double Unit() {
    absl::MutexLock l(&rng_mu);
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  }
};

}  // namespace router_internal

namespace {

using router_internal::RouteState;
using State = std::shared_ptr<RouteState>;

bool SingleTarget(Policy policy) {
  return policy == Policy::kLeastLoaded || policy == Policy::kRoundRobin ||
         policy == Policy::kAdaptive;
}

fanout::v1::Outcome ToProto(TaskOutcome outcome) {
  switch (outcome) {
    case TaskOutcome::kOk:
      return fanout::v1::OK;
    case TaskOutcome::kError:
      return fanout::v1::ERROR;
    case TaskOutcome::kTimeout:
      return fanout::v1::TIMEOUT;
    case TaskOutcome::kCancelled:
      return fanout::v1::CANCELLED;
    case TaskOutcome::kSkipped:
      return fanout::v1::SKIPPED;
  }
  return fanout::v1::OUTCOME_UNSPECIFIED;
}

// What one Route call runs: which backends, in which order, joined how.
struct Plan {
  Policy policy = Policy::kAll;
  JoinPolicy join = JoinPolicy::kAll;
  std::vector<int> order;
  // Why a backend not in `order` was left out ("" = not selected).
  std::vector<std::string> skipped;
  bool adaptive_race = false;
  bool adaptive_single = false;
};

struct RouteCall {
  State route;
  Plan plan;
  absl::Time start;
  Router::RouteDone done;
  std::unique_ptr<TaskGroup<std::string>> group;
};

Plan MakePlan(RouteState& route, Policy policy, int64_t cost) {
  const int n = static_cast<int>(route.backends.size());
  Plan plan;
  plan.policy = policy;
  plan.skipped.assign(n, "");
  std::vector<bool> admissible(n, true);
  std::vector<int> admitted;
  for (int i = 0; i < n; ++i) {
    admissible[i] = route.backends[i].stats->Admissible();
    if (admissible[i]) admitted.push_back(i);
  }
  if (admitted.empty()) {
    // Every backend is ejected: ejection would only turn errors into
    // certainties, so ignore it.
    for (int i = 0; i < n; ++i) admitted.push_back(i);
    admissible.assign(n, true);
  }
  for (int i = 0; i < n; ++i) {
    if (!admissible[i]) plan.skipped[i] = "ejected after consecutive failures";
  }
  auto single = [&plan](int backend) {
    plan.join = JoinPolicy::kFirstSuccess;
    plan.order = {backend};
  };
  switch (policy) {
    case Policy::kAll:
    case Policy::kAllSettled:
      plan.join = policy == Policy::kAll ? JoinPolicy::kAll : JoinPolicy::kAllSettled;
      for (int i = 0; i < n; ++i) plan.order.push_back(i);
      plan.skipped.assign(n, "");
      break;
    case Policy::kFirstSuccess:
      plan.join = JoinPolicy::kFirstSuccess;
      plan.order = admitted;
      break;
    case Policy::kFallback:
      plan.join = JoinPolicy::kFallback;
      plan.order = admitted;
      break;
    case Policy::kHedged:
      plan.join = JoinPolicy::kHedged;
      plan.order = admitted;
      break;
    case Policy::kLeastLoaded: {
      std::vector<LoadView> loads;
      loads.reserve(admitted.size());
      for (int i : admitted) {
        const BackendStats& stats = *route.backends[i].stats;
        loads.push_back({stats.in_flight_cost(), stats.in_flight(), stats.latency_ewma()});
      }
      single(
          admitted[PickLeastLoaded(loads, cost, [&route](size_t k) { return route.Uniform(k); })]);
      break;
    }
    case Policy::kRoundRobin: {
      const uint64_t start = route.round_robin.fetch_add(1, std::memory_order_relaxed);
      for (int k = 0; k < n; ++k) {
        const int i = static_cast<int>((start + k) % n);
        if (admissible[i]) {
          single(i);
          break;
        }
      }
      break;
    }
    case Policy::kAdaptive: {
      const AdaptiveController::Decision decision =
          route.adaptive->Next(route.Unit(), [&admissible](int i) { return bool(admissible[i]); });
      if (decision.race) {
        plan.join = JoinPolicy::kFirstSuccess;
        plan.order = admitted;
        plan.adaptive_race = true;
      } else {
        single(decision.backend);
        plan.adaptive_single = true;
      }
      break;
    }
  }
  return plan;
}

Task<std::string> BackendTask(State route, int index, std::shared_ptr<const std::string> payload,
                              int64_t cost) {
  return [route = std::move(route), index, payload = std::move(payload), cost](
             const TaskContext& ctx, TaskDone<std::string> done) mutable {
    RouteState::Backend& backend = route->backends[index];
    Clock* clock = route->executor->clock();
    backend.stats->OnStart(cost);
    const absl::Time start = clock->Now();
    DownstreamCall call{route->config.method, std::move(payload), cost, ctx.deadline, ctx.token};
    backend.downstream->Call(
        call, [route, index, cost, start, clock, deadline = ctx.deadline,
               done = std::move(done)](absl::StatusOr<std::string> result) mutable {
          const absl::Time now = clock->Now();
          absl::Status status = result.status();
          // Cut off by the deadline through the token: a timeout for the stats.
          if (status.code() == absl::StatusCode::kCancelled && now >= deadline) {
            status = absl::DeadlineExceededError("deadline exceeded");
          }
          route->backends[index].stats->OnFinish(cost, status, now - start);
          std::move(done)(std::move(result));
        });
  };
}

absl::Duration HedgeDelay(const RouteState& route, int backend) {
  const RouteConfig& config = route.config;
  if (config.hedge_after > absl::ZeroDuration()) return config.hedge_after;
  const std::optional<absl::Duration> p95 = route.backends[backend].stats->Percentile(0.95);
  return std::max(p95.value_or(config.hedge_after_cold), config.hedge_after_floor);
}

}  // namespace

Router::~Router() = default;

absl::StatusOr<std::unique_ptr<Router>> Router::Create(std::vector<RouteConfig> routes,
                                                       Executor* executor, RouterOptions options) {
  if (executor == nullptr) return absl::InvalidArgumentError("router: no executor");
  DownstreamFactory factory = std::move(options.downstream_factory);
  if (!factory) {
    factory = [](const BackendConfig& backend) { return NewGrpcDownstream(backend.address); };
  }
  uint64_t seed = options.seed;
  if (seed == 0) seed = (uint64_t{std::random_device()()} << 32) | std::random_device()();

  std::unique_ptr<Router> router(new Router(executor));
  absl::flat_hash_map<std::string, std::shared_ptr<Downstream>> by_address;
  for (size_t r = 0; r < routes.size(); ++r) {
    RouteConfig& config = routes[r];
    RETURN_IF_ERROR(ValidateRouteConfig(config));
    if (router->routes_.contains(config.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("routes: duplicate route '", config.name, "'"));
    }
    auto state = std::make_shared<RouteState>();
    state->executor = executor;
    for (const BackendConfig& backend : config.backends) {
      std::shared_ptr<Downstream>& downstream = by_address[backend.address];
      if (downstream == nullptr) {
        absl::StatusOr<std::shared_ptr<Downstream>> made = factory(backend);
        if (!made.ok()) {
          return absl::Status(made.status().code(),
                              absl::StrCat("route '", config.name, "' backend '", backend.address,
                                           "': ", made.status().message()));
        }
        downstream = *std::move(made);
      }
      state->backends.push_back(
          {backend.name.empty() ? backend.address : backend.name, backend.address, downstream,
           std::make_unique<BackendStats>(executor->clock(), config.ejection)});
    }
    state->adaptive = std::make_unique<AdaptiveController>(
        config.adaptive, static_cast<int>(config.backends.size()));
    {
      absl::MutexLock l(&state->rng_mu);
      state->rng.seed(seed + r * 0x9E3779B97F4A7C15ull);
    }
    state->config = std::move(config);
    router->route_names_.push_back(state->config.name);
    router->routes_.emplace(state->config.name, std::move(state));
  }
  return router;
}

void Router::Route(const fanout::v1::RouteRequest& request, CancellationToken parent,
                   absl::Time deadline, RouteDone done) {
  auto it = routes_.find(request.route());
  if (it == routes_.end()) {
    std::move(done)(absl::NotFoundError(absl::StrCat("route '", request.route(), "' not found")));
    return;
  }
  const State& route = it->second;
  const RouteConfig& config = route->config;
  Policy policy = config.policy;
  if (request.policy() != fanout::v1::POLICY_UNSPECIFIED) {
    absl::StatusOr<Policy> requested = FromProto(request.policy());
    if (!requested.ok()) {
      std::move(done)(requested.status());
      return;
    }
    policy = *requested;
  }
  if (request.timeout_ms() < 0 || request.cost() < 0) {
    std::move(done)(
        absl::InvalidArgumentError(request.cost() < 0 ? "cost: negative" : "timeout_ms: negative"));
    return;
  }
  const absl::Time now = executor_->clock()->Now();
  const absl::Duration timeout =
      request.timeout_ms() > 0 ? absl::Milliseconds(request.timeout_ms()) : config.timeout;
  const absl::Time call_deadline = std::min(deadline, now + timeout);
  const int64_t cost =
      request.cost() > 0 ? request.cost()
                         : std::max<int64_t>(1, static_cast<int64_t>(request.payload().size() / 4));

  auto call = std::make_shared<RouteCall>();
  call->route = route;
  call->plan = MakePlan(*route, policy, cost);
  call->start = now;
  call->done = std::move(done);

  TaskGroupOptions options;
  options.policy = call->plan.join;
  options.deadline = call_deadline;
  if (policy == Policy::kFallback || policy == Policy::kHedged) {
    options.task_timeout = config.attempt_timeout;
  }
  if (policy == Policy::kHedged) {
    // Waits on the backend started last: hedge after its p95 (or the fixed delay).
    options.hedge_delay_fn = [route, order = call->plan.order](int next) {
      return HedgeDelay(*route, order[next - 1]);
    };
  }
  call->group = std::make_unique<TaskGroup<std::string>>(
      TaskContext{std::move(parent), call_deadline, executor_}, std::move(options));
  auto payload = std::make_shared<const std::string>(request.payload());
  for (int index : call->plan.order) {
    call->group->Add(route->backends[index].name, BackendTask(route, index, payload, cost));
  }
  call->group->Start([call](GroupResult<std::string> result) mutable {
    RouteState& route = *call->route;
    const Plan& plan = call->plan;
    const int n = static_cast<int>(route.backends.size());
    fanout::v1::RouteResponse response;
    response.set_policy(router::ToProto(plan.policy));

    std::vector<int> position(n, -1);
    for (size_t k = 0; k < plan.order.size(); ++k) position[plan.order[k]] = static_cast<int>(k);
    for (int i = 0; i < n; ++i) {
      fanout::v1::Branch* branch = response.add_branches();
      branch->set_backend(route.backends[i].name);
      if (position[i] < 0) {
        branch->set_outcome(fanout::v1::SKIPPED);
        branch->set_error(plan.skipped[i]);
        continue;
      }
      TaskReport<std::string>& report = result.tasks[position[i]];
      branch->set_outcome(ToProto(report.outcome));
      branch->set_latency_us(absl::ToInt64Microseconds(report.latency));
      if (report.result.ok()) {
        branch->set_payload(*report.result);
      } else {
        branch->set_code(static_cast<int>(report.result.status().code()));
        branch->set_error(std::string(report.result.status().message()));
      }
    }

    const int winner = result.winner;
    if (winner >= 0) {
      const int backend = plan.order[winner];
      response.set_backend(route.backends[backend].name);
      response.set_payload(response.branches(backend).payload());
      for (int k = 0; k < winner; ++k) {
        const TaskOutcome outcome = result.tasks[k].outcome;
        if (outcome == TaskOutcome::kError || outcome == TaskOutcome::kTimeout) {
          response.set_fallback_used(true);
        }
      }
    }
    const absl::Time now = route.executor->clock()->Now();
    response.set_latency_us(absl::ToInt64Microseconds(now - call->start));

    // Learning: races (several candidates started, one answer wanted).
    int started = 0;
    for (const auto& report : result.tasks) started += report.outcome != TaskOutcome::kSkipped;
    const bool single_answer =
        plan.join != JoinPolicy::kAll && plan.join != JoinPolicy::kAllSettled;
    if (single_answer && started >= 2) {
      for (size_t k = 0; k < result.tasks.size(); ++k) {
        if (result.tasks[k].outcome == TaskOutcome::kSkipped) continue;
        route.backends[plan.order[k]].stats->OnRace(static_cast<int>(k) == winner);
      }
    }
    if (plan.adaptive_race) {
      const int backend = winner >= 0 ? plan.order[winner] : -1;
      route.adaptive->OnRace(backend, backend >= 0 ? route.backends[backend].stats->latency_ewma()
                                                   : absl::ZeroDuration());
    } else if (plan.adaptive_single) {
      const int backend = plan.order[0];
      route.adaptive->OnCommittedCall(backend, result.status.ok(),
                                      route.backends[backend].stats->latency_ewma());
    }

    RouteDone done = std::move(call->done);
    if (result.status.ok()) {
      std::move(done)(std::move(response));
      return;
    }
    absl::Status status = result.status;
    if (plan.order.size() == 1 && SingleTarget(plan.policy)) {
      // One backend was asked: its own error reads better than "all 1 failed".
      const absl::Status& only = result.tasks[0].result.status();
      if (!only.ok()) {
        status = absl::Status(
            only.code(), absl::StrCat(route.backends[plan.order[0]].name, ": ", only.message()));
      }
    }
    status.SetPayload(kRouteResponseTypeUrl, absl::Cord(response.SerializeAsString()));
    std::move(done)(std::move(status));
  });
}

std::vector<std::string> Router::RouteNames() const { return route_names_; }

absl::StatusOr<RouteReport> Router::Report(absl::string_view name) const {
  auto it = routes_.find(name);
  if (it == routes_.end()) return absl::NotFoundError(absl::StrCat("route '", name, "' not found"));
  const RouteState& route = *it->second;
  RouteReport report;
  report.name = route.config.name;
  report.policy = route.config.policy;
  report.adaptive_committed = route.adaptive->committed();
  for (const auto& backend : route.backends) {
    report.backends.push_back({backend.name, backend.address, backend.stats->Snapshot()});
  }
  return report;
}

}  // namespace fanout::router
