// An origin reached over gRPC: any service implementing fanout.v1.Origin.
#ifndef FANOUT_CACHE_ORIGINS_GRPC_ORIGIN_H_
#define FANOUT_CACHE_ORIGINS_GRPC_ORIGIN_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cache/origin.h"

namespace fanout::cache {

// A connection to the origin that cannot be made is retried at most this
// long apart (gRPC's default backoff grows to two minutes), so an origin
// back from an outage is asked again within about a second.
inline constexpr int kOriginReconnectBackoffMs = 1000;

struct GrpcOriginOptions {
  std::string target;  // e.g. "127.0.0.1:7080", "dns:///origin.svc:443", "unix:///run/o.sock"
  uint64_t max_value_bytes = 1 << 20;
};

// Calls fanout.v1.Origin/Fetch with the callback API (no thread waits for an
// answer) over one channel created here, and decodes the answer itself, so
// that an undecodable one is told apart from an empty one (gRPC's typed
// callback API reports OK for both). Translates the answer:
//   found: false, or the NOT_FOUND status  NotFound (the only way to say
//                                          "no such key")
//   found: true                            the value
//   an answer that does not decode as a FetchResponse, carries no `found`
//   (empty, only unknown fields), or OK with no message at all
//                                          Internal (an origin failure)
//   a value over max_value_bytes, whether caught by the channel's receive
//   limit or after decoding                FailedPrecondition naming
//                                          limits.max_value_bytes
//   UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED sent by the origin
//   and other failures                     keep their code
// Answers arrive on gRPC's callback threads and never touch the origin
// object, so an answer may arrive after the origin is destroyed.
absl::StatusOr<std::unique_ptr<Origin>> NewGrpcOrigin(const GrpcOriginOptions& options);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_ORIGINS_GRPC_ORIGIN_H_
