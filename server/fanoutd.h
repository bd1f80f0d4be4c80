// A running fanoutd: the executor, the read path and the gRPC server built
// from a Config. main() owns one; tests may run one in-process.
#ifndef FANOUT_SERVER_FANOUTD_H_
#define FANOUT_SERVER_FANOUTD_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cache/origin.h"
#include "cache/read_path.h"
#include "common/blocking_pool.h"
#include "common/executor.h"
#include "router/router.h"
#include "server/admin_metrics.h"
#include "server/admin_server.h"
#include "server/admission.h"
#include "server/call_tracker.h"
#include "server/config.h"
#include "server/health_service.h"
#include "server/invalidation_setup.h"
#include "server/sidecar_service.h"

namespace fanout::server {

class Fanoutd {
 public:
  // Builds every component and starts listening. InvalidArgument for a bad
  // origin or listen address; Unavailable when the address is in use (by
  // another fanoutd, say: gRPC's SO_REUSEPORT is turned off so that a second
  // server cannot quietly share the port).
  static absl::StatusOr<std::unique_ptr<Fanoutd>> Start(const Config& config);
  ~Fanoutd();

  // The address clients dial (with the real port when the config said :0).
  const std::string& address() const { return address_; }

  // Stops serving, in two stages:
  //  1. for `delay`, health reports NOT_SERVING (Watch streams see it) while
  //     calls are still served, so that load balancers stop sending first;
  //  2. the drain: new calls are refused, calls in flight finish until
  //     server.drain_timeout, then are cancelled; as soon as none is left
  //     the remaining (idle) connections are closed, so an idle server stops
  //     at once whatever its clients do.
  // Blocks until done; call it from a thread of your own, never a gRPC or
  // executor thread. Shutdown() waits server.shutdown_delay.
  void Shutdown(absl::Duration delay);
  void Shutdown() { Shutdown(config_.server.shutdown_delay); }
  // Cuts a Shutdown running on another thread short: the delay ends and the
  // calls in flight are cancelled now. Thread-safe, does not block; may come
  // before Shutdown (which then does not wait at all).
  void ShutdownNow();
  // Blocks until Shutdown has finished.
  void Wait();

  // Calls being served (every service), for tests and shutdown logs.
  int64_t calls_in_flight() const { return calls_.in_flight(); }
  // host:port of the admin endpoint; empty when it is off.
  std::string admin_address() const { return admin_ ? admin_->address() : ""; }

  grpc::Server* grpc_server() { return server_.get(); }
  cache::ReadPath* read_path() { return read_path_.get(); }
  InvalidationSetup* invalidation() { return invalidation_.get(); }
  router::Router* router() { return router_.get(); }

 private:
  explicit Fanoutd(const Config& config) : config_(config), admission_(config.limits.max_in_flight) {}
  void Drain(absl::Time deadline);

  const Config config_;
  CallTracker calls_;  // outlives server_ (its context allocator points here)
  absl::Mutex shutdown_mu_;
  bool shutdown_now_ ABSL_GUARDED_BY(shutdown_mu_) = false;
  std::string address_;
  std::unique_ptr<ThreadPoolExecutor> executor_;
  std::unique_ptr<ThreadBlockingPool> io_pool_;  // file origin only
  std::unique_ptr<cache::Origin> origin_;
  std::unique_ptr<InvalidationSetup> invalidation_;  // reset before the read path (it calls in)
  std::unique_ptr<cache::ReadPath> read_path_;
  std::unique_ptr<router::Router> router_;
  Admission admission_;
  std::unique_ptr<HealthService> health_;
  std::unique_ptr<SidecarService> sidecar_;
  std::unique_ptr<Metrics> metrics_;  // outlives the server's interceptors
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<AdminServer> admin_;
};

}  // namespace fanout::server

#endif  // FANOUT_SERVER_FANOUTD_H_
