// The invalidation bus (invalidation_bus.h) on the Redis that holds L2.
//
// The log. One Redis Stream (RedisKeys::InvalidationStream) holds the
// invalidations of every pod, capped near max_len entries (XADD MAXLEN ~).
// Each pod reads it from the last entry it applied, on a connection of its
// own (a blocking read never holds up the tier's pipelined connections):
//
//   CLIENT SETNAME fanout-bus:POD            after every (re)connect
//   EVAL <gap check> stream LAST             can LAST still be replayed?
//   XREAD BLOCK heartbeat COUNT read_batch STREAMS stream LAST
//
// in one pipeline. XREAD answers at once when entries follow LAST, else after
// `heartbeat` with nothing: a round trip at least every heartbeat, so a link
// that stops answering (a frozen Redis, a cut cable) is known dead after
// `dead_after` without waiting for TCP. Reads that fail or time out put the
// link in kDegraded; the next read that answers puts it back in kUp, after
// replaying every entry since LAST. A pod's own entries are skipped.
//
// Gaps. LAST can be replayed while it is still in the stream (trimming
// removes the oldest entries first, so everything after it is there too). It
// cannot when it was trimmed away, or when the stream is gone (a Redis
// restarted without persistence, a FLUSHALL): the bus reports OnGap, then
// resumes at the stream's end.
//
// Publish. In one Lua script, atomically: set the fences of the keys and the
// prefix to the stream's last id, UNLINK the keys' L2 values, and XADD the
// entry (sender, sequence, namespace, prefix, purge, keys NUL-separated). An
// invalidation with a prefix first sets the fences, then erases the prefix
// from L2 (SCAN + UNLINK, through the tier), then runs the script: when the
// entry reaches the other pods, L2 no longer holds what it names.
//
// Fences. A fill that read the origin before an invalidation must not write
// the old value into L2 after the invalidation erased it. Every pod keeps
// when it applied each stream position (AppliedLog); a fill's L2 write
// (NewFencedTier) carries the position its pod had applied when the fill
// started, and Redis refuses the write, in a Lua script, when a fence of the
// key or of one of its prefixes is at or after that position. A fence lives
// fence_ttl; writes of fills older than half of that are not made at all.
//
// Threading: Publish and the getters are thread-safe. Subscribers are called
// on the reader's I/O thread. The destructor stops the reader and waits for
// publishes under way; it must not run on either client's I/O thread.
#ifndef FANOUT_CACHE_TIERS_REDIS_REDIS_BUS_H_
#define FANOUT_CACHE_TIERS_REDIS_REDIS_BUS_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cache/invalidation_bus.h"
#include "cache/tier.h"
#include "cache/tiers/redis/redis_client.h"
#include "cache/tiers/redis/redis_keys.h"
#include "common/clock.h"

namespace fanout::cache {

// Which stream position a pod had applied when. Thread-safe.
class AppliedLog {
 public:
  // `capacity`: positions remembered; a time older than all of them maps to
  // "0-0" (before everything: every fence applies).
  AppliedLog(Clock* clock, size_t capacity = 4096) : clock_(clock), capacity_(capacity) {}

  // Everything up to `id` is applied as of now.
  void Applied(std::string id);
  // The last position applied at or before `t`; "0-0" if none is known.
  std::string At(absl::Time t) const;
  std::string Last() const;

  void CountFenced() { fenced_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t fenced() const { return fenced_.load(std::memory_order_relaxed); }
  Clock* clock() const { return clock_; }

 private:
  Clock* const clock_;
  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::deque<std::pair<absl::Time, std::string>> log_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> fenced_{0};
};

// Whether stream id `a` comes after `b` ("ms-seq"; malformed ids sort first).
bool StreamIdAfter(absl::string_view a, absl::string_view b);

struct RedisBusOptions {
  std::string key_prefix = "fanout:";
  // Names this pod in the stream entries' sender and in CLIENT LIST; the
  // bus id adds a random suffix, so two pods given the same name do not
  // take each other's entries for their own.
  std::string pod = "fanout";
  int64_t max_len = 100000;                      // XADD MAXLEN ~
  absl::Duration heartbeat = absl::Seconds(1);   // XREAD BLOCK
  absl::Duration dead_after = absl::Seconds(3);  // no answer for this long: link down
  int read_batch = 512;                          // XREAD COUNT
  absl::Duration fence_ttl = absl::Seconds(60);
  // Delay before reading again after a failure: min, doubling to max.
  absl::Duration retry_min = absl::Milliseconds(50);
  absl::Duration retry_max = absl::Seconds(1);
};

class RedisBus final : public InvalidationBus {
 public:
  // `writer`: the L2 tier's client (publishes go through its pipelined
  // connections). `reader`: options for the bus's own connection (address,
  // password, db; the rest is set here). `shared`: the L2 tier, for prefix
  // erases; not owned, must outlive this. `applied` is written by the bus
  // and read by the fenced tier. Starts reading at the stream's end.
  static absl::StatusOr<std::unique_ptr<RedisBus>> Start(std::shared_ptr<RedisClient> writer,
                                                         RedisClientOptions reader, Tier* shared,
                                                         std::shared_ptr<AppliedLog> applied,
                                                         RedisBusOptions options);
  ~RedisBus() override;

  void Publish(Invalidation invalidation, absl::Time deadline, PublishDone done) override;
  void Subscribe(Subscriber* subscriber) override;
  void Unsubscribe(Subscriber* subscriber) override;
  LinkState link_state() const override;
  const std::string& id() const override { return id_; }
  InvalidationBusStats Stats() const override;

 private:
  struct PublishJob;
  RedisBus(std::shared_ptr<RedisClient> writer, Tier* shared, std::shared_ptr<AppliedLog> applied,
           RedisBusOptions options);

  // The reader: one round = the pipeline above; runs on the reader's thread.
  void ReadRound();
  void OnRound(absl::StatusOr<std::vector<RedisReply>> replies);
  void ReadFailed(const absl::Status& why);
  void SetLink(LinkState state);
  void Deliver(const std::vector<RedisReply>& entries);

  // Publishing steps.
  RedisClient::Command PublishScript(const Invalidation& inv, bool fence_only) const;
  void RunPublishScript(std::shared_ptr<PublishJob> job, absl::Status earlier);
  void FinishPublish(const std::shared_ptr<PublishJob>& job, absl::Status status);
  bool Enter();
  void Leave();

  template <typename F>
  void Notify(F f);

  const RedisBusOptions options_;
  const RedisKeys keys_;
  const std::string id_;
  const std::string stream_;
  const std::shared_ptr<RedisClient> writer_;
  Tier* const shared_;
  const std::shared_ptr<AppliedLog> applied_;

  std::atomic<uint64_t> sequence_{0};
  std::atomic<uint64_t> published_{0};
  std::atomic<uint64_t> publish_failures_{0};
  std::atomic<uint64_t> received_{0};
  std::atomic<uint64_t> gaps_{0};
  std::atomic<uint64_t> link_downs_{0};

  mutable absl::Mutex mu_;
  std::vector<Subscriber*> subscribers_ ABSL_GUARDED_BY(mu_);
  int notifying_ ABSL_GUARDED_BY(mu_) = 0;
  LinkState link_ ABSL_GUARDED_BY(mu_) = LinkState::kDegraded;
  int publishing_ ABSL_GUARDED_BY(mu_) = 0;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;

  // Reader thread only.
  std::string last_;  // last applied id; empty before the first read
  bool name_sent_ = false;
  absl::Duration retry_;
  bool logged_down_ = false;
  bool ever_up_ = false;
  absl::Time started_;

  // Last: destroyed first, so its thread stops before the state above goes.
  std::shared_ptr<RedisClient> reader_;
};

// The L2 tier `inner` with fenced writes: Store runs the fenced write
// script (see RedisBus) instead of SET, with the position `applied` had at
// the fill's start (entry.fetched_at - entry.fill_time). Everything else
// goes to `inner`. `client`: `inner`'s client. Writes refused by a fence
// are counted in applied->fenced() and reported to `done` as Aborted.
std::unique_ptr<Tier> NewFencedTier(std::unique_ptr<Tier> inner,
                                    std::shared_ptr<RedisClient> client, const std::string& prefix,
                                    std::shared_ptr<AppliedLog> applied, absl::Duration fence_ttl);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_TIERS_REDIS_REDIS_BUS_H_
