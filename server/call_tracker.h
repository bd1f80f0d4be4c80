// Counts the calls a server is serving, whatever the service (Sidecar,
// Health, reflection, unknown methods), so that a drain can tell when the
// last one has ended and close the connections that remain: an idle client
// would otherwise hold the drain until it acts on the server's GOAWAY (up to
// 5 s for a gRPC C++ client whose process is not polling, up to 20 s -
// gRPC's wait for the GOAWAY's ping - for one that ignores it).
//
// The count comes from the server's ContextAllocator: gRPC 1.51 asks it for
// a context when a call arrives and returns the context after the call's
// OnDone (the status has been sent). A server interceptor would see the same
// events, but gRPC's interceptor machinery costs about 6,000 instructions per
// call (12% of a cached Get, measured with bench/profile_get.sh); this costs
// one allocation. One gap: a call that arrives while the server is shutting
// down may be dropped by gRPC without its context coming back; the count
// then stays above zero and the drain ends at its deadline, as without this.
#ifndef FANOUT_SERVER_CALL_TRACKER_H_
#define FANOUT_SERVER_CALL_TRACKER_H_

#include <grpcpp/server_context.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fanout::server {

// Thread-safe. Must outlive the server it counts for.
class CallTracker {
 public:
  CallTracker() = default;
  CallTracker(const CallTracker&) = delete;
  CallTracker& operator=(const CallTracker&) = delete;

  // For ServerBuilder::SetContextAllocator (which takes ownership of the
  // allocator; the allocator only points at this).
  std::unique_ptr<grpc::ContextAllocator> NewContextAllocator();

  // Calls that have started and not yet ended.
  int64_t in_flight() const { return in_flight_.load(std::memory_order_acquire); }

  // Blocks until no call is in flight, `deadline` passes, or Interrupt() is
  // called. Returns whether no call was in flight.
  bool WaitIdle(absl::Time deadline);
  // Makes WaitIdle return now, and every later call of it at once.
  void Interrupt();

 private:
  friend class CountingContextAllocator;
  void Enter();
  void Leave();

  // Lock-free on the call path; Leave takes mu_ only while someone waits,
  // to wake them.
  std::atomic<int64_t> in_flight_{0};
  std::atomic<bool> waiting_{false};
  absl::Mutex mu_;
  bool interrupted_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fanout::server

#endif  // FANOUT_SERVER_CALL_TRACKER_H_
