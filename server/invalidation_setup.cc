#include "server/invalidation_setup.h"

#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "cache/tiers/redis/redis_bus.h"
#include "cache/tiers/redis/redis_tier.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace fanout::server {
namespace {

std::string HostName() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "fanout";
  return buf;
}

}  // namespace

InvalidationSetup::InvalidationSetup(const Config& config)
    : config_(config),
      guard_(std::make_unique<cache::LinkGuard>(config.invalidation.max_local_ttl)) {}

absl::StatusOr<std::unique_ptr<InvalidationSetup>> InvalidationSetup::Prepare(
    const Config& config, std::vector<std::unique_ptr<cache::Tier>>* lower) {
  std::unique_ptr<InvalidationSetup> s(new InvalidationSetup(config));
  if (lower->empty() || lower->front()->id() != cache::TierId::kL2) return s;

  // The bus reads the Redis of L2 on a connection of its own.
  auto* redis = static_cast<cache::RedisTier*>(lower->front().get());
  cache::RedisClientOptions reader = redis->client()->options();
  cache::RedisBusOptions o;
  o.key_prefix = config.cache.l2.key_prefix;
  o.pod = config.invalidation.pod.empty() ? HostName() : config.invalidation.pod;
  o.max_len = config.invalidation.stream_max_len;
  o.heartbeat = config.invalidation.heartbeat;
  o.dead_after = config.invalidation.dead_after;
  // Longer than any fill: a fill's deadlines add up to origin.timeout per
  // tier and the origin.
  o.fence_ttl = std::max(absl::Minutes(1), config.origin.timeout * 20);
  s->applied_ = std::make_shared<cache::AppliedLog>(Clock::Real());
  absl::StatusOr<std::unique_ptr<cache::RedisBus>> bus =
      cache::RedisBus::Start(redis->client(), reader, redis, s->applied_, o);
  if (!bus.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("invalidation: ", bus.status().message()));
  }
  s->bus_ = *std::move(bus);
  FANOUT_LOG(INFO) << "invalidation bus: stream " << config.cache.l2.key_prefix << "inv as "
                   << s->bus_->id();
  std::shared_ptr<cache::RedisClient> client = redis->client();
  lower->front() = cache::NewFencedTier(std::move(lower->front()), std::move(client),
                                        config.cache.l2.key_prefix, s->applied_, o.fence_ttl);
  if (lower->back()->id() == cache::TierId::kL3) {
    lower->back() = cache::NewGuardedTier(std::move(lower->back()), s->guard_.get(), Clock::Real());
  }
  return s;
}

void InvalidationSetup::Start(cache::ReadPath* read_path, cache::Origin* origin,
                              Executor* executor) {
  invalidator_ =
      std::make_unique<cache::Invalidator>(read_path, bus_.get(), guard_.get(), executor->clock());
  watch_ = std::make_unique<WatchService>(config_, read_path, invalidator_.get(), executor);
  if (!config_.origin.push) return;
  absl::StatusOr<std::unique_ptr<cache::OriginPush>> push = cache::OriginPush::Start(
      origin, invalidator_.get(), static_cast<size_t>(config_.limits.max_batch_keys));
  if (push.ok()) {
    push_ = *std::move(push);
    FANOUT_LOG(INFO) << "origin.push: the origin's changes are applied as they come";
  } else if (absl::IsUnimplemented(push.status())) {
    FANOUT_LOG(INFO) << "origin.push: " << push.status().message()
                     << "; changed values are served until their ttl";
  } else {
    // Reads still work; changes wait for the ttl.
    FANOUT_LOG(WARNING) << "origin.push: not watching the origin: " << push.status().message();
  }
}

void InvalidationSetup::Shutdown() {
  if (watch_ != nullptr) watch_->Shutdown();
}

InvalidationSetup::~InvalidationSetup() {
  push_.reset();
  watch_.reset();
  invalidator_.reset();
  bus_.reset();
}

InvalidationStats InvalidationSetup::Stats() const {
  InvalidationStats s;
  if (invalidator_ != nullptr) s.invalidator = invalidator_->Stats();
  if (watch_ != nullptr) s.watch = watch_->Stats();
  if (push_ != nullptr) {
    s.origin_push = true;
    s.push = push_->Stats();
  }
  return s;
}

}  // namespace fanout::server
