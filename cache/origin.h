// The source of truth behind the cache tiers.
#ifndef FANOUT_CACHE_ORIGIN_H_
#define FANOUT_CACHE_ORIGIN_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/cancellation.h"

namespace fanout::cache {

struct OriginValue {
  std::string value;
  int64_t version = 0;
  // How long the origin says the value may be cached; zero = the cache's default.
  absl::Duration ttl = absl::ZeroDuration();
};

// What one fetch runs under.
struct FetchContext {
  // No answer after this: DeadlineExceeded.
  absl::Time deadline = absl::InfiniteFuture();
  // Cancelled when nobody needs the answer any more (shutdown): the origin
  // stops the work where it can and answers Cancelled.
  CancellationToken cancel;
  // The W3C traceparent of the read that started the fill (one fill serves
  // every reader waiting for the key: the first one's), already validated;
  // empty = none. An origin that makes calls passes it on (the gRPC origin
  // sends it as `traceparent` metadata).
  std::string traceparent{};
};

// A change an origin reports without being asked: in namespace `ns`, the
// `keys`, and every key starting with `prefix` when it is not empty, changed,
// appeared or went away.
struct OriginChange {
  std::string ns;
  std::vector<std::string> keys;
  std::string prefix;
  // Every key of `ns` may have changed (with an empty `ns`: every key of
  // every namespace); the origin cannot say which (it lost its place in its
  // own log of changes). `keys` and `prefix` are then empty.
  bool all = false;
};

// A push of changes under way (Origin::WatchChanges). Destroying it ends the
// push: no call to its sink runs after the destructor returns. Must not
// outlive its origin.
class OriginWatch {
 public:
  virtual ~OriginWatch() = default;
};

// Fetch returns at once and calls `done` exactly once, on any thread,
// possibly inline. Status meanings:
//   NotFound          the origin has no such key
//   Unavailable       the origin could not answer (down, refused, overloaded)
//   DeadlineExceeded  no answer before `deadline`
//   InvalidArgument   the key cannot exist at this origin (e.g. a bad path)
//   Cancelled         context.cancel was cancelled
// Thread-safe.
class Origin {
 public:
  using FetchDone = absl::AnyInvocable<void(absl::StatusOr<OriginValue>) &&>;

  virtual ~Origin() = default;
  Origin() = default;
  Origin(const Origin&) = delete;
  Origin& operator=(const Origin&) = delete;

  virtual void Fetch(absl::string_view ns, absl::string_view key, const FetchContext& context,
                     FetchDone done) = 0;

  // Starts reporting the changes the origin sees by itself to `sink` (from
  // a thread of the origin's; calls never overlap and must not block) until
  // the returned watch is destroyed. A push only hastens what the ttls
  // already bound: an origin may miss changes (while it reconnects), and a
  // change may be reported more than once. Called at most once.
  // Unimplemented when this origin cannot push (the default).
  using ChangeSink = absl::AnyInvocable<void(OriginChange)>;
  virtual absl::StatusOr<std::unique_ptr<OriginWatch>> WatchChanges(ChangeSink sink) {
    (void)sink;
    return absl::UnimplementedError("this origin does not push changes");
  }
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_ORIGIN_H_
