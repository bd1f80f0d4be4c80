// fanout.v1.Sidecar on the gRPC callback API.
//
// Threading: gRPC owns the callback threads. Handlers validate, admit, start
// the work and return; the work's completion calls Finish on whatever thread
// it completes on. No handler blocks or waits.
#ifndef FANOUT_SERVER_SIDECAR_SERVICE_H_
#define FANOUT_SERVER_SIDECAR_SERVICE_H_

#include <memory>

#include "cache/invalidator.h"
#include "cache/read_path.h"
#include "common/executor.h"
#include "common/metrics.h"
#include "fanout/v1/sidecar.grpc.pb.h"
#include "router/router.h"
#include "server/admission.h"
#include "server/config.h"
#include "server/watch_service.h"
#include "server/live_config.h"
#include "server/rpc_metrics.h"

namespace fanout::server {

class MemoryReleaser;

class SidecarService final : public fanout::v1::Sidecar::CallbackService {
 public:
  // `read_path`, `routers`, `admission`, `executor` (for giving memory
  // back after large responses; may be null) and `metrics` (where calls are
  // counted; null = nowhere): not owned; must outlive the service.
  // Invalidate goes through `invalidator` (to every pod) when it is set, else
  // to `read_path` alone; Watch is served by `watch` (UNIMPLEMENTED without).
  // Not owned; must outlive the service.
  SidecarService(const Config& config, cache::ReadPath* read_path, RouterSlot* routers,
                 Admission* admission, Executor* executor, Metrics* metrics = nullptr,
                 cache::Invalidator* invalidator = nullptr, WatchService* watch = nullptr);
  ~SidecarService() override;

  // Calls that start from now on check these limits (a reload).
  void SetLimits(const LimitsSection& limits) { limits_.Store(limits); }

  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context,
                                const fanout::v1::GetRequest* request,
                                fanout::v1::GetResponse* response) override;
  grpc::ServerUnaryReactor* BatchGet(grpc::CallbackServerContext* context,
                                     const fanout::v1::BatchGetRequest* request,
                                     fanout::v1::BatchGetResponse* response) override;
  grpc::ServerUnaryReactor* Invalidate(grpc::CallbackServerContext* context,
                                       const fanout::v1::InvalidateRequest* request,
                                       fanout::v1::InvalidateResponse* response) override;
  grpc::ServerUnaryReactor* Route(grpc::CallbackServerContext* context,
                                  const fanout::v1::RouteRequest* request,
                                  fanout::v1::RouteResponse* response) override;
  grpc::ServerWriteReactor<fanout::v1::WatchEvent>* Watch(
      grpc::CallbackServerContext* context, const fanout::v1::WatchRequest* request) override;

 private:
  // Continues `status` (the checks particular to the call) with the checks
  // every read shares, then takes `weight` admission slots into *ticket.
  absl::Status AdmitRead(absl::Status status, const LimitsSection& limits, absl::string_view ns,
                         int64_t max_stale_ms, int64_t weight, Admission::Ticket* ticket) const;

  const Config config_;
  LiveLimits limits_;  // config_.limits until a reload
  cache::ReadPath* const read_path_;
  RouterSlot* const routers_;
  Admission* const admission_;
  const std::unique_ptr<MemoryReleaser> releaser_;
  const std::unique_ptr<SidecarMetrics> metrics_;
  cache::Invalidator* const invalidator_;
  WatchService* const watch_;
};

}  // namespace fanout::server

#endif  // FANOUT_SERVER_SIDECAR_SERVICE_H_
