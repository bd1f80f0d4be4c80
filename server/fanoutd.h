// A running fanoutd: the executor, the read path and the gRPC server built
// from a Config. main() owns one; tests may run one in-process.
//
// Reload applies a new Config while calls are served when everything it
// changes can change in place (routes, limits, ttl and freshness, logging,
// the shutdown timings); one that changes anything else (listen addresses,
// tiers, the origin) is refused whole, naming the keys, and waits for a
// restart.
#ifndef FANOUT_SERVER_FANOUTD_H_
#define FANOUT_SERVER_FANOUTD_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cache/origin.h"
#include "cache/read_path.h"
#include "common/blocking_pool.h"
#include "common/executor.h"
#include "common/metrics.h"
#include "router/router.h"
#include "server/admin_metrics.h"
#include "server/admin_server.h"
#include "server/admission.h"
#include "server/call_tracker.h"
#include "server/config.h"
#include "server/health_service.h"
#include "server/invalidation_setup.h"
#include "server/live_config.h"
#include "server/rpc_metrics.h"
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
  void Shutdown() { Shutdown(config().server.shutdown_delay); }
  // Cuts a Shutdown running on another thread short: the delay ends and the
  // calls in flight are cancelled now. Thread-safe, does not block; may come
  // before Shutdown (which then does not wait at all).
  void ShutdownNow();
  // Blocks until Shutdown has finished.
  void Wait();

  // What a Reload did.
  struct ReloadResult {
    enum class Outcome {
      kApplied,    // the new configuration runs
      kUnchanged,  // nothing differs from what runs
      kRejected,   // the running configuration stays, whole
    };
    Outcome outcome = Outcome::kUnchanged;
    // kRejected: why. InvalidArgument naming the key for a bad file,
    // FailedPrecondition naming the keys (`restart`) that need a restart.
    absl::Status error;
    std::vector<std::string> applied;  // keys whose new values are now in effect
    std::vector<std::string> restart;  // changed keys that need a restart
  };
  // Applies `next` (a parsed configuration, or why it could not be parsed;
  // `source` names where it came from, for the log) when every key it
  // changes can change in place (IsReloadableKey). It is rejected with a
  // logged error naming the reason, and nothing changes, when it is
  // invalid, changes a key that needs a restart, or has routes whose
  // router cannot be built. Calls in flight are not disturbed: a Route finishes on
  // the router it started on. Counted in fanout_config_reloads_total.
  // Reloads run one at a time; call it from a thread of your own (it may
  // take a moment to build a router), never a gRPC or executor thread.
  ReloadResult Reload(absl::StatusOr<Config> next, absl::string_view source);

  // The configuration running now.
  Config config() const;

  // Calls being served (every service), for tests and shutdown logs.
  int64_t calls_in_flight() const { return calls_.in_flight(); }
  // host:port of the admin endpoint; empty when it is off.
  std::string admin_address() const { return admin_ ? admin_->address() : ""; }

  grpc::Server* grpc_server() { return server_.get(); }
  cache::ReadPath* read_path() { return read_path_.get(); }
  InvalidationSetup* invalidation() { return invalidation_.get(); }
  std::shared_ptr<router::Router> router() { return routers_->Get(); }
  MetricRegistry& metrics() { return metrics_; }

 private:
  explicit Fanoutd(const Config& config) : config_(config), admission_(config.limits.max_in_flight) {}
  void Drain(absl::Time deadline);
  // The /debug/config body for `config`.
  static std::string ConfigPage(const Config& config);
  // Destroys the retired routers nothing uses any more (on this thread).
  void ReleaseRetiredRouters() ABSL_EXCLUSIVE_LOCKS_REQUIRED(reload_mu_);

  mutable absl::Mutex config_mu_;
  Config config_ ABSL_GUARDED_BY(config_mu_);
  // Held for a whole Reload: reloads run one at a time.
  absl::Mutex reload_mu_ ABSL_ACQUIRED_BEFORE(config_mu_);
  // Routers replaced by reloads, kept until no call uses them, so that
  // they (and their channels) are destroyed here rather than on the gRPC
  // thread that ends their last call.
  std::vector<std::shared_ptr<router::Router>> retired_routers_ ABSL_GUARDED_BY(reload_mu_);
  MetricRegistry metrics_;  // outlives every component that counts into it
  CallTracker calls_;       // outlives server_ (its context allocator points here)
  absl::Mutex shutdown_mu_;
  bool shutdown_now_ ABSL_GUARDED_BY(shutdown_mu_) = false;
  std::string address_;
  std::unique_ptr<ThreadPoolExecutor> executor_;
  std::unique_ptr<ThreadBlockingPool> io_pool_;  // file origin only
  std::unique_ptr<cache::Origin> origin_;
  std::unique_ptr<InvalidationSetup> invalidation_;  // reset before the read path (it calls in)
  std::unique_ptr<cache::ReadPath> read_path_;
  std::unique_ptr<RouterSlot> routers_;
  Admission admission_;
  std::unique_ptr<HealthService> health_;
  std::unique_ptr<SidecarService> sidecar_;
  std::unique_ptr<UnknownMethodService> unknown_methods_;
  std::unique_ptr<RegistryCollector> registry_collector_;
  std::unique_ptr<ComponentCollector> components_;
  // fanout_config_reloads_total{result}, by ReloadResult::Outcome.
  std::unique_ptr<CounterVec> reloads_;
  Gauge* restart_required_ = nullptr;
  Gauge* last_reload_ok_ = nullptr;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<AdminServer> admin_;
};

}  // namespace fanout::server

#endif  // FANOUT_SERVER_FANOUTD_H_
