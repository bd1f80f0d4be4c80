// The Watch RPC: streams what happens to the watched keys on this pod.
//
// A subscriber of the pod's invalidations (cache::Invalidator, itself the
// bus's subscriber): each invalidation applied here, whoever made it (a
// caller of Invalidate on any pod, a change the origin pushed), becomes an
// INVALIDATED event on the streams that watch one of its keys; a stream that
// asked for values then gets UPDATED with the value read through this pod's
// cache, once. The link's state becomes DEGRADED / RECOVERED; a gap (the pod
// dropped its cache) an INVALIDATED with all_keys. Every stream gets a
// HEARTBEAT every watch.heartbeat.
//
// Streams are callback-API write reactors: no thread per stream. Each has a
// buffer of unsent events bounded by watch.buffer_bytes: a consumer that
// does not read fills it (gRPC's flow control holds the write in flight)
// and is cut off with RESOURCE_EXHAUSTED, and its buffer freed; one whose
// write has been held for three heartbeats is cut off too. At most
// watch.max_streams are open (past it, RESOURCE_EXHAUSTED). Shutdown ends
// every stream with UNAVAILABLE at once (after the write in flight, if any),
// so a drain does not wait for them.
//
// A stream's first event is a HEARTBEAT, once it is registered: every
// invalidation applied on the pod after that reaches it.
//
// Thread-safe. Events are pushed from the executor: invalidations, link
// changes and gaps one at a time in the order they came (the thread that
// applied them, an Invalidate call's or the bus reader's, only queues
// them, so many streams do not slow either down), heartbeats and UPDATED
// reads; and from gRPC's threads.
#ifndef FANOUT_SERVER_WATCH_SERVICE_H_
#define FANOUT_SERVER_WATCH_SERVICE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "cache/invalidation_bus.h"
#include "cache/invalidator.h"
#include "cache/read_path.h"
#include "common/executor.h"
#include "fanout/v1/sidecar.grpc.pb.h"
#include "server/config.h"

namespace fanout::server {

struct WatchStats {
  int64_t open = 0;      // streams open now
  uint64_t opened = 0;   // streams accepted
  uint64_t refused = 0;  // streams refused: watch.max_streams
  uint64_t cut_off = 0;  // streams ended because their consumer did not read
  uint64_t events = 0;   // events written
  uint64_t updates = 0;  // UPDATED reads made (one per key, however many streams)
};

class WatchHub;
struct WatchPosts;
class WatchStream;
struct WatchTimer;

class WatchService final : public cache::InvalidationBus::Subscriber {
 public:
  // `read_path`, `invalidator`, `executor`: not owned; must outlive this.
  // Listens to `invalidator` from construction and starts the heartbeat.
  WatchService(const Config& config, cache::ReadPath* read_path, cache::Invalidator* invalidator,
               Executor* executor);
  // Ends the streams still open (as Shutdown) and stops listening. The
  // streams' reactors end after this, without touching it.
  ~WatchService() override;
  WatchService(const WatchService&) = delete;
  WatchService& operator=(const WatchService&) = delete;

  // The handler: validates (INVALID_ARGUMENT naming the field), admits
  // (RESOURCE_EXHAUSTED past watch.max_streams, UNAVAILABLE after Shutdown)
  // and returns the stream's reactor. Never blocks.
  grpc::ServerWriteReactor<fanout::v1::WatchEvent>* Open(grpc::CallbackServerContext* context,
                                                         const fanout::v1::WatchRequest* request);

  // Ends every stream with UNAVAILABLE now (sent after the write in flight,
  // if any: one held by a consumer that does not read is ended by the
  // drain's timeout), and refuses new ones. Does not block.
  void Shutdown();

  WatchStats Stats() const;

 private:
  // cache::InvalidationBus::Subscriber (through the invalidator).
  void OnInvalidation(const cache::Invalidation& invalidation) override;
  void OnLinkState(cache::LinkState state) override;
  void OnGap() override;

  // Reads `key` of `ns` and sends UPDATED to the value streams watching it.
  void Update(const std::string& ns, const std::string& key);

  // Queues `send` to run on the executor after the ones queued before it.
  void Post(absl::AnyInvocable<void() &&> send);
  void SendInvalidation(const cache::Invalidation& invalidation);
  void SendLinkState(cache::LinkState state);
  void SendGap();

  const Config config_;
  cache::ReadPath* const read_path_;
  cache::Invalidator* const invalidator_;
  Executor* const executor_;
  const std::shared_ptr<WatchTimer> timer_;
  // The open streams and the counters, shared with the streams (which may
  // end after the service) and with the reads for UPDATED events.
  const std::shared_ptr<WatchHub> hub_;
  // What Post queued, shared with the executor's task that sends it (which
  // may run after the service is gone, and then sends nothing).
  const std::shared_ptr<WatchPosts> posts_;
};

}  // namespace fanout::server

#endif  // FANOUT_SERVER_WATCH_SERVICE_H_
