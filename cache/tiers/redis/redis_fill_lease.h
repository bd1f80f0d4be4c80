// The fill lease (fill_lease.h) on Redis, beside the L2 tier it guards.
//
//   Acquire   SET <lease key> <token> NX PX <ttl>, pipelined with PTTL (the
//             holder's time left when the SET loses): one round trip
//   Release   a Lua compare-and-delete: deletes the lease only if it still
//             holds this token (an expired lease another pod has since
//             taken is left alone)
//   AwaitFill polls EXISTS <lease key> then GET <value key>, pipelined in
//             that order (a lease seen gone means the holder's value, written
//             before its release, is already visible to the GET), at once
//             and then poll_min apart, doubling up to poll_max, ±20% jitter
//
// Polling rather than a notification: it works on any Redis (keyspace
// notifications need `notify-keyspace-events`, which managed Redis often
// refuses), needs no connection in subscribe mode, and costs a waiter
// about log2(fill time / poll_min) + fill time / poll_max small round
// trips. A pub/sub wake-up can replace it behind the same interface.
//
// Tokens are 128 random bits. Thread-safe; callbacks run inline (refused at
// once), else on the client's I/O thread, or, for Acquire and AwaitFill with
// RedisFillLeaseOptions::executor set, on that executor (what the caller
// does next, an origin fetch or filling L1 and answering calls, then never
// delays the I/O thread). Destruction ends the waits in flight
// (Unavailable) and waits for the calls in flight; it must not run on the
// client's I/O thread or on that executor.
#ifndef FANOUT_CACHE_TIERS_REDIS_REDIS_FILL_LEASE_H_
#define FANOUT_CACHE_TIERS_REDIS_REDIS_FILL_LEASE_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "cache/fill_lease.h"
#include "cache/tiers/redis/redis_client.h"
#include "cache/tiers/redis/redis_keys.h"
#include "common/clock.h"
#include "common/executor.h"

namespace fanout::cache {

struct RedisFillLeaseOptions {
  std::string key_prefix = "fanout:";  // the L2 tier's
  absl::Duration poll_min = absl::Milliseconds(5);
  absl::Duration poll_max = absl::Milliseconds(100);
  // Runs Acquire and AwaitFill answers (see above); null: the I/O thread.
  // Not owned; must outlive the lease.
  Executor* executor = nullptr;
};

class RedisFillLease final : public FillLease {
 public:
  // `client` may be shared with the L2 tier. `clock`: not owned; must outlive this.
  RedisFillLease(std::shared_ptr<RedisClient> client, RedisFillLeaseOptions options, Clock* clock);
  ~RedisFillLease() override;

  void Acquire(absl::string_view key, absl::Duration ttl, absl::Time deadline,
               AcquireDone done) override;
  void Release(absl::string_view key, absl::string_view token, absl::Time deadline,
               ReleaseDone done) override;
  void AwaitFill(absl::string_view key, absl::Time newer_than, absl::Time deadline,
                 AwaitDone done) override;
  FillLeaseStats Stats() const override;

 private:
  struct Wait;

  bool Enter();
  void Leave();
  bool Closing();
  void Poll(std::shared_ptr<Wait> wait);
  void FinishWait(const std::shared_ptr<Wait>& wait, absl::StatusOr<Entry> result);
  // Runs `task` on options_.executor, else here.
  void Deliver(absl::AnyInvocable<void() &&> task);

  const RedisFillLeaseOptions options_;
  const RedisKeys keys_;
  Clock* const clock_;

  std::atomic<uint64_t> acquired_{0};
  std::atomic<uint64_t> contended_{0};
  std::atomic<uint64_t> released_{0};
  std::atomic<uint64_t> release_refused_{0};
  std::atomic<uint64_t> waits_{0};
  std::atomic<uint64_t> waits_filled_{0};
  std::atomic<uint64_t> waits_vacant_{0};
  std::atomic<uint64_t> waits_timed_out_{0};
  std::atomic<uint64_t> polls_{0};
  std::atomic<uint64_t> errors_{0};

  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;

  const std::shared_ptr<RedisClient> client_;
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_TIERS_REDIS_REDIS_FILL_LEASE_H_
