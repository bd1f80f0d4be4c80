// The shared L2 tier on Redis: every pod reads what any pod filled.
//
// Stored form: one Redis string per key (redis_keys.h) holding the entry's
// envelope (envelope.h), with Redis's own expiry (PX) at the entry's
// stale_until, so Redis drops it when no tier would serve it any more.
//
//   Lookup      GET                 one round trip
//   LookupMany  MGET                one round trip for every key
//   Store       SET ... PX          an entry already past stale_until
//                                   deletes the key instead
//   Erase       UNLINK              keys, in batches of `batch` keys
//     prefix    SCAN MATCH + UNLINK the whole keyspace is walked, `batch`
//                                   keys a round trip (SCAN's cost is the
//                                   size of the database, not of the match)
//     kSupersede a Lua script rewrites each envelope as stale-only in one
//                atomic step per batch (read-modify-write on the server),
//                keeping its expiry
//
// A value that does not decode (a foreign or corrupt value, a wrong type)
// is a miss, counted in `undecodable`; the first one is logged.
// Stats: `errors` counts calls that failed for any reason but a timeout;
// `timeouts` counts calls that got no answer in time (the client's
// command_timeout or the caller's deadline); the two are disjoint.
//
// Every call answers within the client's command_timeout (Erase: per round
// trip, within the caller's deadline overall); while the client's circuit
// is open or no connection is ready, at once with Unavailable.
//
// Thread-safe. Callbacks run inline (refused at once), else on the
// client's I/O thread, or, for Lookup and LookupMany answers that carry more
// than RedisTierOptions::inline_bytes of values when an executor is set, on
// that executor, which then also decodes them. What the caller does with an
// answer (the read path: fill L1, answer the gRPC calls waiting, copying
// the value into each response) grows with the value; a large or batched
// answer handled on the I/O thread would delay every other Redis call,
// while a small one costs less there than the thread switch to the
// executor. Destruction waits for the calls in flight (each is bounded by
// the client's timeouts, and by the executor running what it was given);
// it must not run on the client's I/O thread or on that executor.
#ifndef FANOUT_CACHE_TIERS_REDIS_REDIS_TIER_H_
#define FANOUT_CACHE_TIERS_REDIS_REDIS_TIER_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cache/tier.h"
#include "cache/tiers/redis/redis_client.h"
#include "cache/tiers/redis/redis_keys.h"
#include "common/clock.h"
#include "common/executor.h"

namespace fanout::cache {

struct RedisTierOptions {
  // Separates deployments sharing one Redis; every key starts with it.
  std::string key_prefix = "fanout:";
  TierId id = TierId::kL2;
  // SCAN COUNT hint, and the most keys one UNLINK or supersede call takes.
  int batch = 1000;
  // Runs Lookup and LookupMany answers of more than inline_bytes of values
  // (see above); null: every answer on the I/O thread. Not owned; must
  // outlive the tier.
  Executor* executor = nullptr;
  size_t inline_bytes = 0;
};

class RedisTier final : public Tier {
 public:
  // `client` may be shared (the fill lease uses it too). `clock`: not owned;
  // must outlive this.
  RedisTier(std::shared_ptr<RedisClient> client, RedisTierOptions options, Clock* clock);
  ~RedisTier() override;

  TierId id() const override { return options_.id; }
  void Lookup(absl::string_view key, absl::Time deadline, LookupDone done) override;
  void LookupMany(std::vector<std::string> keys, absl::Time deadline, LookupManyDone done) override;
  void Store(absl::string_view key, const Entry& entry, StoreDone done) override;
  void Erase(std::vector<std::string> keys, std::string prefix, EraseMode mode, absl::Time deadline,
             EraseDone done) override;
  TierStats Stats() const override;

  RedisClientStats client_stats() const { return client_->Stats(); }
  const std::shared_ptr<RedisClient>& client() const { return client_; }
  const RedisKeys& keys() const { return keys_; }

 private:
  struct EraseJob;

  // The gate: calls in flight, waited for by the destructor.
  bool Enter();
  void Leave();

  // Runs `task` here, or on options_.executor for an answer of more than
  // inline_bytes.
  void Deliver(size_t bytes, absl::AnyInvocable<void() &&> task);
  // A GET/MGET element as a lookup result.
  absl::StatusOr<Entry> Decode(absl::string_view key, const RedisReply& reply, absl::Time now);
  void CountFailure(const absl::Status& status);
  void Undecodable(absl::string_view key, absl::string_view why);
  RedisClient::Command SupersedeCommand(const std::vector<std::string>& redis_keys) const;
  void EraseStep(std::shared_ptr<EraseJob> job, std::vector<RedisClient::Command> commands);
  void EraseFinish(const std::shared_ptr<EraseJob>& job, absl::StatusOr<uint64_t> result);

  const RedisTierOptions options_;
  const RedisKeys keys_;
  Clock* const clock_;

  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};
  std::atomic<uint64_t> errors_{0};
  std::atomic<uint64_t> timeouts_{0};
  std::atomic<uint64_t> stores_{0};
  std::atomic<uint64_t> stores_dropped_{0};
  std::atomic<uint64_t> erased_{0};
  std::atomic<uint64_t> undecodable_{0};
  std::atomic<bool> logged_undecodable_{false};

  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;

  // Last: destroyed first, so a client this tier alone holds fails its calls
  // while the counters above still exist.
  const std::shared_ptr<RedisClient> client_;
};

// Builds a client (redis_client.h) and a tier on it. The client's errors
// at start-up (a refused AUTH or SELECT) are returned as is.
absl::StatusOr<std::unique_ptr<RedisTier>> NewRedisTier(RedisClientOptions client,
                                                        RedisTierOptions tier, Clock* clock);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_TIERS_REDIS_REDIS_TIER_H_
