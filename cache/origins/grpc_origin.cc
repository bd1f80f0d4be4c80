#include "cache/origins/grpc_origin.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include <deque>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/cancellation.h"
#include "common/log.h"
#include "common/log_throttle.h"
#include "common/status_macros.h"
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

// ---- Watch -----------------------------------------------------------------

constexpr char kWatchMethod[] = "/fanout.v1.Origin/Watch";
constexpr size_t kMaxTokenBytes = 4096;

// One replica as the watch calls it. The method is registered on the
// channel once, as a generated stub does.
struct WatchTarget {
  WatchTarget(std::string target_in, std::shared_ptr<grpc::Channel> channel_in)
      : target(std::move(target_in)),
        channel(std::move(channel_in)),
        method(kWatchMethod, grpc::internal::RpcMethod::SERVER_STREAMING, channel) {}

  const std::string target;
  const std::shared_ptr<grpc::Channel> channel;
  const grpc::internal::RpcMethod method;
};
using WatchTargets = std::vector<std::shared_ptr<const WatchTarget>>;

absl::Status CheckText(absl::string_view field, absl::string_view value, uint64_t max,
                       absl::string_view limit) {
  if (value.size() > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is ", value.size(), " bytes, over the limit of ", max,
                     limit.empty() ? "" : absl::StrCat(" (", limit, ")")));
  }
  if (value.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(field, " contains a NUL byte"));
  }
  return absl::OkStatus();
}

absl::Status ValidateEvent(const fanout::v1::OriginChangeEvent& event,
                           const GrpcOriginOptions& options) {
  RETURN_IF_ERROR(CheckText("namespace", event.namespace_(), options.max_namespace_bytes,
                            "limits.max_namespace_bytes"));
  for (int i = 0; i < event.keys_size(); ++i) {
    const std::string field = absl::StrCat("keys[", i, "]");
    if (event.keys(i).empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
    RETURN_IF_ERROR(CheckText(field, event.keys(i), options.max_key_bytes, "limits.max_key_bytes"));
  }
  RETURN_IF_ERROR(
      CheckText("prefix", event.prefix(), options.max_key_bytes, "limits.max_key_bytes"));
  return CheckText("token", event.token(), kMaxTokenBytes, "");
}

class WatchCall;

// What one watch shares with its calls and timers, which hold it until
// they end. One call at a time: the next one starts from the end of the
// one before (at once, or from a timer on the executor), so the fields
// about "the call" describe the one in flight.
class WatchState final : public std::enable_shared_from_this<WatchState> {
 public:
  WatchState(WatchTargets targets, const GrpcOriginOptions& options, Origin::ChangeSink sink)
      : targets_(std::move(targets)),
        options_(options),
        executor_(options.executor),
        sink_(std::move(sink)),
        unimplemented_(targets_.size(), false),
        failed_(targets_.size(), false) {}

  // Starts the first call.
  void Begin() { StartCall(); }
  // Ends the watch: no call or timer starts from now on, the call in flight
  // is cancelled; returns once it has ended and no sink call runs.
  void Stop();

  // From the call in flight (its reactions, on gRPC threads).
  void OnAnswered();
  void OnEvent(grpc::ByteBuffer* buffer);
  // The call's OnDone: first Detach (it may not be cancelled any more),
  // then, once its context is gone, OnCallDone.
  void Detach();
  void OnCallDone(const grpc::Status& status);

  const WatchTarget& target(size_t i) const { return *targets_[i]; }

 private:
  void StartCall();
  void Answered(std::vector<std::string>* logs) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Delivers the queued changes, one sink call at a time, outside mu_.
  void Drain();
  void Warn(const std::string& text);
  absl::Duration Backoff(int rounds) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const WatchTargets targets_;
  const GrpcOriginOptions options_;
  Executor* const executor_;
  // Called only by the thread that set delivering_ (or by Stop, after).
  Origin::ChangeSink sink_;
  LogThrottle warnings_{5, absl::Seconds(10)};

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  WatchCall* call_ ABSL_GUARDED_BY(mu_) = nullptr;  // the call in flight, until its OnDone
  bool in_call_ ABSL_GUARDED_BY(mu_) = false;       // ... until its OnDone has finished
  TimerId timer_ ABSL_GUARDED_BY(mu_) = kNoTimer;   // the pending reconnect
  size_t replica_ ABSL_GUARDED_BY(mu_) = 0;         // asked by the call in flight / next
  std::vector<bool> unimplemented_ ABSL_GUARDED_BY(mu_);
  // The replicas that failed in this round (each one asked once, in
  // order), and the rounds that failed in a row (the pause's exponent).
  std::vector<bool> failed_ ABSL_GUARDED_BY(mu_);
  int failed_rounds_ ABSL_GUARDED_BY(mu_) = 0;
  // The call in flight: it answered (headers or an event), its valid
  // events that were not empty, when it started.
  bool answered_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t events_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time started_ ABSL_GUARDED_BY(mu_);
  bool announced_ ABSL_GUARDED_BY(mu_) = false;   // "watching" logged, not yet "lost"
  std::string token_ ABSL_GUARDED_BY(mu_);        // the last token the origin sent
  bool had_events_ ABSL_GUARDED_BY(mu_) = false;  // some stream delivered a non-empty event
  bool need_all_ ABSL_GUARDED_BY(mu_) = false;    // report `all` when the next call answers
  std::deque<OriginChange> queue_ ABSL_GUARDED_BY(mu_);
  bool delivering_ ABSL_GUARDED_BY(mu_) = false;
  absl::BitGen bitgen_ ABSL_GUARDED_BY(mu_);
};

// One Watch call. Messages are read as raw bytes and decoded by the state,
// so that an undecodable event is told apart from the end of the stream
// (the typed API reports both as a failed read). Deletes itself when done.
class WatchCall final : public grpc::ClientReadReactor<grpc::ByteBuffer> {
 public:
  WatchCall(std::shared_ptr<WatchState> state, size_t replica, const std::string& request)
      : state_(std::move(state)), replica_(replica) {
    grpc::Slice slice(request.data(), request.size());
    request_ = grpc::ByteBuffer(&slice, 1);
  }

  void Start() {
    const WatchTarget& t = state_->target(replica_);
    // What the generated stub's async()->Watch does, with raw messages.
    grpc::internal::ClientCallbackReaderFactory<grpc::ByteBuffer>::Create(
        t.channel.get(), t.method, &context_, &request_, this);
    StartRead(&event_);
    StartCall();
  }

  // Never runs a reaction on the calling thread; before Start, applied by
  // gRPC when the call is made.
  void Cancel() { context_.TryCancel(); }

  void OnReadInitialMetadataDone(bool ok) override {
    if (ok) state_->OnAnswered();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended: OnDone follows
    state_->OnEvent(&event_);
    event_.Clear();
    StartRead(&event_);
  }
  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<WatchState> state = std::move(state_);
    state->Detach();
    // The context goes before the watch may return from Stop.
    delete this;
    state->OnCallDone(status);
  }

 private:
  std::shared_ptr<WatchState> state_;
  const size_t replica_;
  grpc::ClientContext context_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer event_;
};

void WatchState::StartCall() {
  WatchCall* call = nullptr;
  {
    absl::MutexLock l(&mu_);
    timer_ = kNoTimer;
    if (stopping_) return;
    fanout::v1::OriginWatchRequest request;
    request.set_resume_after(token_);
    answered_ = false;
    events_ = 0;
    started_ = executor_->clock()->Now();
    call = new WatchCall(shared_from_this(), replica_, request.SerializeAsString());
    call_ = call;
    in_call_ = true;
  }
  // Stop may cancel it from here on; the cancel is kept until the start.
  call->Start();
}

void WatchState::Stop() {
  TimerId timer = kNoTimer;
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
    std::swap(timer, timer_);
    if (call_ != nullptr) call_->Cancel();
  }
  // A timer already running finds stopping_ and starts nothing.
  if (timer != kNoTimer) executor_->CancelTimer(timer);
  Origin::ChangeSink sink;
  {
    absl::MutexLock l(&mu_);
    mu_.Await(absl::Condition(
        +[](WatchState* s)
             ABSL_NO_THREAD_SAFETY_ANALYSIS { return !s->in_call_ && !s->delivering_; },
        this));
    queue_.clear();
    sink = std::move(sink_);
  }
}

void WatchState::Answered(std::vector<std::string>* logs) {
  if (answered_) return;
  answered_ = true;
  if (!announced_) {
    announced_ = true;
    logs->push_back(absl::StrCat("gRPC origin: watching the origin's changes at ",
                                 targets_[replica_]->target,
                                 token_.empty() ? "" : " (resuming after its last token)"));
  }
  if (need_all_) {
    // Changes made while no stream was open cannot be named.
    need_all_ = false;
    queue_.push_back(OriginChange{.ns = "", .keys = {}, .prefix = "", .all = true});
  }
}

void WatchState::OnAnswered() {
  std::vector<std::string> logs;
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return;
    Answered(&logs);
  }
  for (const std::string& line : logs) FANOUT_LOG(INFO) << line;
  Drain();
}

void WatchState::OnEvent(grpc::ByteBuffer* buffer) {
  fanout::v1::OriginChangeEvent event;
  const grpc::Status decoded =
      grpc::SerializationTraits<fanout::v1::OriginChangeEvent>::Deserialize(buffer, &event);
  size_t replica = 0;
  {
    absl::MutexLock l(&mu_);
    replica = replica_;
  }
  if (!decoded.ok()) {
    Warn(absl::StrCat(
        "gRPC origin: dropped a Watch event from ", targets_[replica]->target,
        ": not a fanout.v1.OriginChangeEvent",
        decoded.error_message().empty() ? "" : absl::StrCat(" (", decoded.error_message(), ")")));
    return;
  }
  if (absl::Status valid = ValidateEvent(event, options_); !valid.ok()) {
    Warn(absl::StrCat("gRPC origin: dropped a Watch event from ", targets_[replica]->target, ": ",
                      valid.message()));
    return;
  }
  std::vector<std::string> logs;
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return;
    Answered(&logs);
    // An event with nothing in it says nothing: a stream of only those has
    // not "lasted", nor did it deliver changes that a reconnect could miss
    // (an origin answering every method with anything sends such events).
    if (event.reset() || event.keys_size() > 0 || !event.prefix().empty() ||
        !event.token().empty()) {
      ++events_;
      had_events_ = true;
    }
    if (event.reset()) {
      // A new start: the origin's position from here, if it gave one.
      token_ = event.token();
      queue_.push_back(OriginChange{
          .ns = std::move(*event.mutable_namespace_()), .keys = {}, .prefix = "", .all = true});
    } else {
      if (!event.token().empty()) token_ = event.token();
      if (event.keys_size() > 0 || !event.prefix().empty()) {
        OriginChange change;
        change.ns = std::move(*event.mutable_namespace_());
        change.keys.assign(std::make_move_iterator(event.mutable_keys()->begin()),
                           std::make_move_iterator(event.mutable_keys()->end()));
        change.prefix = std::move(*event.mutable_prefix());
        queue_.push_back(std::move(change));
      }
    }
  }
  for (const std::string& line : logs) FANOUT_LOG(INFO) << line;
  Drain();
}

void WatchState::Drain() {
  {
    absl::MutexLock l(&mu_);
    if (delivering_) return;  // that thread delivers what was queued
    delivering_ = true;
  }
  for (;;) {
    OriginChange change;
    {
      absl::MutexLock l(&mu_);
      if (stopping_ || queue_.empty()) {
        queue_.clear();
        delivering_ = false;
        return;
      }
      change = std::move(queue_.front());
      queue_.pop_front();
    }
    sink_(std::move(change));
  }
}

void WatchState::Warn(const std::string& text) {
  int64_t suppressed = 0;
  if (!warnings_.Admit(&suppressed)) return;
  if (suppressed > 0) {
    FANOUT_LOG(WARNING) << text << " (" << suppressed << " earlier warnings not logged)";
  } else {
    FANOUT_LOG(WARNING) << text;
  }
}

absl::Duration WatchState::Backoff(int rounds) {
  absl::Duration ceiling = options_.watch_backoff;
  for (int i = 0; i < rounds && ceiling < options_.watch_max_backoff; ++i) ceiling *= 2;
  ceiling = std::min(ceiling, options_.watch_max_backoff);
  return ceiling * absl::Uniform(bitgen_, 0.5, 1.0);
}

void WatchState::Detach() {
  absl::MutexLock l(&mu_);
  call_ = nullptr;
}

void WatchState::OnCallDone(const grpc::Status& status) {
  std::string info;
  std::string warning;
  bool now = false;
  {
    absl::MutexLock l(&mu_);
    in_call_ = false;
    if (stopping_) return;
    const std::string& target = targets_[replica_]->target;
    std::string why = absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
    if (!status.error_message().empty()) absl::StrAppend(&why, ": ", status.error_message());
    const bool lasted =
        events_ > 0 || executor_->clock()->Now() - started_ >= options_.watch_max_backoff;
    if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
      unimplemented_[replica_] = true;
    } else if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
               absl::StartsWith(status.error_message(), kOverReceiveLimit)) {
      // An event too big for this side was lost; so is its place.
      need_all_ = true;
      token_.clear();
      warning = absl::StrCat("gRPC origin: a Watch event from ", target,
                             " is over the receive limit (limits.max_value_bytes + 4KiB); "
                             "dropping every cached value and watching again from now");
    }
    if (had_events_ && token_.empty()) need_all_ = true;
    const size_t live = std::count(unimplemented_.begin(), unimplemented_.end(), false);
    if (live == 0) {
      info =
          "gRPC origin: no replica implements fanout.v1.Origin/Watch (UNIMPLEMENTED): the "
          "origin's changes are not pushed; changed values are served until their ttl";
      stopping_ = true;  // for good: nothing is asked again
    } else {
      if (answered_ && announced_ && warning.empty()) {
        announced_ = false;
        warning = absl::StrCat("gRPC origin: the watch of ", target, " ended (", why,
                               "); watching again");
      }
      absl::Duration delay = absl::ZeroDuration();
      if (lasted && !unimplemented_[replica_]) {
        // Ask the same replica again, after the first pause.
        std::fill(failed_.begin(), failed_.end(), false);
        failed_rounds_ = 0;
        delay = Backoff(0);
      } else {
        // The next replica of this round, at once; when every one has
        // failed, a new round from the first, after a longer pause.
        failed_[replica_] = true;
        size_t next = replica_;
        do {
          next = (next + 1) % targets_.size();
        } while (next != replica_ && (unimplemented_[next] || failed_[next]));
        if (next != replica_ && !unimplemented_[next] && !failed_[next]) {
          replica_ = next;
        } else {
          std::fill(failed_.begin(), failed_.end(), false);
          ++failed_rounds_;
          replica_ =
              static_cast<size_t>(std::find(unimplemented_.begin(), unimplemented_.end(), false) -
                                  unimplemented_.begin());
          if (failed_rounds_ == 1 && warning.empty() &&
              status.error_code() != grpc::StatusCode::UNIMPLEMENTED) {
            warning = absl::StrCat("gRPC origin: cannot watch the origin's changes (last: ", target,
                                   ": ", why, "); trying again");
          }
          delay = Backoff(failed_rounds_ - 1);
        }
      }
      if (delay > absl::ZeroDuration()) {
        timer_ = executor_->ScheduleAfter(
            delay, [self = shared_from_this()]() mutable { self->StartCall(); });
      } else {
        now = true;
      }
    }
  }
  if (!info.empty()) FANOUT_LOG(INFO) << info;
  if (!warning.empty()) Warn(warning);
  if (now) StartCall();
}

class GrpcWatch final : public OriginWatch {
 public:
  explicit GrpcWatch(std::shared_ptr<WatchState> state) : state_(std::move(state)) {}
  ~GrpcWatch() override { state_->Stop(); }

 private:
  const std::shared_ptr<WatchState> state_;
};

absl::StatusOr<std::unique_ptr<OriginWatch>> StartWatch(const WatchTargets& targets,
                                                        const GrpcOriginOptions& options,
                                                        Origin::ChangeSink sink) {
  if (options.executor == nullptr) {
    return absl::FailedPreconditionError(
        "gRPC origin: watching the origin's changes needs an executor");
  }
  auto state = std::make_shared<WatchState>(targets, options, std::move(sink));
  state->Begin();
  return std::make_unique<GrpcWatch>(std::move(state));
}

class GrpcOrigin final : public Origin {
 public:
  GrpcOrigin(const GrpcOriginOptions& options, std::shared_ptr<grpc::Channel> channel)
      : options_(options),
        stub_(channel),
        watch_target_(std::make_shared<const WatchTarget>(options.targets[0], channel)) {}

  absl::StatusOr<std::unique_ptr<OriginWatch>> WatchChanges(ChangeSink sink) override {
    return StartWatch({watch_target_}, options_, std::move(sink));
  }

  void Fetch(absl::string_view ns, absl::string_view key, const FetchContext& fetch,
             FetchDone done) override {
    StartCall(stub_, Encode(ns, key), Describe(ns, key), fetch.deadline, fetch.cancel,
              fetch.traceparent, options_.max_value_bytes, std::move(done));
  }

 private:
  const GrpcOriginOptions options_;
  grpc::GenericStub stub_;
  const std::shared_ptr<const WatchTarget> watch_target_;
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
    std::shared_ptr<const WatchTarget> watch;
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

  absl::StatusOr<std::unique_ptr<OriginWatch>> WatchChanges(ChangeSink sink) override {
    WatchTargets targets;
    for (const auto& replica : replicas_) targets.push_back(replica->watch);
    return StartWatch(targets, options_, std::move(sink));
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
    std::shared_ptr<grpc::Channel> channel = MakeChannel(target, options.max_value_bytes);
    replicas.push_back(std::make_unique<ReplicatedGrpcOrigin::Replica>(
        ReplicatedGrpcOrigin::Replica{target, grpc::GenericStub(channel),
                                      std::make_shared<const WatchTarget>(target, channel)}));
  }
  return std::make_unique<ReplicatedGrpcOrigin>(options, std::move(replicas));
}

}  // namespace fanout::cache
