#include "server/fanoutd.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>

#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cache/l1/wtinylfu_cache.h"
#include "cache/origins/file_origin.h"
#include "cache/origins/grpc_origin.h"
#include "cache/tiers/rocksdb_tier.h"
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

// The survival tier (L3), appended last to `lower` when cache.l3.path is set.
// A directory that cannot be used at all is logged and fanoutd runs without
// L3: a restart must never loop on it. Returns the tier (owned by `lower`).
cache::RocksDbTier* AddSurvivalTier(const Config& config,
                                    std::vector<std::unique_ptr<cache::Tier>>* lower) {
  if (config.cache.l3_path.empty()) return nullptr;
  cache::RocksDbTierOptions o;
  o.path = config.cache.l3_path;
  o.max_bytes = config.cache.l3_max_bytes;
  o.sync = config.cache.l3_sync;
  absl::StatusOr<std::unique_ptr<cache::RocksDbTier>> tier = cache::RocksDbTier::Open(o);
  if (!tier.ok()) {
    FANOUT_LOG(ERROR) << "running without L3: " << tier.status().message();
    return nullptr;
  }
  const cache::RocksDbTierState state = (*tier)->State();
  FANOUT_LOG(INFO) << "L3 at " << o.path << (state.read_only ? " (read-only)" : "") << ", "
                   << state.sst_bytes << " bytes on disk";
  cache::RocksDbTier* l3 = tier->get();
  lower->push_back(*std::move(tier));
  return l3;
}

// cache.l3.warm_l1: copies what L3 holds that is not yet expired into L1,
// before the server reports SERVING. Bounded: half of L1's byte budget (the
// rest is left for what traffic brings) and kWarmTime.
constexpr absl::Duration kWarmTime = absl::Seconds(10);
void WarmL1FromL3(const cache::RocksDbTier& l3, cache::L1Cache& l1, uint64_t l1_capacity) {
  const absl::Time start = absl::Now();
  const uint64_t budget = l1_capacity / 2;
  uint64_t entries = 0;
  absl::Status s = l3.ForEach(
      [&](absl::string_view key, const cache::Entry& e) {
        if (start >= e.expires_at) return true;  // stale: L3 still answers it
        if (l1.Insert(key, e)) ++entries;
        return l1.Stats().bytes < budget;
      },
      start + kWarmTime);
  FANOUT_LOG(INFO) << "warmed L1 from L3: " << entries << " entries, " << l1.Stats().bytes
                   << " bytes in " << absl::FormatDuration(absl::Now() - start)
                   << (s.ok() ? "" : absl::StrCat(" (", s.message(), ")"));
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
  std::vector<std::unique_ptr<cache::Tier>> lower;
  cache::RocksDbTier* l3 = AddSurvivalTier(config, &lower);
  d->read_path_ = std::make_unique<cache::ReadPath>(
      rp, cache::NewWTinyLfuCache(l1), std::move(lower), d->origin_.get(), Clock::Real());
  if (l3 != nullptr && config.cache.l3_warm_l1) {
    WarmL1FromL3(*l3, d->read_path_->l1(), config.cache.l1_capacity);
  }

  ASSIGN_OR_RETURN(d->router_, router::Router::Create(config.routes, d->executor_.get()));

  d->health_ = std::make_unique<HealthService>();
  d->sidecar_ = std::make_unique<SidecarService>(config, d->read_path_.get(), d->router_.get(),
                                                 &d->admission_);

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
  // The executor goes before the services it calls back into; the router
  // (whose calls have all ended with the server) before the executor.
  router_.reset();
  executor_.reset();
}

}  // namespace fanout::server
