#include "server/sidecar_service.h"

#include <atomic>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/cancellation.h"
#include "common/status_macros.h"
#include "server/grpc_status.h"
#include "server/validation.h"

namespace fanout::server {
namespace {

using fanout::v1::BatchGetItem;
using fanout::v1::GetResponse;

fanout::v1::Tier ToProto(cache::TierId tier) {
  switch (tier) {
    case cache::TierId::kL1: return fanout::v1::TIER_L1;
    case cache::TierId::kL2: return fanout::v1::TIER_L2;
    case cache::TierId::kL3: return fanout::v1::TIER_L3;
    case cache::TierId::kOrigin: return fanout::v1::TIER_ORIGIN;
  }
  return fanout::v1::TIER_UNSPECIFIED;
}

template <typename Out>
void FillResult(cache::ReadResult& r, Out* out) {
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

cache::ReadOptions ReadOptionsFor(int64_t max_stale_ms, bool bypass_cache) {
  cache::ReadOptions o;
  o.max_stale = absl::Milliseconds(max_stale_ms);
  o.bypass_cache = bypass_cache;
  return o;
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
class RouteReactor final : public grpc::ServerUnaryReactor {
 public:
  RouteReactor(router::Router* router, const fanout::v1::RouteRequest* request,
               fanout::v1::RouteResponse* response, absl::Time deadline,
               Admission::Ticket ticket)
      : ticket_(std::move(ticket)) {
    router->Route(*request, source_.token(), deadline,
                  [this, response](absl::StatusOr<fanout::v1::RouteResponse> result) {
                    ticket_.Release();
                    if (result.ok()) *response = *std::move(result);
                    Finish(ToGrpcStatus(result.status()));
                  });
  }
  void OnCancel() override { source_.Cancel(); }
  void OnDone() override { delete this; }

 private:
  CancellationSource source_;
  Admission::Ticket ticket_;
};

SidecarService::SidecarService(const Config& config, cache::ReadPath* read_path,
                               router::Router* router, Admission* admission)
    : config_(config), read_path_(read_path), router_(router), admission_(admission) {}

absl::Status SidecarService::AdmitRead(absl::Status status, absl::string_view ns,
                                       int64_t max_stale_ms, Admission::Ticket* ticket) const {
  if (status.ok()) status = ValidateNamespace(ns, config_.limits);
  if (status.ok()) status = ValidateMaxStale(max_stale_ms);
  if (status.ok()) status = admission_->Enter(ticket);
  return status;
}

grpc::ServerUnaryReactor* SidecarService::Get(grpc::CallbackServerContext* context,
                                              const fanout::v1::GetRequest* request,
                                              GetResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Admission::Ticket ticket;
  const absl::Status valid =
      AdmitRead(ValidateKey("key", request->key(), config_.limits), request->namespace_(),
                request->max_stale_ms(), &ticket);
  if (!valid.ok()) {
    reactor->Finish(ToGrpcStatus(valid));
    return reactor;
  }
  read_path_->Get(request->namespace_(), request->key(),
                  ReadOptionsFor(request->max_stale_ms(), request->bypass_cache()),
                  [reactor, response, ticket = std::move(ticket)](
                      absl::StatusOr<cache::ReadResult> result) mutable {
                    ticket.Release();
                    if (result.ok()) FillResult(*result, response);
                    reactor->Finish(ToGrpcStatus(result.status()));
                  });
  return reactor;
}

grpc::ServerUnaryReactor* SidecarService::BatchGet(grpc::CallbackServerContext* context,
                                                   const fanout::v1::BatchGetRequest* request,
                                                   fanout::v1::BatchGetResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Admission::Ticket ticket;
  const absl::Status valid =
      AdmitRead(ValidateBatchSize("keys", request->keys_size(), config_.limits),
                request->namespace_(), request->max_stale_ms(), &ticket);
  if (!valid.ok()) {
    reactor->Finish(ToGrpcStatus(valid));
    return reactor;
  }
  // Every item exists before any read starts, so that completions on other
  // threads write only their own item.
  for (const std::string& key : request->keys()) response->add_items()->set_key(key);

  struct Join {
    std::atomic<int> pending;
    grpc::ServerUnaryReactor* reactor;
    Admission::Ticket ticket;
  };
  auto join = std::make_shared<Join>();
  join->pending = request->keys_size();
  join->reactor = reactor;
  join->ticket = std::move(ticket);
  auto finish_one = [join]() {
    if (join->pending.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      join->ticket.Release();
      join->reactor->Finish(grpc::Status::OK);
    }
  };
  const cache::ReadOptions options = ReadOptionsFor(request->max_stale_ms(), false);
  for (int i = 0; i < request->keys_size(); ++i) {
    BatchGetItem* item = response->mutable_items(i);
    absl::Status key_valid = ValidateKey(absl::StrCat("keys[", i, "]"), item->key(),
                                         config_.limits);
    if (!key_valid.ok()) {
      item->set_code(static_cast<int32_t>(key_valid.code()));
      item->set_error(std::string(key_valid.message()));
      finish_one();
      continue;
    }
    read_path_->Get(request->namespace_(), item->key(), options,
                    [item, finish_one](absl::StatusOr<cache::ReadResult> result) {
                      if (result.ok()) {
                        FillResult(*result, item);
                      } else {
                        item->set_code(static_cast<int32_t>(result.status().code()));
                        item->set_error(std::string(result.status().message()));
                      }
                      finish_one();
                    });
  }
  return reactor;
}

grpc::ServerUnaryReactor* SidecarService::Invalidate(grpc::CallbackServerContext* context,
                                                     const fanout::v1::InvalidateRequest* request,
                                                     fanout::v1::InvalidateResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Admission::Ticket ticket;
  absl::Status valid = ValidateBatchSize("keys", request->keys_size(), config_.limits,
                                         /*allow_empty=*/true);
  if (valid.ok()) valid = ValidateNamespace(request->namespace_(), config_.limits);
  if (valid.ok()) valid = ValidatePrefix(request->prefix(), config_.limits);
  for (int i = 0; valid.ok() && i < request->keys_size(); ++i) {
    valid = ValidateKey(absl::StrCat("keys[", i, "]"), request->keys(i), config_.limits);
  }
  if (valid.ok() && request->keys_size() == 0 && request->prefix().empty()) {
    valid = absl::InvalidArgumentError("give keys or a prefix to invalidate");
  }
  if (valid.ok()) valid = admission_->Enter(&ticket);
  if (!valid.ok()) {
    reactor->Finish(ToGrpcStatus(valid));
    return reactor;
  }
  std::vector<std::string> keys(request->keys().begin(), request->keys().end());
  read_path_->Invalidate(request->namespace_(), keys, request->prefix(),
                         request->purge_survival(),
                         [reactor, response, ticket = std::move(ticket)](
                             absl::StatusOr<uint64_t> evicted) mutable {
                           ticket.Release();
                           if (evicted.ok()) {
                             response->set_evicted(static_cast<int64_t>(*evicted));
                             // No other pods are reachable until a shared tier is configured.
                             response->set_broadcast(false);
                           }
                           reactor->Finish(ToGrpcStatus(evicted.status()));
                         });
  return reactor;
}

grpc::ServerUnaryReactor* SidecarService::Route(grpc::CallbackServerContext* context,
                                                const fanout::v1::RouteRequest* request,
                                                fanout::v1::RouteResponse* response) {
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
    reactor->Finish(ToGrpcStatus(valid));
    return reactor;
  }
  // The caller's deadline, bounded by limits.request_timeout.
  absl::Time deadline = absl::Now() + config_.limits.request_timeout;
  if (context->deadline() != std::chrono::system_clock::time_point::max()) {
    deadline = std::min(deadline, absl::FromChrono(context->deadline()));
  }
  return new RouteReactor(router_, request, response, deadline, std::move(ticket));
}

grpc::ServerWriteReactor<fanout::v1::WatchEvent>* SidecarService::Watch(
    grpc::CallbackServerContext* context, const fanout::v1::WatchRequest* request) {
  return new FinishedWriter<fanout::v1::WatchEvent>(
      grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                   "Watch is not available yet: it streams cross-pod invalidations, which "
                   "need the shared Redis tier"));
}

}  // namespace fanout::server
