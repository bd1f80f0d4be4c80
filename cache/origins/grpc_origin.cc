#include "cache/origins/grpc_origin.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "fanout/v1/sidecar.grpc.pb.h"

namespace fanout::cache {
namespace {

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat("gRPC origin: ", s.error_message()));
}

class GrpcOrigin final : public Origin {
 public:
  GrpcOrigin(const GrpcOriginOptions& options, std::shared_ptr<grpc::Channel> channel)
      : options_(options), stub_(fanout::v1::Origin::NewStub(std::move(channel))) {}

  void Fetch(absl::string_view ns, absl::string_view key, const FetchContext& fetch,
             FetchDone done) override {
    struct Call {
      grpc::ClientContext context;
      fanout::v1::FetchRequest request;
      fanout::v1::FetchResponse response;
      FetchDone done;
      // Unsubscribed before the call is freed.
      std::unique_ptr<CancellationCallback> on_cancel;
    };
    auto* call = new Call;
    call->request.set_key(std::string(key));
    call->request.set_namespace_(std::string(ns));
    call->context.set_deadline(absl::ToChronoTime(fetch.deadline));
    call->done = std::move(done);
    // TryCancel before the call starts is kept by gRPC and applied at start.
    call->on_cancel = std::make_unique<CancellationCallback>(
        fetch.cancel, [ctx = &call->context] { ctx->TryCancel(); });
    stub_->async()->Fetch(&call->context, &call->request, &call->response,
                          [this, call](grpc::Status status) {
                            std::unique_ptr<Call> owned(call);
                            owned->on_cancel.reset();
                            std::move(owned->done)(Translate(status, owned->response));
                          });
  }

 private:
  absl::StatusOr<OriginValue> Translate(const grpc::Status& status,
                                        fanout::v1::FetchResponse& response) const {
    if (!status.ok()) {
      if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
        return absl::NotFoundError("no such key");
      }
      return FromGrpc(status);
    }
    if (!response.found()) return absl::NotFoundError("no such key");
    if (response.value().size() > options_.max_value_bytes) {
      return absl::FailedPreconditionError(
          absl::StrCat("value is ", response.value().size(), " bytes, over the limit of ",
                       options_.max_value_bytes, " (limits.max_value_bytes)"));
    }
    OriginValue v;
    v.value = std::move(*response.mutable_value());
    v.version = response.version();
    v.ttl = absl::Milliseconds(response.ttl_ms());
    return v;
  }

  const GrpcOriginOptions options_;
  std::unique_ptr<fanout::v1::Origin::Stub> stub_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Origin>> NewGrpcOrigin(const GrpcOriginOptions& options) {
  if (options.target.empty()) {
    return absl::InvalidArgumentError("origin.grpc.target is empty");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(options.max_value_bytes + 4096));
  auto channel =
      grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(), args);
  return std::make_unique<GrpcOrigin>(options, std::move(channel));
}

}  // namespace fanout::cache
