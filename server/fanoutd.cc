#include "server/fanoutd.h"

#include <grpc/grpc.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/generic/async_generic_service.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cache/l1/wtinylfu_cache.h"
#include "cache/origins/file_origin.h"
#include "cache/origins/grpc_origin.h"
#include "cache/tiers/redis/redis_fill_lease.h"
#include "cache/tiers/redis/redis_tier.h"
#include "cache/tiers/rocksdb/rocksdb_tier.h"
#include "common/address.h"
#include "common/cpu_quota.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace fanout::server {
namespace {

absl::StatusOr<std::unique_ptr<cache::Origin>> MakeOrigin(const Config& config, BlockingPool* io,
                                                          Executor* executor) {
  switch (config.origin.type) {
    case OriginSection::Type::kFile: {
      cache::FileOriginOptions o;
      o.root = config.origin.file_root;
      o.symlinks = config.origin.file_symlinks;
      o.max_value_bytes = config.limits.max_value_bytes;
      return cache::NewFileOrigin(o, io, executor);
    }
    case OriginSection::Type::kGrpc: {
      cache::GrpcOriginOptions o;
      o.targets = config.origin.grpc_targets;
      if (o.targets.empty()) o.targets.push_back(config.origin.grpc_target);
      o.max_value_bytes = config.limits.max_value_bytes;
      o.policy = config.origin.grpc_policy;
      o.hedge_after = config.origin.grpc_hedge_after;
      o.max_key_bytes = config.limits.max_key_bytes;
      o.max_namespace_bytes = config.limits.max_namespace_bytes;
      o.executor = executor;
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

// The shared Redis tier (cache.l2), or nullptr when no address is set. An
// unreachable Redis is not an error (the tier answers Unavailable until it
// answers); a refused password or db is. Its answers of more than
// cache.l2.inline_answer_bytes go to `executor`.
absl::StatusOr<std::unique_ptr<cache::RedisTier>> MakeL2(const L2Section& l2, Executor* executor) {
  if (l2.redis.empty()) return nullptr;
  cache::RedisClientOptions o;
  ASSIGN_OR_RETURN(o.address, cache::ParseRedisAddress(l2.redis));
  ASSIGN_OR_RETURN(o.password, ResolveL2Password(l2));
  o.db = l2.db;
  o.command_timeout = l2.timeout;
  o.connections = l2.connections;
  o.name = "fanout-redis";
  cache::RedisTierOptions t;
  t.key_prefix = l2.key_prefix;
  t.executor = executor;
  t.inline_bytes = l2.inline_answer_bytes;
  absl::StatusOr<std::unique_ptr<cache::RedisTier>> tier = cache::NewRedisTier(o, t, Clock::Real());
  if (!tier.ok()) {
    const absl::StatusCode code = tier.status().code();
    const char* key = code == absl::StatusCode::kPermissionDenied     ? "cache.l2.password"
                      : code == absl::StatusCode::kInvalidArgument    ? "cache.l2.db"
                      : code == absl::StatusCode::kFailedPrecondition ? "cache.l2.redis"
                                                                      : "cache.l2";
    return absl::InvalidArgumentError(absl::StrCat(key, ": ", tier.status().message()));
  }
  FANOUT_LOG(INFO) << "L2: Redis at " << o.address.ToString() << " (db " << l2.db
                   << ", key prefix \"" << l2.key_prefix << "\""
                   << (l2.lease ? "" : ", no fill lease") << ")";
  return tier;
}

// The fill lease on L2's Redis (cache.l2.lease), sharing the tier's client.
std::unique_ptr<cache::FillLease> MakeFillLease(const L2Section& l2, const cache::RedisTier& tier,
                                                Executor* executor) {
  if (!l2.lease) return nullptr;
  cache::RedisFillLeaseOptions o;
  o.key_prefix = l2.key_prefix;
  o.executor = executor;
  return std::make_unique<cache::RedisFillLease>(tier.client(), o, Clock::Real());
}

// The read path's options from cache.* and origin.timeout.
cache::ReadPathOptions ReadPathOptionsFor(const Config& config) {
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
  rp.deadline_margin = config.cache.deadline_margin;
  rp.xfetch_beta = config.cache.xfetch_beta;
  // The holder's write to Redis after its fetch, and a waiter's last poll.
  rp.lease_margin = std::max(absl::Milliseconds(100), 2 * config.cache.l2.timeout);
  return rp;
}

// Replaces the port of "host:port" with `port` (for listen addresses on :0).
std::string WithPort(const std::string& listen, int port) {
  if (absl::StartsWith(listen, "unix:") || absl::StartsWith(listen, "unix-abstract:")) {
    return listen;
  }
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

// Why a listen address cannot be bound, found by trying it ourselves (gRPC
// only says that it failed). Empty when our own attempt works.
std::string ListenFailure(const Address& address) {
  if (address.kind == Address::Kind::kUnixAbstract) return "";
  if (address.kind == Address::Kind::kUnix) {
    struct stat st;
    if (::stat(address.path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
      return "the path exists and is not a socket";
    }
    return "";
  }
  const HostPort& hp = address.hosts.front();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(hp.port);
  if (int rc =
          ::getaddrinfo(hp.host.empty() ? nullptr : hp.host.c_str(), port.c_str(), &hints, &found);
      rc != 0) {
    return ::gai_strerror(rc);
  }
  std::string failure;
  for (addrinfo* ai = found; ai != nullptr && failure.empty(); ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));  // as gRPC does
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) failure = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return failure;
}

// gRPC replaces an existing Unix socket file when it binds, so a second
// server on the same path would take it over from a running one. Refuse
// when something accepts connections there.
absl::Status CheckUnixSocketFree(const Address& address, const std::string& listen) {
  if (address.kind != Address::Kind::kUnix) return absl::OkStatus();
  struct stat st;
  if (::stat(address.path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return absl::OkStatus();
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::OkStatus();
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::strncpy(sun.sun_path, address.path.c_str(), sizeof(sun.sun_path) - 1);
  const bool in_use = ::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof(sun)) == 0;
  ::close(fd);
  if (!in_use) return absl::OkStatus();  // a stale file: gRPC replaces it
  return absl::UnavailableError(
      absl::StrCat("cannot listen on \"", listen, "\": a server is already listening there"));
}

// Keeps one reference to gRPC's process-wide callback completion queue for
// the rest of the process. In gRPC 1.51 (Linux, epoll1: no background
// poller) every callback-API server and every channel that makes a callback
// call holds a reference to one shared queue polled by "nexting" threads
// (src/cpp/common/completion_queue_cc.cc, CallbackAlternativeCQ). When the
// count drops to zero the queue is shut down, its threads joined and the
// queue deleted. If that last reference is dropped on one of those threads
// (a channel whose last owner is a callback's capture, released when the
// callback returns), the thread "joins" itself (pthread_join fails with
// EDEADLK, unchecked), deletes the queue, and then polls the deleted queue:
// "assertion failed: prior > 0" in grpc_cq_internal_unref, or a
// use-after-free. Holding a reference that is never dropped keeps the count
// above zero, so the queue and its threads live until exit. The holder is
// a server with no listening port (no socket, no thread of its own).
void HoldGrpcCallbackQueue() {
  static grpc::Server* const holder = [] {
    static grpc::CallbackGenericService service;  // answers nothing: no port
    grpc::ServerBuilder builder;
    builder.RegisterCallbackGenericService(&service);
    return builder.BuildAndStart().release();
  }();
  (void)holder;
}

// Starts the admin endpoint, or returns null when admin.listen is empty or
// the default address is taken (an address the file names must be bound).
absl::StatusOr<std::unique_ptr<AdminServer>> StartAdmin(
    const Config& config, std::string config_page,
    std::vector<const prometheus::Collectable*> collectables, HealthService* health) {
  if (config.admin.listen.empty()) return nullptr;
  AdminSources sources;
  sources.ready = [health] { return health->IsServing(); };
  sources.config_yaml = std::move(config_page);
  sources.collectables = std::move(collectables);
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
  absl::StatusOr<Address> listen = ParseListenAddress(config.server.listen);
  if (!listen.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("server.listen: ", listen.status().message()));
  }
  RETURN_IF_ERROR(CheckUnixSocketFree(*listen, config.server.listen));
  HoldGrpcCallbackQueue();

  SetLogFormat(config.log_format);
  SetLogRateLimit(config.log_rate_limit);
  std::unique_ptr<Fanoutd> d(new Fanoutd(config));
  int threads = config.server.threads;
  if (threads == 0) {
    // The CPUs of the cgroup quota (a container's limit), not the host's.
    const double cpus = AvailableCpus();
    threads = std::max(2, static_cast<int>(std::ceil(cpus)));
    FANOUT_LOG(INFO) << "executor: " << threads << " threads for " << cpus << " CPUs available";
  }
  d->executor_ = ThreadPoolExecutor::Create(threads, "fanout");
  if (config.origin.type == OriginSection::Type::kFile) {
    d->io_pool_ = ThreadBlockingPool::Create({.threads = config.origin.file_io_threads,
                                              .max_queued = config.origin.file_max_queued_reads,
                                              .name = "fanout-file-io"});
  }
  ASSIGN_OR_RETURN(d->origin_, MakeOrigin(config, d->io_pool_.get(), d->executor_.get()));

  cache::L1Options l1;
  l1.capacity_bytes = config.cache.l1_capacity;
  l1.max_entry_fraction = config.cache.l1_max_entry_fraction;
  cache::ReadPathOptions rp = ReadPathOptionsFor(config);
  rp.metrics = &d->metrics_;
  std::vector<std::unique_ptr<cache::Tier>> lower;  // L2 first, then L3
  ASSIGN_OR_RETURN(std::unique_ptr<cache::RedisTier> l2,
                   MakeL2(config.cache.l2, d->executor_.get()));
  std::unique_ptr<cache::FillLease> lease;
  ComponentCollector::Sources sources;
  if (l2 != nullptr) {
    lease = MakeFillLease(config.cache.l2, *l2, d->executor_.get());
    sources.tiers.emplace_back("l2", l2.get());
    sources.redis = l2.get();
    lower.push_back(std::move(l2));
  }
  cache::RocksDbTier* l3 = AddSurvivalTier(config, &lower);
  if (l3 != nullptr) {
    sources.tiers.emplace_back("l3", l3);
    sources.l3 = l3;
  }
  ASSIGN_OR_RETURN(d->invalidation_, InvalidationSetup::Prepare(config, &lower));
  // Without a bus nothing can be missed: L1 hits skip the guard's check.
  if (d->invalidation_->has_bus()) rp.link_guard = d->invalidation_->guard();
  d->read_path_ =
      std::make_unique<cache::ReadPath>(rp, cache::NewWTinyLfuCache(l1), std::move(lower),
                                        d->origin_.get(), d->executor_.get(), std::move(lease));
  if (l3 != nullptr && config.cache.l3_warm_l1) {
    if (d->invalidation_->has_bus()) {
      // What L3 kept may have been invalidated while this pod was down.
      FANOUT_LOG(INFO) << "cache.l3.warm_l1 skipped: with cache.l2 set, L3's copies serve only "
                          "as fallbacks until refetched";
    } else {
      WarmL1FromL3(*l3, d->read_path_->l1(), config.cache.l1_capacity);
    }
  }
  d->invalidation_->Start(d->read_path_.get(), d->origin_.get(), d->executor_.get());

  ASSIGN_OR_RETURN(
      std::unique_ptr<router::Router> router,
      router::Router::Create(config.routes, d->executor_.get(), {.metrics = &d->metrics_}));
  d->routers_ = std::make_unique<RouterSlot>(std::move(router));

  d->health_ = std::make_unique<HealthService>(&d->metrics_);
  d->sidecar_ = std::make_unique<SidecarService>(
      config, d->read_path_.get(), d->routers_.get(), &d->admission_, d->executor_.get(),
      &d->metrics_, d->invalidation_->invalidator(), d->invalidation_->watch());
  d->unknown_methods_ = std::make_unique<UnknownMethodService>(&d->metrics_);

  d->reloads_ = std::make_unique<CounterVec>(
      &d->metrics_, "fanout_config_reloads_total",
      "Configuration reloads (SIGHUP, a change of the file) by result: applied, unchanged, "
      "rejected (invalid: the running configuration stays)",
      MetricLabels{}, "result", std::vector<std::string>{"applied", "unchanged", "rejected"});
  d->restart_required_ = d->metrics_.GetGauge(
      "fanout_config_restart_required",
      "1 when the last reload was refused because it changed a key that needs a restart");
  d->last_reload_ok_ = d->metrics_.GetGauge(
      "fanout_config_last_reload_successful",
      "1 unless the last reload was rejected (then the running configuration is older than the "
      "file)");
  d->last_reload_ok_->Set(1);

  d->registry_collector_ = std::make_unique<RegistryCollector>(&d->metrics_);
  sources.read_path = d->read_path_.get();
  sources.l1 = &d->read_path_->l1();
  sources.l1_capacity_bytes = config.cache.l1_capacity;
  sources.invalidator = d->invalidation_->invalidator();
  sources.watch = d->invalidation_->watch();
  sources.push = d->invalidation_->push();
  sources.router = [slot = d->routers_.get()] {
    return std::shared_ptr<const router::Router>(slot->Get());
  };
  d->components_ = std::make_unique<ComponentCollector>(std::move(sources));
  ASSIGN_OR_RETURN(d->admin_, StartAdmin(config, ConfigPage(config),
                                         {d->registry_collector_.get(), d->components_.get()},
                                         d->health_.get()));

  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Methods no service declares: counted as rpc="unknown", UNIMPLEMENTED.
  builder.RegisterCallbackGenericService(d->unknown_methods_.get());
  if (!config.server.reflection) builder.SetOption(std::make_unique<WithoutReflection>());
  // gRPC sets SO_REUSEPORT by default: a second server on a busy port would
  // start and quietly take a share of the connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetContextAllocator(d->calls_.NewContextAllocator());
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
    const std::string why = ListenFailure(*listen);
    return absl::UnavailableError(absl::StrCat("cannot listen on \"", config.server.listen, "\"",
                                               why.empty() ? "" : ": ", why));
  }
  d->address_ = WithPort(config.server.listen, port);
  d->health_->SetServing(true);
  return d;
}

Config Fanoutd::config() const {
  absl::MutexLock l(&config_mu_);
  return config_;
}

std::string Fanoutd::ConfigPage(const Config& config) {
  absl::StatusOr<std::string> redacted = RedactConfigYaml(config.document);
  return absl::StrCat("# ", config.document_source,
                      ", secrets redacted; command-line flags override it and are not shown\n",
                      redacted.ok() ? *redacted : "");
}

void Fanoutd::ReleaseRetiredRouters() {
  // use_count is exact here: only calls (which copy the pointer while the
  // router is installed) could raise it, and this one was swapped out.
  std::erase_if(retired_routers_,
                [](const std::shared_ptr<router::Router>& r) { return r.use_count() == 1; });
}

Fanoutd::ReloadResult Fanoutd::Reload(absl::StatusOr<Config> next, absl::string_view source) {
  using Outcome = ReloadResult::Outcome;
  absl::MutexLock reload(&reload_mu_);
  ReleaseRetiredRouters();
  ReloadResult result;
  auto reject = [&](absl::Status error) {
    result.outcome = Outcome::kRejected;
    result.error = std::move(error);
    reloads_->Increment(2);
    last_reload_ok_->Set(0);
    FANOUT_LOG(ERROR) << "configuration reload (" << source << ") rejected, the running "
                      << "configuration stays: " << result.error.message();
    return result;
  };
  if (!next.ok()) return reject(next.status());

  const Config running = config();
  const std::map<std::string, std::string> before = ConfigSettings(running);
  const std::map<std::string, std::string> after = ConfigSettings(*next);
  std::set<std::string> keys;
  for (const auto& [key, value] : before) keys.insert(key);
  for (const auto& [key, value] : after) keys.insert(key);
  bool routes_changed = false;
  for (const std::string& key : keys) {
    auto b = before.find(key);
    auto a = after.find(key);
    if (b != before.end() && a != after.end() && b->second == a->second) continue;
    if (IsReloadableKey(key)) {
      result.applied.push_back(key);
      routes_changed = routes_changed || absl::StartsWith(key, "routes.");
    } else {
      result.restart.push_back(key);
    }
  }

  // A file that changes what only a restart can change is refused whole:
  // the running configuration is then either the old one or the file's.
  if (!result.restart.empty()) {
    restart_required_->Set(1);
    return reject(absl::FailedPreconditionError(
        absl::StrCat(absl::StrJoin(result.restart, ", "),
                     result.restart.size() == 1 ? " changed and needs" : " changed and need",
                     " a restart; nothing was applied (restart fanoutd, or put the running "
                     "value back)")));
  }

  // Everything that can fail comes first: a rejected reload changes nothing.
  std::shared_ptr<router::Router> router;
  if (routes_changed) {
    absl::StatusOr<std::unique_ptr<router::Router>> made =
        router::Router::Create(next->routes, executor_.get(), {.metrics = &metrics_});
    if (!made.ok()) return reject(made.status());
    router = *std::move(made);
  }

  // What the running configuration becomes: the new values of the keys
  // that reload, the running ones of the others.
  Config merged = running;
  merged.server.shutdown_delay = next->server.shutdown_delay;
  merged.server.drain_timeout = next->server.drain_timeout;
  merged.log_level = next->log_level;
  merged.log_format = next->log_format;
  merged.log_rate_limit = next->log_rate_limit;
  const uint64_t max_value_bytes = merged.limits.max_value_bytes;
  merged.limits = next->limits;
  merged.limits.max_value_bytes = max_value_bytes;
  merged.cache.ttl = next->cache.ttl;
  merged.cache.refresh_ahead = next->cache.refresh_ahead;
  merged.cache.max_stale = next->cache.max_stale;
  merged.cache.stale_ttl = next->cache.stale_ttl;
  merged.cache.negative_ttl = next->cache.negative_ttl;
  merged.cache.retry_backoff = next->cache.retry_backoff;
  merged.cache.max_retry_backoff = next->cache.max_retry_backoff;
  merged.cache.max_background_refreshes = next->cache.max_background_refreshes;
  merged.routes = next->routes;
  merged.document = next->document;
  merged.document_source = next->document_source;

  SetLogLevel(merged.log_level);
  SetLogFormat(merged.log_format);
  SetLogRateLimit(merged.log_rate_limit);
  sidecar_->SetLimits(merged.limits);
  admission_.SetMax(merged.limits.max_in_flight);
  read_path_->Retune(ReadPathOptionsFor(merged));
  if (router != nullptr) {
    retired_routers_.push_back(routers_->Swap(std::move(router)));
    ReleaseRetiredRouters();
  }
  {
    absl::MutexLock l(&config_mu_);
    config_ = merged;
  }
  if (admin_ != nullptr) admin_->SetConfigYaml(ConfigPage(merged));
  restart_required_->Set(0);
  last_reload_ok_->Set(1);

  result.outcome = result.applied.empty() ? Outcome::kUnchanged : Outcome::kApplied;
  reloads_->Increment(result.outcome == Outcome::kApplied ? 0 : 1);
  if (result.outcome == Outcome::kApplied) {
    FANOUT_LOG(INFO) << "configuration reloaded (" << source << ") from " << next->document_source
                     << ": applied " << absl::StrJoin(result.applied, ", ");
  } else {
    FANOUT_LOG(INFO) << "configuration reload (" << source << ") from " << next->document_source
                     << ": unchanged";
  }
  return result;
}

void Fanoutd::Shutdown(absl::Duration delay) {
  // Stage 1: still serving, but telling health checkers not to send more.
  health_->SetServing(false);
  bool now;
  {
    absl::MutexLock l(&shutdown_mu_);
    shutdown_mu_.AwaitWithTimeout(absl::Condition(&shutdown_now_), delay);
    now = shutdown_now_;
  }
  // Stage 2: the drain. Watch streams end now: they never finish by themselves.
  health_->Shutdown();
  invalidation_->Shutdown();
  admission_.Close();
  Drain(now ? absl::Now() : absl::Now() + config().server.drain_timeout);
}

void Fanoutd::ShutdownNow() {
  {
    absl::MutexLock l(&shutdown_mu_);
    shutdown_now_ = true;
  }
  calls_.Interrupt();
}

void Fanoutd::Drain(absl::Time deadline) {
  // Start gRPC's shutdown here (listeners close, clients get GOAWAY), so
  // that the connections closed below cannot be replaced by new ones;
  // Server::Shutdown joins the same shutdown (gRPC allows several waiters).
  grpc_completion_queue* started = grpc_completion_queue_create_for_next(nullptr);
  grpc_server_shutdown_and_notify(server_->c_server(), started, this);

  // Once no call is left (or on ShutdownNow), close the connections that
  // remain. A client with nothing in flight would otherwise hold the
  // shutdown until it acts on the GOAWAY: up to 5 s for a gRPC C++ client
  // whose process is not polling (its backup poller's period), up to
  // 20 s (gRPC's wait for the GOAWAY's ping) for one that ignores it.
  std::atomic<bool> done{false};
  std::thread closer([this, deadline, &done] {
    calls_.WaitIdle(deadline);
    if (!done.load()) grpc_server_cancel_all_calls(server_->c_server());
  });
  server_->Shutdown(absl::ToChronoTime(deadline));
  done.store(true);
  calls_.Interrupt();
  closer.join();

  grpc_event ev = grpc_completion_queue_next(started, gpr_inf_future(GPR_CLOCK_REALTIME), nullptr);
  (void)ev;  // our shutdown tag: the server has shut down
  grpc_completion_queue_shutdown(started);
  while (grpc_completion_queue_next(started, gpr_inf_future(GPR_CLOCK_REALTIME), nullptr).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(started);
}

void Fanoutd::Wait() { server_->Wait(); }

Fanoutd::~Fanoutd() {
  admin_.reset();  // it reads the components below
  if (server_ != nullptr) {
    server_->Shutdown(absl::ToChronoTime(absl::Now()));
    server_->Wait();
  }
  // Each part goes after the ones that call into it: the server (its calls
  // have ended), then the read path (its background refreshes and tier
  // stores have no call waiting: it cancels their origin fetches and waits
  // for them), the origin, the router, and last the executor they run on.
  if (read_path_ != nullptr) read_path_->Shutdown(config().origin.timeout);
  invalidation_.reset();  // calls into the read path
  read_path_.reset();
  origin_.reset();
  routers_.reset();
  {
    absl::MutexLock l(&reload_mu_);
    retired_routers_.clear();
  }
  // Reads still queued or running answer through the executor.
  io_pool_.reset();
  executor_.reset();
}

}  // namespace fanout::server
