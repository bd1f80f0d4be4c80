#include "client/client.h"

#include <grpcpp/grpcpp.h>

#include "google/rpc/status.pb.h"

namespace fanout::client {
namespace {

// Keeps the google.rpc.Status details as payloads (type URL → bytes).
absl::Status FromGrpc(const grpc::Status& s) {
  absl::Status status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  google::rpc::Status details;
  if (!s.error_details().empty() && details.ParseFromString(s.error_details())) {
    for (const google::protobuf::Any& any : details.details()) {
      status.SetPayload(any.type_url(), absl::Cord(any.value()));
    }
  }
  return status;
}

template <typename Response>
absl::StatusOr<Response> Result(const grpc::Status& s, Response&& response) {
  if (!s.ok()) return FromGrpc(s);
  return std::move(response);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& address,
                                                        const ClientOptions& options) {
  if (address.empty()) return absl::InvalidArgumentError("address is empty");
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeout must be more than zero");
  }
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  return std::unique_ptr<Client>(new Client(std::move(channel), options));
}

Client::Client(std::shared_ptr<grpc::Channel> channel, const ClientOptions& options)
    : options_(options),
      channel_(std::move(channel)),
      sidecar_(fanout::v1::Sidecar::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

void Client::Prepare(grpc::ClientContext* context) const {
  context->set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
}

absl::StatusOr<fanout::v1::GetResponse> Client::Get(const fanout::v1::GetRequest& request) {
  grpc::ClientContext context;
  Prepare(&context);
  fanout::v1::GetResponse response;
  return Result(sidecar_->Get(&context, request, &response), std::move(response));
}

absl::StatusOr<fanout::v1::GetResponse> Client::Get(const std::string& key, const std::string& ns) {
  fanout::v1::GetRequest request;
  request.set_key(key);
  request.set_namespace_(ns);
  return Get(request);
}

absl::StatusOr<fanout::v1::BatchGetResponse> Client::BatchGet(
    const fanout::v1::BatchGetRequest& request) {
  grpc::ClientContext context;
  Prepare(&context);
  fanout::v1::BatchGetResponse response;
  return Result(sidecar_->BatchGet(&context, request, &response), std::move(response));
}

absl::StatusOr<fanout::v1::InvalidateResponse> Client::Invalidate(
    const fanout::v1::InvalidateRequest& request) {
  grpc::ClientContext context;
  Prepare(&context);
  fanout::v1::InvalidateResponse response;
  return Result(sidecar_->Invalidate(&context, request, &response), std::move(response));
}

absl::StatusOr<fanout::v1::RouteResponse> Client::Route(const fanout::v1::RouteRequest& request) {
  grpc::ClientContext context;
  Prepare(&context);
  fanout::v1::RouteResponse response;
  return Result(sidecar_->Route(&context, request, &response), std::move(response));
}

absl::Status Client::Watch(const fanout::v1::WatchRequest& request, absl::Duration duration,
                           absl::FunctionRef<bool(const fanout::v1::WatchEvent&)> on_event) {
  grpc::ClientContext context;
  if (duration > absl::ZeroDuration()) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + duration));
  }
  std::unique_ptr<grpc::ClientReader<fanout::v1::WatchEvent>> reader =
      sidecar_->Watch(&context, request);
  fanout::v1::WatchEvent event;
  while (reader->Read(&event)) {
    if (!on_event(event)) {
      context.TryCancel();
      while (reader->Read(&event)) {
      }
      reader->Finish().IgnoreError();
      return absl::OkStatus();
    }
  }
  return FromGrpc(reader->Finish());
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Client::Health(
    const std::string& service) {
  grpc::ClientContext context;
  Prepare(&context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status s = health_->Check(&context, request, &response);
  if (!s.ok()) return FromGrpc(s);
  return response.status();
}

}  // namespace fanout::client
