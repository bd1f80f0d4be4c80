// A running fanoutd: the executor, the read path and the gRPC server built
// from a Config. main() owns one; tests may run one in-process.
#ifndef FANOUT_SERVER_FANOUTD_H_
#define FANOUT_SERVER_FANOUTD_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cache/origin.h"
#include "cache/read_path.h"
#include "common/executor.h"
#include "router/router.h"
#include "server/admin_metrics.h"
#include "server/admin_server.h"
#include "server/admission.h"
#include "server/config.h"
#include "server/health_service.h"
#include "server/sidecar_service.h"

namespace fanout::server {

class Fanoutd {
 public:
  // Builds every component and starts listening. InvalidArgument for a bad
  // origin or listen address.
  static absl::StatusOr<std::unique_ptr<Fanoutd>> Start(const Config& config);
  ~Fanoutd();

  // The address clients dial (with the real port when the config said :0).
  const std::string& address() const { return address_; }

  // Drains: health goes NOT_SERVING, new calls are refused, calls in flight
  // finish until server.drain_timeout, then are cancelled. Blocks until done;
  // call it from a thread of your own, never a gRPC or executor thread.
  void Shutdown();
  // Blocks until Shutdown has finished.
  void Wait();

  // host:port of the admin endpoint; empty when it is off.
  std::string admin_address() const { return admin_ ? admin_->address() : ""; }

  grpc::Server* grpc_server() { return server_.get(); }
  cache::ReadPath* read_path() { return read_path_.get(); }
  router::Router* router() { return router_.get(); }

 private:
  explicit Fanoutd(const Config& config) : config_(config), admission_(config.limits.max_in_flight) {}

  const Config config_;
  std::string address_;
  std::unique_ptr<ThreadPoolExecutor> executor_;
  std::unique_ptr<cache::Origin> origin_;
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
