#include "router/router.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <random>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "common/task_group.h"
#include "router/balancer.h"
#include "router/bounded_text.h"

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
    // fanout_route_branches_total{route, backend, outcome}
    std::unique_ptr<CounterVec> branches;
  };

  RouteConfig config;
  Executor* executor = nullptr;
  Metrics* metrics = nullptr;
  // fanout_route_calls_total{route, policy, outcome}, by Policy.
  std::array<std::unique_ptr<CounterVec>, 8> calls;
  // Before `backends`: their stats point to it.
  std::unique_ptr<EjectionBudget> ejection_budget;
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

constexpr absl::string_view kEjectedReason = "ejected after consecutive failures";

bool SingleTarget(Policy policy) {
  return policy == Policy::kLeastLoaded || policy == Policy::kRoundRobin ||
         policy == Policy::kAdaptive;
}

bool StartsOneAtATime(Policy policy) {
  return policy == Policy::kFallback || policy == Policy::kHedged;
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
  std::vector<absl::string_view> skipped;
  // By backend index: the passes of the backends in `order` (a probe pass
  // holds its backend's probe slot until the call ends or never starts).
  std::vector<BackendPass> passes;
  bool adaptive_race = false;
  bool adaptive_single = false;
};

struct RouteCall {
  // Before `plan`: the passes point into it.
  State route;
  Plan plan;
  absl::Time start;
  // The caller's deadline or timeout_ms made the call's budget shorter
  // than the route's timeout.
  bool caller_limited = false;
  bool branch_payloads = false;
  Router::RouteDone done;
  std::unique_ptr<TaskGroup<std::string>> group;
};

Plan MakePlan(RouteState& route, Policy policy, int64_t cost) {
  const int n = static_cast<int>(route.backends.size());
  Plan plan;
  plan.policy = policy;
  plan.skipped.assign(n, "");
  plan.passes.resize(n);
  if (policy == Policy::kAll || policy == Policy::kAllSettled) {
    plan.join = policy == Policy::kAll ? JoinPolicy::kAll : JoinPolicy::kAllSettled;
    for (int i = 0; i < n; ++i) {
      plan.order.push_back(i);
      plan.passes[i] = route.backends[i].stats->Unchecked();
    }
    return plan;
  }
  // Selection time: a backend whose ejection is over gets its probe reserved
  // here, for this call only.
  std::vector<int> admitted;
  for (int i = 0; i < n; ++i) {
    plan.passes[i] = route.backends[i].stats->Admit();
    if (plan.passes[i].admitted()) admitted.push_back(i);
  }
  if (admitted.empty()) {
    // Every backend is ejected: ejection would only turn errors into
    // certainties, so ignore it.
    for (int i = 0; i < n; ++i) {
      plan.passes[i] = route.backends[i].stats->Unchecked();
      admitted.push_back(i);
    }
  } else {
    for (int i = 0; i < n; ++i) {
      if (!plan.passes[i].admitted()) plan.skipped[i] = kEjectedReason;
    }
  }
  auto single = [&plan](int backend) {
    plan.join = JoinPolicy::kFirstSuccess;
    plan.order = {backend};
  };
  switch (policy) {
    case Policy::kAll:
    case Policy::kAllSettled:
      break;  // handled above
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
      // Turns over the admitted backends only: an ejected backend's turn
      // must not fall to its successor.
      const uint64_t turn = route.round_robin.fetch_add(1, std::memory_order_relaxed);
      single(admitted[turn % admitted.size()]);
      break;
    }
    case Policy::kAdaptive: {
      const AdaptiveController::Decision decision =
          route.adaptive->Next(route.Unit(), [&plan](int i) { return plan.passes[i].admitted(); });
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
  // Passes not used by this call give their probe slot back at once.
  std::vector<bool> used(n, false);
  for (int i : plan.order) used[i] = true;
  for (int i = 0; i < n; ++i) {
    if (!used[i]) plan.passes[i] = BackendPass();
  }
  return plan;
}

// How much time the route itself grants one attempt, to tell a backend's
// slowness from a caller's hurry.
struct AttemptBudget {
  absl::Time call_start;
  // Started with the call (not a later fallback or hedge): its budget counts
  // from the call's start.
  bool first_wave = true;
  // min(route timeout, the route's attempt timeout).
  absl::Duration full = absl::InfiniteDuration();
};

// The end of one backend call. Member order matters: `route` outlives the
// guard (it points into `route`), and the guard ends before `done` reports
// to the group, also when a downstream drops this callback unrun.
struct AttemptEnd {
  State route;
  TaskDone<std::string> done;
  BackendCall call;
  Clock* clock;
  absl::Time start;
  absl::Time deadline;
  bool full_budget;

  void operator()(absl::StatusOr<std::string> result) && {
    const absl::Time now = clock->Now();
    absl::Status status = result.status();
    // Cut off by the deadline through the token: a timeout for the stats.
    if (status.code() == absl::StatusCode::kCancelled && now >= deadline) {
      status = absl::DeadlineExceededError("deadline exceeded");
    }
    Attribution attribution = Attribution::kBackend;
    if (status.code() == absl::StatusCode::kCancelled) {
      attribution = Attribution::kLocal;  // the caller, a lost race, a failed sibling
    } else if (status.code() == absl::StatusCode::kDeadlineExceeded && now >= deadline &&
               !full_budget) {
      attribution = Attribution::kLocal;  // a deadline shorter than the route's budget
    }
    std::move(call).Finish(status, now - start, attribution);
    std::move(done)(std::move(result));
  }
};

// One backend call of a Route, as a task of the call's group. `route` is
// declared first: it outlives the pass, which points into it.
struct Attempt {
  State route;
  int index;
  BackendPass pass;
  std::shared_ptr<const std::string> payload;
  int64_t cost;
  AttemptBudget budget;
  std::string traceparent;

  void operator()(const TaskContext& ctx, TaskDone<std::string> done) && {
    RouteState::Backend& backend = route->backends[index];
    Clock* clock = route->executor->clock();
    const absl::Time start = clock->Now();
    const absl::Time counted_from = budget.first_wave ? budget.call_start : start;
    const bool full_budget = ctx.deadline - counted_from >= budget.full;
    BackendCall call = std::move(pass).Start(cost);
    DownstreamCall request{route->config.method, std::move(payload), cost,
                           ctx.deadline,         ctx.token,          std::move(traceparent)};
    backend.downstream->Call(request, AttemptEnd{route, std::move(done), std::move(call), clock,
                                                 start, ctx.deadline, full_budget});
  }
};

absl::Duration HedgeDelay(const RouteState& route, int backend) {
  const RouteConfig& config = route.config;
  if (config.hedge_after > absl::ZeroDuration()) return config.hedge_after;
  const std::optional<absl::Duration> p95 = route.backends[backend].stats->Percentile(0.95);
  return std::max(p95.value_or(config.hedge_after_cold), config.hedge_after_floor);
}

// Every branch's error at most `cap` bytes.
void SetBranchErrors(fanout::v1::RouteResponse& response,
                     const std::vector<absl::string_view>& errors, size_t cap) {
  for (int i = 0; i < response.branches_size(); ++i) {
    response.mutable_branches(i)->set_error(BoundedText(errors[i], cap));
  }
}

// Fits a failed call's RouteResponse into kMaxRouteErrorDetailsBytes: cuts
// the branch errors shorter and shorter, then, for routes whose backend
// names alone do not fit, leaves the last branches out.
void BoundErrorDetails(fanout::v1::RouteResponse& response,
                       const std::vector<absl::string_view>& errors) {
  size_t cap = kMaxBranchErrorBytes;
  while (response.ByteSizeLong() > kMaxRouteErrorDetailsBytes && cap > 0) {
    cap = cap > 16 ? cap / 2 : 0;
    SetBranchErrors(response, errors, cap);
  }
  while (response.ByteSizeLong() > kMaxRouteErrorDetailsBytes && response.branches_size() > 0) {
    response.mutable_branches()->RemoveLast();
  }
}

// The status message of a failed call, at most kMaxRouteStatusMessageBytes.
// A long "every candidate failed" message is rebuilt with an equal share for
// each branch, so that one backend's long error cannot hide the others.
std::string FailureMessage(const RouteState& route, const Plan& plan,
                           const GroupResult<std::string>& result, absl::string_view message) {
  const bool single_answer = plan.join != JoinPolicy::kAll && plan.join != JoinPolicy::kAllSettled;
  if (message.size() <= kMaxRouteStatusMessageBytes || !single_answer || plan.order.size() < 2) {
    return BoundedText(message, kMaxRouteStatusMessageBytes);
  }
  std::string out = absl::StrCat("all ", plan.order.size(), " backends failed");
  const size_t room = (kMaxRouteStatusMessageBytes - out.size()) / plan.order.size();
  const size_t share = std::max<size_t>(32, room > 2 ? room - 2 : 0);  // less "; "
  for (size_t k = 0; k < plan.order.size(); ++k) {
    const absl::Status& status = result.tasks[k].result.status();
    absl::StrAppend(
        &out, "; ",
        BoundedText(absl::StrCat(route.backends[plan.order[k]].name, ": ",
                                 absl::StatusCodeToString(status.code()), ": ", status.message()),
                    share));
  }
  return BoundedText(out, kMaxRouteStatusMessageBytes);
}

// Outcome labels: of a call, and of a branch (by TaskOutcome, then skipped).
const std::vector<std::string>& CallOutcomes() {
  static const auto* const kNames =
      new std::vector<std::string>{"ok", "error", "timeout", "cancelled"};
  return *kNames;
}
const std::vector<std::string>& BranchOutcomes() {
  static const auto* const kNames =
      new std::vector<std::string>{"ok", "error", "timeout", "cancelled", "skipped"};
  return *kNames;
}
size_t BranchOutcomeIndex(TaskOutcome outcome) {
  switch (outcome) {
    case TaskOutcome::kOk:
      return 0;
    case TaskOutcome::kError:
      return 1;
    case TaskOutcome::kTimeout:
      return 2;
    case TaskOutcome::kCancelled:
      return 3;
    case TaskOutcome::kSkipped:
      return 4;
  }
  return 1;
}

// Counts a finished call and its branches (`position`: each backend's
// place in the plan, -1 when not called).
void CountCall(const RouteState& route, Policy policy, const absl::Status& status,
               const std::vector<int>& position, const GroupResult<std::string>& result) {
  size_t outcome = 1;  // error
  if (status.ok()) {
    outcome = 0;
  } else if (status.code() == absl::StatusCode::kDeadlineExceeded) {
    outcome = 2;
  } else if (status.code() == absl::StatusCode::kCancelled) {
    outcome = 3;
  }
  route.calls[static_cast<size_t>(policy)]->Increment(outcome);
  for (size_t i = 0; i < route.backends.size(); ++i) {
    route.backends[i].branches->Increment(
        position[i] < 0 ? 4 : BranchOutcomeIndex(result.tasks[position[i]].outcome));
  }
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

  Metrics* const metrics = options.metrics != nullptr ? options.metrics : DiscardMetrics();
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
    state->metrics = metrics;
    for (size_t p = 0; p < state->calls.size(); ++p) {
      state->calls[p] = std::make_unique<CounterVec>(
          metrics, "fanout_route_calls_total",
          "Route calls finished, by route, the policy they ran under and outcome",
          MetricLabels{{"route", config.name},
                       {"policy", std::string(PolicyName(static_cast<Policy>(p)))}},
          "outcome", CallOutcomes());
    }
    state->ejection_budget = std::make_unique<EjectionBudget>(
        static_cast<int>(config.backends.size()), config.ejection.max_ejection_percent);
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
      const std::string name = backend.name.empty() ? backend.address : backend.name;
      const MetricLabels labels = {{"route", config.name}, {"backend", name}};
      Counter* ejections = metrics->GetCounter(
          "fanout_route_backend_ejections_total",
          "Times a route's backend was ejected from selection (a renewal after a failed probe "
          "included)",
          labels);
      state->backends.push_back(
          {name, backend.address, downstream,
           std::make_unique<BackendStats>(executor->clock(), config.ejection,
                                          state->ejection_budget.get(), ejections),
           std::make_unique<CounterVec>(
               metrics, "fanout_route_branches_total",
               "Backend calls of Route calls (branches) by route, backend and outcome (skipped: "
               "not called)",
               labels, "outcome", BranchOutcomes())});
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
                   absl::Time deadline, RouteDone done, absl::string_view traceparent) {
  auto it = routes_.find(request.route());
  if (it == routes_.end()) {
    std::move(done)(absl::NotFoundError(absl::StrCat(
        "route '", BoundedText(request.route(), kMaxEchoedInputBytes), "' not found")));
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
  if (request.timeout_ms() < 0) {
    std::move(done)(absl::InvalidArgumentError("timeout_ms: negative"));
    return;
  }
  if (request.cost() < 0 || request.cost() > kMaxRouteCost) {
    std::move(done)(absl::InvalidArgumentError(
        absl::StrCat("cost: ", request.cost(), " is not within 0..", kMaxRouteCost)));
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
  call->caller_limited = call_deadline < now + config.timeout;
  call->branch_payloads = request.branch_payloads();
  call->done = std::move(done);

  TaskGroupOptions options;
  options.policy = call->plan.join;
  options.deadline = call_deadline;
  const size_t candidates = call->plan.order.size();
  // What the route alone grants one attempt; the call may grant less when
  // the caller's budget is shorter.
  absl::Duration route_attempt = absl::InfiniteDuration();
  if (StartsOneAtATime(policy)) {
    if (config.attempt_timeout != absl::InfiniteDuration()) {
      route_attempt = config.attempt_timeout;
      options.task_timeout = config.attempt_timeout;
    } else if (policy == Policy::kFallback && candidates > 1) {
      // An equal share of the budget for each backend, so that a hung one
      // cannot keep the call from the next.
      const auto share = static_cast<int64_t>(candidates);
      route_attempt = config.timeout / share;
      options.task_timeout = (call_deadline - now) / share;
    }
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
  const AttemptBudget budget{now, true, std::min(config.timeout, route_attempt)};
  for (size_t k = 0; k < candidates; ++k) {
    const int index = call->plan.order[k];
    AttemptBudget attempt = budget;
    attempt.first_wave = k == 0 || !StartsOneAtATime(policy);
    call->group->Add(route->backends[index].name,
                     Attempt{route, index, std::move(call->plan.passes[index]), payload, cost,
                             attempt, std::string(traceparent)});
  }
  call->group->Start([call](GroupResult<std::string> result) mutable {
    RouteState& route = *call->route;
    const Plan& plan = call->plan;
    const int n = static_cast<int>(route.backends.size());
    const bool failed = !result.status.ok();
    const bool all_answers = plan.join == JoinPolicy::kAll || plan.join == JoinPolicy::kAllSettled;
    // ALL and ALL_SETTLED answer with the branches' payloads; the others with
    // the winner's, which the branches repeat only when asked. A failed
    // call's branches carry none: they travel in the status (a trailer).
    const bool branch_payloads = !failed && (all_answers || call->branch_payloads);
    fanout::v1::RouteResponse response;
    response.set_policy(router::ToProto(plan.policy));

    std::vector<int> position(n, -1);
    for (size_t k = 0; k < plan.order.size(); ++k) position[plan.order[k]] = static_cast<int>(k);
    std::vector<absl::string_view> errors(n);
    for (int i = 0; i < n; ++i) {
      fanout::v1::Branch* branch = response.add_branches();
      branch->set_backend(route.backends[i].name);
      if (position[i] < 0) {
        branch->set_outcome(fanout::v1::SKIPPED);
        errors[i] = plan.skipped[i];
        branch->set_error(std::string(errors[i]));
        continue;
      }
      TaskReport<std::string>& report = result.tasks[position[i]];
      branch->set_outcome(ToProto(report.outcome));
      branch->set_latency_us(absl::ToInt64Microseconds(report.latency));
      if (report.result.ok()) {
        if (branch_payloads) branch->set_payload(*report.result);
      } else {
        branch->set_code(static_cast<int>(report.result.status().code()));
        errors[i] = report.result.status().message();
        branch->set_error(BoundedText(errors[i], kMaxBranchErrorBytes));
      }
    }

    const int winner = result.winner;
    if (winner >= 0) {
      const int backend = plan.order[winner];
      response.set_backend(route.backends[backend].name);
      response.set_payload(std::move(*result.tasks[winner].result));
      for (int k = 0; k < winner; ++k) {
        const TaskOutcome outcome = result.tasks[k].outcome;
        if (outcome == TaskOutcome::kError || outcome == TaskOutcome::kTimeout) {
          response.set_fallback_used(true);
        }
      }
    }
    const absl::Time now = route.executor->clock()->Now();
    response.set_latency_us(absl::ToInt64Microseconds(now - call->start));

    // Learning: races (several candidates started, one answer wanted), and
    // the adaptive controller. Calls the caller ended teach nothing about
    // the backends.
    const absl::StatusCode code = result.status.code();
    const bool caller_ended =
        winner < 0 && (code == absl::StatusCode::kCancelled ||
                       (code == absl::StatusCode::kDeadlineExceeded && call->caller_limited));
    int started = 0;
    for (const auto& report : result.tasks) started += report.outcome != TaskOutcome::kSkipped;
    if (!all_answers && started >= 2 && !caller_ended) {
      for (size_t k = 0; k < result.tasks.size(); ++k) {
        if (result.tasks[k].outcome == TaskOutcome::kSkipped) continue;
        route.backends[plan.order[k]].stats->OnRace(static_cast<int>(k) == winner);
      }
    }
    CountCall(route, plan.policy, result.status, position, result);
    if (plan.adaptive_race && !caller_ended) {
      const int backend = winner >= 0 ? plan.order[winner] : -1;
      if (route.adaptive->OnRace(backend, backend >= 0
                                              ? route.backends[backend].stats->latency_ewma()
                                              : absl::ZeroDuration())) {
        const int committed = route.adaptive->committed();
        if (committed >= 0) {
          // Rare (a commitment): the series is looked up here.
          route.metrics
              ->GetCounter(
                  "fanout_route_adaptive_commits_total",
                  "Times an adaptive route committed to a backend",
                  {{"route", route.config.name}, {"backend", route.backends[committed].name}})
              ->Increment();
        }
      }
    } else if (plan.adaptive_single && !caller_ended) {
      const int backend = plan.order[0];
      route.adaptive->OnCommittedCall(backend, !failed,
                                      route.backends[backend].stats->latency_ewma());
    }

    RouteDone done = std::move(call->done);
    if (!failed) {
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
    BoundErrorDetails(response, errors);
    absl::Status bounded(status.code(), FailureMessage(route, plan, result, status.message()));
    bounded.SetPayload(kRouteResponseTypeUrl, absl::Cord(response.SerializeAsString()));
    std::move(done)(std::move(bounded));
  });
}

std::vector<std::string> Router::RouteNames() const { return route_names_; }

absl::StatusOr<RouteReport> Router::Report(absl::string_view name) const {
  auto it = routes_.find(name);
  if (it == routes_.end()) {
    return absl::NotFoundError(
        absl::StrCat("route '", BoundedText(name, kMaxEchoedInputBytes), "' not found"));
  }
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
