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

// Starts the admin endpoint, or returns null when admin.listen is empty or
// the default address is taken (an address the file names must be bound).
absl::StatusOr<std::unique_ptr<AdminServer>> StartAdmin(const Config& config, Metrics* metrics,
                                                        HealthService* health) {
  if (config.admin.listen.empty()) return nullptr;
  AdminSources sources;
  sources.ready = [health] { return health->IsServing(); };
  absl::StatusOr<std::string> redacted = RedactConfigYaml(config.document);
  sources.config_yaml =
      absl::StrCat("# ", config.document_source,
                   ", secrets redacted; command-line flags override it and are not shown\n",
                   redacted.ok() ? *redacted : "");
  sources.collectables = metrics->collectables();
  AdminServerOptions options;
  options.listen = config.admin.listen;
  absl::StatusOr<std::unique_ptr<AdminServer>> admin =
      AdminServer::Start(options, std::move(sources));
  if (!admin.ok() && !config.admin.listen_set) {
    FANOUT_LOG(WARNING) << "admin endpoint off: " << admin.status().message()
                        << " (set admin.listen to a free address, or to \"\" for none)";
    return nullptr;
  }
  if (admin.ok()) FANOUT_LOG(INFO) << "admin endpoint on http://" << (*admin)->address();
  return admin;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Fanoutd>> Fanoutd::Start(const Config& config) {
  SetLogFormat(config.log_format);
  SetLogRateLimit(config.log_rate_limit);
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
  d->read_path_ = std::make_unique<cache::ReadPath>(rp, cache::NewWTinyLfuCache(l1),
                                                    std::vector<std::unique_ptr<cache::Tier>>{},
                                                    d->origin_.get(), Clock::Real());

  ASSIGN_OR_RETURN(d->router_, router::Router::Create(config.routes, d->executor_.get()));

  d->health_ = std::make_unique<HealthService>();
  d->sidecar_ = std::make_unique<SidecarService>(config, d->read_path_.get(), d->router_.get(),
                                                 &d->admission_);

  d->metrics_ = std::make_unique<Metrics>(ComponentCollector::Sources{
      .read_path = d->read_path_.get(),
      .l1 = &d->read_path_->l1(),
      .l1_capacity_bytes = config.cache.l1_capacity,
      .tiers = {},
      .router = d->router_.get()});
  ASSIGN_OR_RETURN(d->admin_, StartAdmin(config, d->metrics_.get(), d->health_.get()));

  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Counting calls costs every call (gRPC's interceptor path): only when
  // someone can read the counts.
  if (d->admin_ != nullptr) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> counters;
    counters.push_back(d->metrics_->rpc().NewInterceptorFactory());
    builder.experimental().SetInterceptorCreators(std::move(counters));
  }
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
  admin_.reset();  // it reads the components below
  if (server_ != nullptr) {
    server_->Shutdown(absl::ToChronoTime(absl::Now()));
    server_->Wait();
  }
  // The executor goes before the services it calls back into; the router
  // (whose calls have all ended with the server) before the executor.
  router_.reset();
  executor_.reset();
}

}  // namespace fanout::server
