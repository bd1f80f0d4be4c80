// A C++ client for fanoutd. Calls are blocking with a deadline and return
// absl::StatusOr; the gRPC status code and message come through unchanged,
// and structured error details as payloads: a failed Route carries every
// branch as a fanout.v1.RouteResponse under kRouteResponseTypeUrl.
#ifndef FANOUT_CLIENT_CLIENT_H_
#define FANOUT_CLIENT_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "fanout/v1/sidecar.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace fanout::client {

inline constexpr char kRouteResponseTypeUrl[] = "type.googleapis.com/fanout.v1.RouteResponse";

struct ClientOptions {
  absl::Duration timeout = absl::Seconds(5);  // deadline of each call
};

// Thread-safe: one Client may serve many threads (one channel, multiplexed).
class Client {
 public:
  // `address`: "host:port" or "unix:///path". Does not dial until first use.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& address,
                                                         const ClientOptions& options = {});

  absl::StatusOr<fanout::v1::GetResponse> Get(const fanout::v1::GetRequest& request);
  absl::StatusOr<fanout::v1::GetResponse> Get(const std::string& key, const std::string& ns = "");
  absl::StatusOr<fanout::v1::BatchGetResponse> BatchGet(const fanout::v1::BatchGetRequest& request);
  absl::StatusOr<fanout::v1::InvalidateResponse> Invalidate(
      const fanout::v1::InvalidateRequest& request);
  absl::StatusOr<fanout::v1::RouteResponse> Route(const fanout::v1::RouteRequest& request);
  // Streams the events of a Watch to `on_event`, in order, until the stream
  // ends, `on_event` returns false (the call is then cancelled: OK), or
  // `duration` passes (zero: no limit; DeadlineExceeded). Returns the
  // status the server ended the stream with otherwise (RESOURCE_EXHAUSTED:
  // this consumer fell behind; watch again and re-read the keys).
  absl::Status Watch(const fanout::v1::WatchRequest& request, absl::Duration duration,
                     absl::FunctionRef<bool(const fanout::v1::WatchEvent&)> on_event);
  // The serving status of `service` ("" = the whole server).
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Health(
      const std::string& service = "");

 private:
  Client(std::shared_ptr<grpc::Channel> channel, const ClientOptions& options);
  void Prepare(grpc::ClientContext* context) const;

  const ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<fanout::v1::Sidecar::Stub> sidecar_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace fanout::client

#endif  // FANOUT_CLIENT_CLIENT_H_
