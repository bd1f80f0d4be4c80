// The one place where absl::Status becomes grpc::Status.
#ifndef FANOUT_SERVER_GRPC_STATUS_H_
#define FANOUT_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace fanout::server {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace fanout::server

#endif  // FANOUT_SERVER_GRPC_STATUS_H_
