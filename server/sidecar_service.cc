#include "server/sidecar_service.h"

#include <malloc.h>

#include <atomic>
#include <memory>
#include <optional>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/cancellation.h"
#include "common/status_macros.h"
#include "common/trace_context.h"
#include "server/grpc_status.h"
#include "server/validation.h"

namespace fanout::server {
namespace {

using fanout::v1::BatchGetItem;
using fanout::v1::GetResponse;

fanout::v1::Tier ToProto(cache::TierId tier) {
  switch (tier) {
    case cache::TierId::kL1:
      return fanout::v1::TIER_L1;
    case cache::TierId::kL2:
      return fanout::v1::TIER_L2;
    case cache::TierId::kL3:
      return fanout::v1::TIER_L3;
    case cache::TierId::kOrigin:
      return fanout::v1::TIER_ORIGIN;
  }
  return fanout::v1::TIER_UNSPECIFIED;
}

template <typename Out>
void FillResult(const cache::ReadResult& r, Out* out) {
  out->set_value(r.value.ToString());
  out->set_served_by(ToProto(r.served_by));
  out->set_stale(r.stale);
  out->set_age_ms(absl::ToInt64Milliseconds(r.age));
  out->set_version(r.version);
}

absl::Status ValidateMaxStale(int64_t max_stale_ms) {
  if (max_stale_ms < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_stale_ms is ", max_stale_ms, "; it must be 0 (default) or more"));
  }
  return absl::OkStatus();
}

cache::ReadOptions ReadOptionsFor(int64_t max_stale_ms, bool bypass_cache, absl::Time deadline,
                                  const CancellationToken& cancel) {
  cache::ReadOptions o;
  o.max_stale = absl::Milliseconds(max_stale_ms);
  o.bypass_cache = bypass_cache;
  o.deadline = deadline;
  o.cancel = cancel;
  return o;
}

// The call's deadline: the caller's, bounded by limits.request_timeout.
absl::Time CallDeadline(const grpc::CallbackServerContext* context, const LimitsSection& limits) {
  absl::Time deadline = absl::Now() + limits.request_timeout;
  if (context->deadline() != std::chrono::system_clock::time_point::max()) {
    deadline = std::min(deadline, absl::FromChrono(context->deadline()));
  }
  return deadline;
}

// The caller's W3C traceparent when it sent a well-formed one, else empty.
std::string Traceparent(const grpc::CallbackServerContext* context) {
  const auto& metadata = context->client_metadata();
  auto it = metadata.find(kTraceparentKey);
  if (it == metadata.end()) return "";
  const absl::string_view value(it->second.data(), it->second.size());
  return IsValidTraceparent(value) ? std::string(value) : "";
}

// Finishes `reactor` with `status`, counted in `call`.
void Finish(grpc::ServerUnaryReactor* reactor, RpcCall& call, grpc::Status status) {
  call.End(status.error_code());
  reactor->Finish(std::move(status));
}

// A call whose reactor finishes at once: for RPCs not served by this build.
template <typename Response>
class FinishedWriter final : public grpc::ServerWriteReactor<Response> {
 public:
  explicit FinishedWriter(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

// One Route call: the caller's cancellation (OnCancel) cancels every branch
// through the token; the router's completion is the only place that
// finishes the call, so Finish runs exactly once.
// The call holds the router it started on until it is done (a reload may
// install another meanwhile).
class RouteReactor final : public grpc::ServerUnaryReactor {
 public:
  RouteReactor(std::shared_ptr<router::Router> router, const fanout::v1::RouteRequest* request,
               fanout::v1::RouteResponse* response, absl::Time deadline, Admission::Ticket ticket,
               RpcCall call, absl::string_view traceparent)
      : router_(std::move(router)), ticket_(std::move(ticket)), call_(std::move(call)) {
    call_.Async();
    router_->Route(
        *request, source_.token(), deadline,
        [this, response](absl::StatusOr<fanout::v1::RouteResponse> result) {
          ticket_.Release();
          if (result.ok()) *response = *std::move(result);
          grpc::Status status = ToGrpcStatus(result.status());
          call_.End(status.error_code());
          Finish(std::move(status));
        },
        traceparent);
  }
  void OnCancel() override { source_.Cancel(); }
  void OnDone() override { delete this; }

 private:
  const std::shared_ptr<router::Router> router_;
  CancellationSource source_;
  Admission::Ticket ticket_;
  RpcCall call_;
};

// Gives the heap memory of large responses back to the system. glibc keeps
// freed memory in its arenas (a large block freed raises its mmap threshold,
// so the next ones come from the heap), so one huge BatchGet would hold its
// peak RSS for good. malloc_trim walks every arena and takes their locks, so
// it runs on the executor, shortly after the response is freed, at most one
// pending at a time.
class MemoryReleaser {
 public:
  // Past this many response bytes freed, a trim is scheduled.
  static constexpr uint64_t kTrimAfterBytes = 32ull << 20;

  explicit MemoryReleaser(Executor* executor) : executor_(executor) {}

  void Freed(uint64_t bytes) {
#ifdef __GLIBC__
    if (bytes < kTrimAfterBytes || executor_ == nullptr) return;
    if (scheduled_.exchange(true, std::memory_order_acq_rel)) return;
    executor_->ScheduleAfter(absl::Milliseconds(50), [this] {
      scheduled_.store(false, std::memory_order_release);
      trims_.fetch_add(1, std::memory_order_relaxed);
      malloc_trim(0);
    });
#else
    (void)bytes;
#endif
  }
  uint64_t trims() const { return trims_.load(std::memory_order_relaxed); }

 private:
  Executor* const executor_;
  std::atomic<bool> scheduled_{false};
  std::atomic<uint64_t> trims_{0};
};

namespace {

// One Get call that L1 could not answer. The caller's cancellation
// (OnCancel) answers the read at once (releasing its admission slot) and
// detaches it from its fill; the read's completion is the only place that
// finishes the call.
class GetReactor final : public grpc::ServerUnaryReactor {
 public:
  GetReactor(GetResponse* response, Admission::Ticket ticket, RpcCall call, AnswerCounters* answers)
      : response_(response), ticket_(std::move(ticket)), call_(std::move(call)), answers_(answers) {
    call_.Async();
  }

  // May finish inline.
  void Start(cache::ReadPath* read_path, cache::ReadPath::PendingRead read, absl::Time deadline) {
    read_path->ReadBelowL1(std::move(read), deadline, source_.token(),
                           [this](absl::StatusOr<cache::ReadResult> result) {
                             ticket_.Release();
                             if (result.ok()) {
                               FillResult(*result, response_);
                               answers_->Count(result->served_by, result->stale);
                             }
                             grpc::Status status = ToGrpcStatus(result.status());
                             call_.End(status.error_code());
                             Finish(std::move(status));
                           });
  }
  void OnCancel() override { source_.Cancel(); }
  void OnDone() override { delete this; }

 private:
  GetResponse* const response_;
  Admission::Ticket ticket_;
  RpcCall call_;
  AnswerCounters* const answers_;
  CancellationSource source_;
};

// The state of one BatchGet call, shared by its reads: each distinct key is
// read once; the results are held (sharing the cached values) until the last
// arrives, and only then copied into the response, once per position that
// asked for the key. The value bytes the response would carry are counted
// as results arrive: past limits.max_batch_bytes the call fails at once and
// its other reads are cancelled. Exactly one thread finishes the call; after
// that nothing touches the request, the response or the reactor.
class BatchGetJoin {
 public:
  BatchGetJoin(grpc::ServerUnaryReactor* reactor, const fanout::v1::BatchGetRequest* request,
               fanout::v1::BatchGetResponse* response, uint64_t max_bytes, RpcCall call,
               AnswerCounters* answers)
      : reactor_(reactor),
        request_(request),
        response_(response),
        max_bytes_(max_bytes),
        call_(std::move(call)),
        answers_(answers) {}

  // Plans the reads: `errors` holds each position's key check.
  // Returns the number of distinct keys to read.
  size_t Plan(std::vector<absl::Status> errors) {
    errors_ = std::move(errors);
    slot_of_.assign(errors_.size(), -1);
    absl::flat_hash_map<absl::string_view, int> seen;
    for (size_t i = 0; i < errors_.size(); ++i) {
      if (!errors_[i].ok()) continue;
      auto [it, inserted] = seen.try_emplace(request_->keys(static_cast<int>(i)),
                                             static_cast<int>(first_position_.size()));
      if (inserted) {
        first_position_.push_back(static_cast<int>(i));
        copies_.push_back(0);
      }
      slot_of_[i] = it->second;
      ++copies_[it->second];
    }
    results_.resize(first_position_.size());
    pending_.store(static_cast<int>(first_position_.size()) + 1, std::memory_order_relaxed);
    return first_position_.size();
  }

  void set_ticket(Admission::Ticket ticket) { ticket_ = std::move(ticket); }
  // Counts the call: in flight until it finishes (Async), or finished
  // before any read started (End).
  void Async() { call_.Async(); }
  void End(grpc::StatusCode code) { call_.End(code); }
  CancellationSource& cancel() { return cancel_; }
  size_t distinct() const { return first_position_.size(); }
  const std::string& key(size_t slot) const { return request_->keys(first_position_[slot]); }
  bool finished() const { return finished_.load(std::memory_order_acquire); }
  // Value bytes the response carries (set before the call finishes).
  uint64_t response_bytes() const { return response_bytes_; }

  // The result of distinct key `slot`; any thread, once per slot.
  void Arrive(size_t slot, absl::StatusOr<cache::ReadResult> result) {
    if (result.ok() && !finished()) {
      const uint64_t bytes = result->value.size() * static_cast<uint64_t>(copies_[slot]);
      const uint64_t total = bytes_.fetch_add(bytes, std::memory_order_acq_rel) + bytes;
      if (total > max_bytes_) Fail(slot, bytes);
    }
    results_[slot] = std::move(result);
    Release();
  }
  // Every read has been started.
  void Started() { Release(); }

 private:
  void Release() {
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    if (finished_.exchange(true, std::memory_order_acq_rel)) return;
    for (size_t i = 0; i < errors_.size(); ++i) {
      fanout::v1::BatchGetItem* item = response_->add_items();
      item->set_key(request_->keys(static_cast<int>(i)));
      const absl::Status* error = &errors_[i];
      if (error->ok()) {
        const absl::StatusOr<cache::ReadResult>& r = *results_[slot_of_[i]];
        if (r.ok()) {
          FillResult(*r, item);
          continue;
        }
        error = &r.status();
      }
      item->set_code(static_cast<int32_t>(error->code()));
      item->set_error(std::string(error->message()));
    }
    response_bytes_ = bytes_.load(std::memory_order_acquire);
    ticket_.Release();
    answers_->CountBatch(*response_);
    Finish(reactor_, call_, grpc::Status::OK);
  }

  void Fail(size_t slot, uint64_t bytes) {
    if (finished_.exchange(true, std::memory_order_acq_rel)) return;
    const int position = first_position_[slot];
    const absl::Status error = absl::ResourceExhaustedError(
        absl::StrCat("the response would carry more than limits.max_batch_bytes (", max_bytes_,
                     " bytes) of values: at keys[", position, "] \"", request_->keys(position),
                     "\" (", bytes / copies_[slot], " bytes",
                     copies_[slot] > 1 ? absl::StrCat(" x ", copies_[slot], " copies") : "",
                     "); ask for fewer keys"));
    cancel_.Cancel();
    ticket_.Release();
    Finish(reactor_, call_, ToGrpcStatus(error));
  }

  grpc::ServerUnaryReactor* const reactor_;
  const fanout::v1::BatchGetRequest* const request_;
  fanout::v1::BatchGetResponse* const response_;
  const uint64_t max_bytes_;
  RpcCall call_;
  AnswerCounters* const answers_;
  Admission::Ticket ticket_;
  CancellationSource cancel_;
  std::vector<absl::Status> errors_;  // per position
  std::vector<int> slot_of_;          // per position: its distinct key, -1 if invalid
  std::vector<int> first_position_;   // per distinct key
  std::vector<int> copies_;           // per distinct key: positions asking for it
  // Per distinct key, written once by its read before it releases pending_.
  std::vector<std::optional<absl::StatusOr<cache::ReadResult>>> results_;
  // Reads not yet arrived, plus one until every read has started.
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<bool> finished_{false};
  uint64_t response_bytes_ = 0;
};

class BatchGetReactor final : public grpc::ServerUnaryReactor {
 public:
  BatchGetReactor(const fanout::v1::BatchGetRequest* request,
                  fanout::v1::BatchGetResponse* response, uint64_t max_bytes,
                  MemoryReleaser* releaser, RpcCall call, AnswerCounters* answers)
      : join_(std::make_shared<BatchGetJoin>(this, request, response, max_bytes, std::move(call),
                                             answers)),
        releaser_(releaser) {}

  const std::shared_ptr<BatchGetJoin>& join() { return join_; }
  void OnCancel() override { join_->cancel().Cancel(); }
  void OnDone() override {
    // gRPC frees the response right after this returns.
    releaser_->Freed(join_->response_bytes());
    delete this;
  }

 private:
  const std::shared_ptr<BatchGetJoin> join_;
  MemoryReleaser* const releaser_;
};

}  // namespace

SidecarService::SidecarService(const Config& config, cache::ReadPath* read_path,
                               RouterSlot* routers, Admission* admission, Executor* executor,
                               Metrics* metrics, cache::Invalidator* invalidator,
                               WatchService* watch)
    : config_(config),
      limits_(config.limits),
      read_path_(read_path),
      routers_(routers),
      admission_(admission),
      releaser_(std::make_unique<MemoryReleaser>(executor)),
      metrics_(std::make_unique<SidecarMetrics>(metrics != nullptr ? metrics : DiscardMetrics())),
      invalidator_(invalidator),
      watch_(watch) {}

SidecarService::~SidecarService() = default;

absl::Status SidecarService::AdmitRead(absl::Status status, const LimitsSection& limits,
                                       absl::string_view ns, int64_t max_stale_ms, int64_t weight,
                                       Admission::Ticket* ticket) const {
  if (status.ok()) status = ValidateNamespace(ns, limits);
  if (status.ok()) status = ValidateMaxStale(max_stale_ms);
  if (status.ok()) status = admission_->Enter(ticket, weight);
  return status;
}

grpc::ServerUnaryReactor* SidecarService::Get(grpc::CallbackServerContext* context,
                                              const fanout::v1::GetRequest* request,
                                              GetResponse* response) {
  RpcCall call(&metrics_->get);
  const LimitsSection limits = limits_.Load();
  Admission::Ticket ticket;
  const absl::Status valid =
      AdmitRead(ValidateKey("key", request->key(), limits), limits, request->namespace_(),
                request->max_stale_ms(), /*weight=*/1, &ticket);
  if (!valid.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    Finish(reactor, call, ToGrpcStatus(valid));
    return reactor;
  }
  // An L1 hit (the hot path) answers here, on the default reactor; only a
  // read that must wait gets a reactor of its own, for the caller's
  // cancellation, and the call's deadline.
  std::variant<cache::ReadResult, cache::ReadPath::PendingRead> first =
      read_path_->ReadL1(request->namespace_(), request->key(),
                         ReadOptionsFor(request->max_stale_ms(), request->bypass_cache(),
                                        absl::InfiniteFuture(), CancellationToken()));
  if (const cache::ReadResult* hit = std::get_if<cache::ReadResult>(&first)) {
    ticket.Release();
    FillResult(*hit, response);
    metrics_->answers.Count(hit->served_by, hit->stale);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    Finish(reactor, call, grpc::Status::OK);
    return reactor;
  }
  auto* reactor = new GetReactor(response, std::move(ticket), std::move(call), &metrics_->answers);
  cache::ReadPath::PendingRead read = std::get<cache::ReadPath::PendingRead>(std::move(first));
  read.set_traceparent(Traceparent(context));
  reactor->Start(read_path_, std::move(read), CallDeadline(context, limits));
  return reactor;
}

grpc::ServerUnaryReactor* SidecarService::BatchGet(grpc::CallbackServerContext* context,
                                                   const fanout::v1::BatchGetRequest* request,
                                                   fanout::v1::BatchGetResponse* response) {
  RpcCall call(&metrics_->batch_get);
  const LimitsSection limits = limits_.Load();
  absl::Status valid = ValidateBatchSize("keys", request->keys_size(), limits);
  std::vector<absl::Status> key_errors;
  if (valid.ok()) {
    key_errors.reserve(request->keys_size());
    for (int i = 0; i < request->keys_size(); ++i) {
      key_errors.push_back(ValidateKey(absl::StrCat("keys[", i, "]"), request->keys(i), limits));
    }
  }
  auto* reactor = new BatchGetReactor(request, response, limits.max_batch_bytes, releaser_.get(),
                                      std::move(call), &metrics_->answers);
  const std::shared_ptr<BatchGetJoin> join = reactor->join();
  // Admission counts the work: one slot per distinct key read.
  const size_t distinct = valid.ok() ? join->Plan(std::move(key_errors)) : 0;
  Admission::Ticket ticket;
  valid = AdmitRead(std::move(valid), limits, request->namespace_(), request->max_stale_ms(),
                    static_cast<int64_t>(distinct), &ticket);
  if (!valid.ok()) {
    grpc::Status status = ToGrpcStatus(valid);
    join->End(status.error_code());
    reactor->Finish(std::move(status));
    return reactor;
  }
  join->set_ticket(std::move(ticket));
  join->Async();
  cache::ReadOptions options =
      ReadOptionsFor(request->max_stale_ms(), /*bypass_cache=*/false, CallDeadline(context, limits),
                     join->cancel().token());
  options.traceparent = Traceparent(context);
  // L1 answers what it holds here; the rest go below L1 together, so that
  // L2 is asked for all of them in one round trip.
  std::vector<cache::ReadPath::BatchRead> below;
  for (size_t slot = 0; slot < distinct; ++slot) {
    if (join->finished()) {
      // Failed already (the response grew too large): read no more.
      join->Arrive(slot, absl::CancelledError("the batch failed"));
      continue;
    }
    std::variant<cache::ReadResult, cache::ReadPath::PendingRead> first =
        read_path_->ReadL1(request->namespace_(), join->key(slot), options);
    if (cache::ReadResult* hit = std::get_if<cache::ReadResult>(&first)) {
      join->Arrive(slot, std::move(*hit));
      continue;
    }
    cache::ReadPath::PendingRead pending = std::get<cache::ReadPath::PendingRead>(std::move(first));
    pending.set_traceparent(options.traceparent);
    below.push_back({std::move(pending), [join, slot](absl::StatusOr<cache::ReadResult> result) {
                       join->Arrive(slot, std::move(result));
                     }});
  }
  // A batch that failed meanwhile cancelled its token: these answer Cancelled.
  if (!below.empty()) {
    read_path_->ReadManyBelowL1(std::move(below), options.deadline, options.cancel);
  }
  join->Started();
  return reactor;
}

grpc::ServerUnaryReactor* SidecarService::Invalidate(grpc::CallbackServerContext* context,
                                                     const fanout::v1::InvalidateRequest* request,
                                                     fanout::v1::InvalidateResponse* response) {
  RpcCall call(&metrics_->invalidate);
  const LimitsSection limits = limits_.Load();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Admission::Ticket ticket;
  absl::Status valid = ValidateBatchSize("keys", request->keys_size(), limits,
                                         /*allow_empty=*/true);
  if (valid.ok()) valid = ValidateNamespace(request->namespace_(), limits);
  if (valid.ok()) valid = ValidatePrefix(request->prefix(), limits);
  for (int i = 0; valid.ok() && i < request->keys_size(); ++i) {
    valid = ValidateKey(absl::StrCat("keys[", i, "]"), request->keys(i), limits);
  }
  if (valid.ok() && request->keys_size() == 0 && request->prefix().empty()) {
    valid = absl::InvalidArgumentError("give keys or a prefix to invalidate");
  }
  if (valid.ok()) valid = admission_->Enter(&ticket);
  if (!valid.ok()) {
    Finish(reactor, call, ToGrpcStatus(valid));
    return reactor;
  }
  std::vector<std::string> keys(request->keys().begin(), request->keys().end());
  call.Async();
  if (invalidator_ != nullptr) {
    cache::Invalidation inv;
    inv.ns = request->namespace_();
    inv.keys = std::move(keys);
    inv.prefix = request->prefix();
    inv.purge_survival = request->purge_survival();
    invalidator_->Invalidate(
        std::move(inv), [reactor, response, ticket = std::move(ticket), call = std::move(call)](
                            absl::StatusOr<cache::Invalidator::Result> result) mutable {
          ticket.Release();
          if (result.ok()) {
            response->set_evicted(static_cast<int64_t>(result->evicted));
            response->set_broadcast(result->broadcast);
          }
          Finish(reactor, call, ToGrpcStatus(result.status()));
        });
    return reactor;
  }
  read_path_->Invalidate(request->namespace_(), keys, request->prefix(), request->purge_survival(),
                         [reactor, response, ticket = std::move(ticket),
                          call = std::move(call)](absl::StatusOr<uint64_t> evicted) mutable {
                           ticket.Release();
                           if (evicted.ok()) {
                             response->set_evicted(static_cast<int64_t>(*evicted));
                             // No other pods are reachable without a shared tier.
                             response->set_broadcast(false);
                           }
                           Finish(reactor, call, ToGrpcStatus(evicted.status()));
                         });
  return reactor;
}

grpc::ServerUnaryReactor* SidecarService::Route(grpc::CallbackServerContext* context,
                                                const fanout::v1::RouteRequest* request,
                                                fanout::v1::RouteResponse* response) {
  RpcCall call(&metrics_->route);
  Admission::Ticket ticket;
  absl::Status valid;
  if (request->route().empty()) valid = absl::InvalidArgumentError("route is empty");
  if (valid.ok() && (request->cost() < 0 || request->cost() > router::kMaxRouteCost)) {
    valid = absl::InvalidArgumentError(absl::StrCat(
        "cost is ", request->cost(), "; it must be 0 (estimate) to ", router::kMaxRouteCost));
  }
  if (valid.ok() && request->timeout_ms() < 0) {
    valid = absl::InvalidArgumentError(
        absl::StrCat("timeout_ms is ", request->timeout_ms(), "; it must be 0 (default) or more"));
  }
  if (valid.ok()) valid = admission_->Enter(&ticket);
  if (!valid.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    Finish(reactor, call, ToGrpcStatus(valid));
    return reactor;
  }
  // The caller's deadline, bounded by limits.request_timeout.
  absl::Time deadline = absl::Now() + limits_.Load().request_timeout;
  if (context->deadline() != std::chrono::system_clock::time_point::max()) {
    deadline = std::min(deadline, absl::FromChrono(context->deadline()));
  }
  return new RouteReactor(routers_->Get(), request, response, deadline, std::move(ticket),
                          std::move(call), Traceparent(context));
}

grpc::ServerWriteReactor<fanout::v1::WatchEvent>* SidecarService::Watch(
    grpc::CallbackServerContext* context, const fanout::v1::WatchRequest* request) {
  if (watch_ != nullptr) return watch_->Open(context, request);
  RpcCall(&metrics_->watch).End(grpc::StatusCode::UNIMPLEMENTED);
  return new FinishedWriter<fanout::v1::WatchEvent>(
      grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "Watch is not served by this server"));
}

}  // namespace fanout::server
