// The one place where absl::Status becomes grpc::Status.
#ifndef FANOUT_SERVER_GRPC_STATUS_H_
#define FANOUT_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"
#include "google/rpc/status.pb.h"

namespace fanout::server {

// Payloads of the status (type URL → serialized message) travel as
// google.rpc.Status details, which grpcurl and the fanout client decode.
inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  const auto code = static_cast<grpc::StatusCode>(s.code());
  std::string message(s.message());
  google::rpc::Status details;
  s.ForEachPayload([&details](absl::string_view type_url, const absl::Cord& payload) {
    google::protobuf::Any* any = details.add_details();
    any->set_type_url(std::string(type_url));
    any->set_value(std::string(payload));
  });
  if (details.details_size() == 0) return grpc::Status(code, std::move(message));
  details.set_code(static_cast<int32_t>(code));
  details.set_message(message);
  return grpc::Status(code, std::move(message), details.SerializeAsString());
}

}  // namespace fanout::server

#endif  // FANOUT_SERVER_GRPC_STATUS_H_
