#include "cache/origins/grpc_origin.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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

class GrpcOrigin final : public Origin {
 public:
  GrpcOrigin(const GrpcOriginOptions& options, std::shared_ptr<grpc::Channel> channel)
      : options_(options), stub_(std::move(channel)) {}

  void Fetch(absl::string_view ns, absl::string_view key, const FetchContext& fetch,
             FetchDone done) override {
    fanout::v1::FetchRequest request;
    request.set_key(std::string(key));
    request.set_namespace_(std::string(ns));
    const std::string bytes = request.SerializeAsString();
    auto* call = new Call;
    grpc::Slice slice(bytes.data(), bytes.size());
    call->request = grpc::ByteBuffer(&slice, 1);
    call->what = Describe(ns, key);
    call->context.set_deadline(absl::ToChronoTime(fetch.deadline));
    if (!fetch.traceparent.empty()) call->context.AddMetadata(kTraceparentKey, fetch.traceparent);
    call->done = std::move(done);
    // TryCancel before the call starts is kept by gRPC and applied at start.
    call->on_cancel = std::make_unique<CancellationCallback>(
        fetch.cancel, [ctx = &call->context] { ctx->TryCancel(); });
    stub_.UnaryCall(&call->context, kFetchMethod, grpc::StubOptions(), &call->request,
                    &call->answer, [call, limit = options_.max_value_bytes](grpc::Status status) {
                      std::unique_ptr<Call> owned(call);
                      owned->on_cancel.reset();
                      std::move(owned->done)(Translate(status, &owned->answer, owned->what, limit));
                    });
  }

 private:
  const GrpcOriginOptions options_;
  grpc::GenericStub stub_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Origin>> NewGrpcOrigin(const GrpcOriginOptions& options) {
  if (options.target.empty()) {
    return absl::InvalidArgumentError("origin.grpc.target is empty");
  }
  grpc::ChannelArguments args;
  // Bounds the memory one answer can take; a bigger one fails on this side
  // (RESOURCE_EXHAUSTED, translated above).
  args.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<uint64_t>(options.max_value_bytes + kAnswerOverhead, INT32_MAX)));
  // Only the waits between attempts: gRPC also takes the minimum backoff as
  // the least time one connection attempt is given, and an origin that
  // accepts but hangs must keep holding its callers to their deadlines, not
  // fail them early as unreachable.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kOriginReconnectBackoffMs / 4);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kOriginReconnectBackoffMs);
  auto channel =
      grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(), args);
  return std::make_unique<GrpcOrigin>(options, std::move(channel));
}

}  // namespace fanout::cache
