// An origin reached over gRPC: any service implementing fanout.v1.Origin.
#ifndef FANOUT_CACHE_ORIGINS_GRPC_ORIGIN_H_
#define FANOUT_CACHE_ORIGINS_GRPC_ORIGIN_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cache/origin.h"

namespace fanout::cache {

struct GrpcOriginOptions {
  std::string target;  // e.g. "127.0.0.1:7080", "dns:///origin.svc:443", "unix:///run/o.sock"
  uint64_t max_value_bytes = 1 << 20;
};

// Calls fanout.v1.Origin/Fetch with the callback API (no thread waits for an
// answer) over one channel created here. Translates the answer: found=false →
// NotFound; UNAVAILABLE, DEADLINE_EXCEEDED and other transport failures keep
// their meaning; a value over max_value_bytes → FailedPrecondition.
absl::StatusOr<std::unique_ptr<Origin>> NewGrpcOrigin(const GrpcOriginOptions& options);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_ORIGINS_GRPC_ORIGIN_H_
