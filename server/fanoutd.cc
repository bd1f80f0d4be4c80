#include "server/fanoutd.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>

#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cache/l1/wtinylfu_cache.h"
#include "cache/origins/file_origin.h"
#include "cache/origins/grpc_origin.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace fanout::server {
namespace {

absl::StatusOr<std::unique_ptr<cache::Origin>> MakeOrigin(const Config& config,
                                                          Executor* executor) {
  switch (config.origin.type) {
    case OriginSection::Type::kFile: {
      cache::FileOriginOptions o;
      o.root = config.origin.file_root;
      o.max_value_bytes = config.limits.max_value_bytes;
      return cache::NewFileOrigin(o, executor);
    }
    case OriginSection::Type::kGrpc: {
      cache::GrpcOriginOptions o;
      o.target = config.origin.grpc_target;
      o.max_value_bytes = config.limits.max_value_bytes;
      return cache::NewGrpcOrigin(o);
    }
  }
  return absl::InvalidArgumentError("origin.type: unknown");
}

// Replaces the port of "host:port" with `port` (for listen addresses on :0).
std::string WithPort(const std::string& listen, int port) {
  if (absl::StartsWith(listen, "unix:")) return listen;
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return listen;
  return absl::StrCat(listen.substr(0, colon), ":", port);
}

// Linking the reflection library registers its plugin with every
// ServerBuilder; this option takes it out again when reflection is off.
class WithoutReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    std::erase_if(*plugins, [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
      return p->name() == "proto_server_reflection";
    });
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Fanoutd>> Fanoutd::Start(const Config& config) {
  std::unique_ptr<Fanoutd> d(new Fanoutd(config));
  int threads = config.server.threads;
  if (threads == 0) threads = std::max(2u, std::thread::hardware_concurrency());
  d->executor_ = ThreadPoolExecutor::Create(threads, "fanout");
  ASSIGN_OR_RETURN(d->origin_, MakeOrigin(config, d->executor_.get()));

  cache::L1Options l1;
  l1.capacity_bytes = config.cache.l1_capacity;
  l1.max_entry_fraction = config.cache.l1_max_entry_fraction;
  cache::ReadPathOptions rp;
  rp.ttl = config.cache.ttl;
  rp.refresh_ahead = config.cache.refresh_ahead;
  rp.stale_ttl = config.cache.stale_ttl;
  rp.default_max_stale = config.cache.max_stale;
  rp.origin_timeout = config.origin.timeout;
  rp.negative_ttl = config.cache.negative_ttl;
  rp.retry_backoff = config.cache.retry_backoff;
  rp.max_retry_backoff = config.cache.max_retry_backoff;
  rp.max_background_refreshes = config.cache.max_background_refreshes;
  d->read_path_ = std::make_unique<cache::ReadPath>(rp, cache::NewWTinyLfuCache(l1),
                                                    std::vector<std::unique_ptr<cache::Tier>>{},
                                                    d->origin_.get(), d->executor_.get());

  ASSIGN_OR_RETURN(d->router_, router::Router::Create(config.routes, d->executor_.get()));

  d->health_ = std::make_unique<HealthService>();
  d->sidecar_ = std::make_unique<SidecarService>(config, d->read_path_.get(), d->router_.get(),
                                                 &d->admission_, d->executor_.get());

  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  if (!config.server.reflection) builder.SetOption(std::make_unique<WithoutReflection>());
  int port = 0;
  builder.AddListeningPort(config.server.listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(d->sidecar_.get());
  builder.RegisterService(d->health_.get());
  // Requests carry keys, not values; replies may carry a batch of values.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<uint64_t>(64ull << 20, config.limits.max_value_bytes + (1 << 20))));
  builder.SetMaxSendMessageSize(-1);
  d->server_ = builder.BuildAndStart();
  if (d->server_ == nullptr || port == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("server.listen: cannot listen on \"", config.server.listen, "\""));
  }
  d->address_ = WithPort(config.server.listen, port);
  d->health_->SetServing(true);
  return d;
}

void Fanoutd::Shutdown() {
  health_->Shutdown();
  admission_.Close();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + config_.server.drain_timeout));
}

void Fanoutd::Wait() { server_->Wait(); }

Fanoutd::~Fanoutd() {
  if (server_ != nullptr) {
    server_->Shutdown(absl::ToChronoTime(absl::Now()));
    server_->Wait();
  }
  // Each part goes after the ones that call into it: the server (its calls
  // have ended), then the read path (its background refreshes and tier
  // stores have no call waiting: it cancels their origin fetches and waits
  // for them), the origin, the router, and last the executor they run on.
  if (read_path_ != nullptr) read_path_->Shutdown(config_.origin.timeout);
  read_path_.reset();
  origin_.reset();
  router_.reset();
  executor_.reset();
}

}  // namespace fanout::server
