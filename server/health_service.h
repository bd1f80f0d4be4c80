// grpc.health.v1.Health for fanoutd: Check and Watch for the services ""
// (the whole server) and "fanout.v1.Sidecar".
#ifndef FANOUT_SERVER_HEALTH_SERVICE_H_
#define FANOUT_SERVER_HEALTH_SERVICE_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/rpc_metrics.h"

namespace fanout::server {

class HealthWatcher;

// Thread-safe. Starts NOT_SERVING; main() sets SERVING once listening.
class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  using Status = grpc::health::v1::HealthCheckResponse::ServingStatus;

  // `metrics`: where calls are counted; not owned, must outlive this; null
  // = nowhere.
  explicit HealthService(Metrics* metrics = nullptr);
  ~HealthService() override;

  // Sets every known service's status; Watch streams see the change.
  void SetServing(bool serving);
  // NOT_SERVING for good, and every Watch stream ends (OK) after saying so.
  void Shutdown();
  // Whether the whole server ("") is SERVING.
  bool IsServing();

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request) override;

 private:
  friend class HealthWatcher;
  void Unregister(HealthWatcher* watcher);

  RpcSeries check_series_;
  RpcSeries watch_series_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Status> status_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<HealthWatcher*> watchers_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fanout::server

#endif  // FANOUT_SERVER_HEALTH_SERVICE_H_
