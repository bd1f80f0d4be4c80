#include "cache/origins/grpc_origin.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/cancellation.h"
#include "common/task_group.h"
#include "common/trace_context.h"
#include "fanout/v1/sidecar.pb.h"

namespace fanout::cache {
namespace {

constexpr char kFetchMethod[] = "/fanout.v1.Origin/Fetch";

// What gRPC (1.51) says when an answer is over the channel's receive limit.
constexpr absl::string_view kOverReceiveLimit = "Received message larger than max";

// Room for the answer's other fields around a value of the limit.
constexpr uint64_t kAnswerOverhead = 4096;

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat("gRPC origin: ", s.error_message()));
}

std::string Describe(absl::string_view ns, absl::string_view key) {
  return ns.empty() ? absl::StrCat("key \"", key, "\"")
                    : absl::StrCat("key \"", key, "\" of namespace \"", ns, "\"");
}

absl::Status OverLimit(const std::string& what, uint64_t limit, absl::string_view detail) {
  return absl::FailedPreconditionError(
      absl::StrCat(what, ": the gRPC origin's value is over the limit of ", limit,
                   " bytes (limits.max_value_bytes)", detail));
}

absl::StatusOr<OriginValue> Translate(const grpc::Status& status, grpc::ByteBuffer* answer,
                                      const std::string& what, uint64_t limit) {
  if (!status.ok()) {
    if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
      return absl::NotFoundError(absl::StrCat("no such key: ", what));
    }
    // Raised by this side's channel, not sent by the origin: the value is
    // too big, which retrying will not change.
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
        absl::StartsWith(status.error_message(), kOverReceiveLimit)) {
      return OverLimit(what, limit, absl::StrCat(": ", status.error_message()));
    }
    return FromGrpc(status);
  }
  if (!answer->Valid()) {
    return absl::InternalError(
        absl::StrCat("gRPC origin: answered OK with no FetchResponse for ", what));
  }
  fanout::v1::FetchResponse response;
  const grpc::Status decoded =
      grpc::SerializationTraits<fanout::v1::FetchResponse>::Deserialize(answer, &response);
  if (!decoded.ok()) {
    return absl::InternalError(absl::StrCat("gRPC origin: the answer for ", what,
                                            " is not a fanout.v1.FetchResponse (",
                                            decoded.error_message(), ")"));
  }
  if (!response.has_found()) {
    return absl::InternalError(absl::StrCat(
        "gRPC origin: the answer for ", what,
        " does not set `found` (an origin says found: true with the value, or found: false)"));
  }
  if (!response.found()) return absl::NotFoundError(absl::StrCat("no such key: ", what));
  if (response.value().size() > limit) {
    return OverLimit(what, limit, absl::StrCat(" (", response.value().size(), " bytes)"));
  }
  OriginValue v;
  v.value = std::move(*response.mutable_value());
  v.version = response.version();
  // A negative hint means nothing: the cache's default applies.
  v.ttl = absl::Milliseconds(std::max<int64_t>(0, response.ttl_ms()));
  return v;
}

// One call in flight; freed by its completion.
struct Call {
  grpc::ClientContext context;
  grpc::ByteBuffer request;
  grpc::ByteBuffer answer;
  std::string what;
  Origin::FetchDone done;
  // Unsubscribed before the call is freed.
  std::unique_ptr<CancellationCallback> on_cancel;
};

// Starts one Fetch call on `stub`; `done` runs once, on a gRPC thread (or
// inline), and never touches the stub's owner.
void StartCall(grpc::GenericStub& stub, const std::string& request, const std::string& what,
               absl::Time deadline, const CancellationToken& cancel, const std::string& traceparent,
               uint64_t limit, Origin::FetchDone done) {
  auto* call = new Call;
  grpc::Slice slice(request.data(), request.size());
  call->request = grpc::ByteBuffer(&slice, 1);
  call->what = what;
  call->context.set_deadline(absl::ToChronoTime(deadline));
  if (!traceparent.empty()) call->context.AddMetadata(kTraceparentKey, traceparent);
  call->done = std::move(done);
  // TryCancel before the call starts is kept by gRPC and applied at start.
  call->on_cancel =
      std::make_unique<CancellationCallback>(cancel, [ctx = &call->context] { ctx->TryCancel(); });
  stub.UnaryCall(&call->context, kFetchMethod, grpc::StubOptions(), &call->request, &call->answer,
                 [call, limit](grpc::Status status) {
                   std::unique_ptr<Call> owned(call);
                   owned->on_cancel.reset();
                   std::move(owned->done)(Translate(status, &owned->answer, owned->what, limit));
                 });
}

std::string Encode(absl::string_view ns, absl::string_view key) {
  fanout::v1::FetchRequest request;
  request.set_key(std::string(key));
  request.set_namespace_(std::string(ns));
  return request.SerializeAsString();
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, uint64_t max_value_bytes) {
  grpc::ChannelArguments args;
  // Bounds the memory one answer can take; a bigger one fails on this side
  // (RESOURCE_EXHAUSTED, translated above).
  args.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<uint64_t>(max_value_bytes + kAnswerOverhead, INT32_MAX)));
  // Only the waits between attempts: gRPC also takes the minimum backoff as
  // the least time one connection attempt is given, and an origin that
  // accepts but hangs must keep holding its callers to their deadlines, not
  // fail them early as unreachable.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kOriginReconnectBackoffMs / 4);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kOriginReconnectBackoffMs);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

class GrpcOrigin final : public Origin {
 public:
  GrpcOrigin(const GrpcOriginOptions& options, std::shared_ptr<grpc::Channel> channel)
      : options_(options), stub_(std::move(channel)) {}

  void Fetch(absl::string_view ns, absl::string_view key, const FetchContext& fetch,
             FetchDone done) override {
    StartCall(stub_, Encode(ns, key), Describe(ns, key), fetch.deadline, fetch.cancel,
              fetch.traceparent, options_.max_value_bytes, std::move(done));
  }

 private:
  const GrpcOriginOptions options_;
  grpc::GenericStub stub_;
};

// A replica's own answer about the key (a value or NotFound, ...), as
// opposed to the replica failing.
struct Answer {
  absl::StatusOr<OriginValue> result;
};

bool IsAnswer(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
      return true;
    default:
      return false;
  }
}

JoinPolicy ToJoin(ReplicaPolicy policy) {
  switch (policy) {
    case ReplicaPolicy::kFirstSuccess:
      return JoinPolicy::kFirstSuccess;
    case ReplicaPolicy::kHedged:
      return JoinPolicy::kHedged;
    case ReplicaPolicy::kFallback:
      break;
  }
  return JoinPolicy::kFallback;
}

// Several replicas of one origin; see the header for the semantics.
// Threading: Fetch starts a task group and returns; the group's tasks start
// calls on the thread that starts or ends the one before, its timers fire on
// the executor, and `done` runs on whichever thread ends the group. The
// gate counts the fetches in flight; it is shared with them so that the last
// one may release it while the destructor, woken, goes on.
class ReplicatedGrpcOrigin final : public Origin {
 public:
  struct Replica {
    std::string target;
    grpc::GenericStub stub;
  };

  ReplicatedGrpcOrigin(const GrpcOriginOptions& options,
                       std::vector<std::unique_ptr<Replica>> replicas)
      : options_(options), replicas_(std::move(replicas)) {}

  ~ReplicatedGrpcOrigin() override {
    {
      absl::MutexLock l(&gate_->mu);
      gate_->closed = true;
    }
    // Cancels every group in flight; runs their cancellation inline.
    shutdown_.Cancel();
    absl::MutexLock l(&gate_->mu);
    gate_->mu.Await(absl::Condition(
        +[](Gate* gate) ABSL_NO_THREAD_SAFETY_ANALYSIS { return gate->in_flight == 0; },
        gate_.get()));
  }

  void Fetch(absl::string_view ns, absl::string_view key, const FetchContext& fetch,
             FetchDone done) override {
    if (!Enter()) {
      std::move(done)(absl::CancelledError("gRPC origin: shutting down"));
      return;
    }
    Executor* executor = options_.executor;
    const absl::Time now = executor->clock()->Now();
    TaskGroupOptions group;
    group.policy = ToJoin(options_.policy);
    group.deadline = fetch.deadline;
    if (options_.policy == ReplicaPolicy::kFallback && fetch.deadline != absl::InfiniteFuture()) {
      // An equal share of the time left for each replica, so that a hung
      // one cannot keep the fetch from the next (as the router's fallback).
      group.task_timeout = std::max(absl::ZeroDuration(), fetch.deadline - now) /
                           static_cast<int64_t>(replicas_.size());
    }
    if (options_.policy == ReplicaPolicy::kHedged) group.hedge_delay = options_.hedge_after;

    auto state = std::make_shared<State>();
    state->done = std::move(done);
    state->what = Describe(ns, key);
    state->deadline = fetch.deadline;
    state->group = std::make_unique<TaskGroup<Answer>>(
        TaskContext{fetch.cancel, fetch.deadline, executor}, std::move(group));
    auto request = std::make_shared<const std::string>(Encode(ns, key));
    for (const auto& replica : replicas_) {
      state->group->Add(
          replica->target, [stub = &replica->stub, request, what = state->what,
                            traceparent = fetch.traceparent, limit = options_.max_value_bytes](
                               const TaskContext& ctx, TaskDone<Answer> task_done) mutable {
            StartCall(
                *stub, *request, what, ctx.deadline, ctx.token, traceparent, limit,
                [task_done = std::move(task_done)](absl::StatusOr<OriginValue> result) mutable {
                  if (IsAnswer(result.status())) {
                    std::move(task_done)(Answer{std::move(result)});
                  } else {
                    std::move(task_done)(result.status());
                  }
                });
          });
    }
    // Runs inline when the origin is already closing.
    state->on_shutdown = std::make_unique<CancellationCallback>(
        shutdown_.token(), [group = state->group.get()] { group->Cancel(); });
    state->group->Start([this, state, gate = gate_](GroupResult<Answer> result) mutable {
      absl::StatusOr<OriginValue> out = Outcome(*state, result);
      FetchDone user_done = std::move(state->done);
      state->on_shutdown.reset();
      state->group.reset();
      std::move(user_done)(std::move(out));
      // Last: the origin may be destroyed from here on.
      absl::MutexLock l(&gate->mu);
      --gate->in_flight;
    });
  }

 private:
  struct Gate {
    absl::Mutex mu;
    bool closed ABSL_GUARDED_BY(mu) = false;
    int in_flight ABSL_GUARDED_BY(mu) = 0;
  };

  bool Enter() {
    absl::MutexLock l(&gate_->mu);
    if (gate_->closed) return false;
    ++gate_->in_flight;
    return true;
  }

  struct State {
    FetchDone done;
    std::string what;
    absl::Time deadline;
    std::unique_ptr<TaskGroup<Answer>> group;
    std::unique_ptr<CancellationCallback> on_shutdown;
  };

  absl::StatusOr<OriginValue> Outcome(const State& state, GroupResult<Answer>& result) {
    if (result.winner >= 0) return std::move(result.tasks[result.winner].result->result);
    std::string failures;
    for (const TaskReport<Answer>& task : result.tasks) {
      absl::StrAppend(
          &failures, failures.empty() ? "" : "; ", task.name, ": ",
          task.outcome == TaskOutcome::kSkipped ? "not asked" : task.result.status().ToString());
    }
    if (result.status.code() == absl::StatusCode::kCancelled) {
      return absl::CancelledError(absl::StrCat("gRPC origin: the fetch of ", state.what,
                                               " was cancelled (", failures, ")"));
    }
    if (options_.executor->clock()->Now() >= state.deadline) {
      return absl::DeadlineExceededError(absl::StrCat("gRPC origin: no replica answered for ",
                                                      state.what, " before the deadline (",
                                                      failures, ")"));
    }
    return absl::UnavailableError(
        absl::StrCat("gRPC origin: no replica answered for ", state.what, " (", failures, ")"));
  }

  const GrpcOriginOptions options_;
  const std::vector<std::unique_ptr<Replica>> replicas_;
  CancellationSource shutdown_;
  const std::shared_ptr<Gate> gate_ = std::make_shared<Gate>();
};

}  // namespace

absl::StatusOr<ReplicaPolicy> ParseReplicaPolicy(absl::string_view text) {
  if (text == "fallback") return ReplicaPolicy::kFallback;
  if (text == "first_success") return ReplicaPolicy::kFirstSuccess;
  if (text == "hedged") return ReplicaPolicy::kHedged;
  return absl::InvalidArgumentError(
      absl::StrCat("\"", text, "\" is not one of fallback, first_success, hedged"));
}

absl::string_view ReplicaPolicyName(ReplicaPolicy policy) {
  switch (policy) {
    case ReplicaPolicy::kFirstSuccess:
      return "first_success";
    case ReplicaPolicy::kHedged:
      return "hedged";
    case ReplicaPolicy::kFallback:
      break;
  }
  return "fallback";
}

absl::StatusOr<std::unique_ptr<Origin>> NewGrpcOrigin(const GrpcOriginOptions& options) {
  if (options.targets.empty()) {
    return absl::InvalidArgumentError("origin.grpc.target is empty");
  }
  for (size_t i = 0; i < options.targets.size(); ++i) {
    if (options.targets[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("origin.grpc.target[", i, "] is empty"));
    }
  }
  if (options.targets.size() == 1) {
    return std::make_unique<GrpcOrigin>(options,
                                        MakeChannel(options.targets[0], options.max_value_bytes));
  }
  if (options.executor == nullptr) {
    return absl::InvalidArgumentError("gRPC origin: several targets need an executor");
  }
  if (options.policy == ReplicaPolicy::kHedged && options.hedge_after <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("origin.grpc.hedge_after: must be more than zero");
  }
  std::vector<std::unique_ptr<ReplicatedGrpcOrigin::Replica>> replicas;
  for (const std::string& target : options.targets) {
    replicas.push_back(
        std::make_unique<ReplicatedGrpcOrigin::Replica>(ReplicatedGrpcOrigin::Replica{
            target, grpc::GenericStub(MakeChannel(target, options.max_value_bytes))}));
  }
  return std::make_unique<ReplicatedGrpcOrigin>(options, std::move(replicas));
}

}  // namespace fanout::cache
