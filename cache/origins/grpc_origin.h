// An origin reached over gRPC: any service implementing fanout.v1.Origin,
// at one address or at several replicas of it.
#ifndef FANOUT_CACHE_ORIGINS_GRPC_ORIGIN_H_
#define FANOUT_CACHE_ORIGINS_GRPC_ORIGIN_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cache/origin.h"
#include "common/executor.h"

namespace fanout::cache {

// A connection to the origin that cannot be made is retried at most this
// long apart (gRPC's default backoff grows to two minutes), so an origin
// back from an outage is asked again within about a second.
inline constexpr int kOriginReconnectBackoffMs = 1000;

// How a fetch uses several replicas (origin.grpc.policy).
enum class ReplicaPolicy {
  // One replica at a time, in the configured order; the next is asked when
  // one fails or has not answered within an equal share of the fetch's
  // remaining time.
  kFallback,
  // Every replica at once; the first answer wins, the rest are cancelled.
  kFirstSuccess,
  // Like kFallback, and the next replica is also asked when the ones asked
  // have not answered within hedge_after; the first answer wins.
  kHedged,
};

// "fallback", "first_success" or "hedged"; InvalidArgument naming the
// choices otherwise.
absl::StatusOr<ReplicaPolicy> ParseReplicaPolicy(absl::string_view text);
absl::string_view ReplicaPolicyName(ReplicaPolicy policy);

struct GrpcOriginOptions {
  // One or more addresses of the same origin, e.g. "127.0.0.1:7080",
  // "dns:///origin.svc:443", "unix:///run/o.sock".
  std::vector<std::string> targets;
  uint64_t max_value_bytes = 1 << 20;
  // With more than one target:
  ReplicaPolicy policy = ReplicaPolicy::kFallback;
  absl::Duration hedge_after = absl::Milliseconds(50);
  // Runs the fetches' timers (attempt timeouts, hedging, the deadline) and
  // the Watch's reconnect timers. Required with more than one target and by
  // WatchChanges; not owned, must outlive the origin.
  Executor* executor = nullptr;
  // What the Watch's events are checked against (limits.max_key_bytes,
  // limits.max_namespace_bytes).
  uint64_t max_key_bytes = 1024;
  uint64_t max_namespace_bytes = 256;
  // Pauses before the Watch reconnects: the first one up to watch_backoff,
  // doubling each time no replica gave a stream that lasted, up to
  // watch_max_backoff; each drawn between half and all of that.
  absl::Duration watch_backoff = absl::Milliseconds(100);
  absl::Duration watch_max_backoff = absl::Seconds(5);
};

// Calls fanout.v1.Origin/Fetch with the callback API (no thread waits for an
// answer) over one channel per target created here, and decodes the answer
// itself, so that an undecodable one is told apart from an empty one (gRPC's
// typed callback API reports OK for both). Translates the answer:
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
//
// One target: one call per fetch, exactly as above. Answers arrive on gRPC's
// callback threads and never touch the origin object, so an answer may
// arrive after the origin is destroyed.
//
// Several targets (replicas of one origin): each fetch is a task group
// (common/task_group.h) with one task per replica, joined under `policy`,
// every attempt bounded by the fetch's deadline and cancelled with
// FetchContext::cancel or when the origin is destroyed. A replica's value
// and its NotFound are both answers (replicas hold the same data, so "no
// such key" from one of them is the result, under every policy, first_success
// included: the first answer wins, found or not); so are InvalidArgument and
// FailedPrecondition (the key or its value is wrong, which another replica
// will not change). Every other status (Unavailable, DeadlineExceeded, an
// undecodable answer, ...) is that replica failing, and the next one is
// asked. When no replica answers: Cancelled when the fetch was cancelled,
// DeadlineExceeded when its deadline passed, else Unavailable listing each
// replica's failure. Destroying the origin cancels its fetches in flight and
// waits for them to call `done` (promptly: their calls are cancelled), so do
// not destroy it on a thread those calls need.
//
// WatchChanges calls fanout.v1.Origin/Watch (a server stream; the callback
// API, no thread of its own; its timers on `executor`, which it requires)
// on one replica at a time: the first, in the configured order, that
// answers; the next one when a replica fails. It reports each event's keys
// and prefix as an OriginChange, and a `reset` as a change of `all` keys.
//   - A stream that ends or breaks is called again after a pause
//     (watch_backoff .. watch_max_backoff), with the last token the origin
//     sent as resume_after. When the origin had sent events but no token,
//     what changed in between is unknown: once the next stream answers, a
//     change of every key of every namespace is reported.
//   - A replica that answers UNIMPLEMENTED is not asked again; when every
//     replica has, the watch logs it once and ends (no push; values live
//     until their ttl).
//   - An event that does not decode, or whose namespace, keys, prefix or
//     token break the limits (a key empty or over max_key_bytes, a NUL byte,
//     a token over 4096 bytes), is dropped with a warning naming the field
//     (at most 5 such warnings per 10 s). An event over the channel's
//     receive limit breaks the stream: a change of every key is reported,
//     and the next stream starts from now.
// Destroying the watch cancels the stream and the pending reconnect and
// waits for the stream's end (prompt: it is cancelled); no sink call runs
// after it returns. Do not destroy it on a gRPC callback thread.
absl::StatusOr<std::unique_ptr<Origin>> NewGrpcOrigin(const GrpcOriginOptions& options);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_ORIGINS_GRPC_ORIGIN_H_
