// The tiered read path: L1, then the lower tiers in order, then the origin,
// with one fill per key (across pods too, with a fill lease), probabilistic
// early refresh, and stale answers during outages.
#ifndef FANOUT_CACHE_READ_PATH_H_
#define FANOUT_CACHE_READ_PATH_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cache/entry.h"
#include "cache/fill_lease.h"
#include "cache/l1_cache.h"
#include "cache/link_guard.h"
#include "cache/origin.h"
#include "cache/tier.h"
#include "common/cancellation.h"
#include "common/executor.h"
#include "common/metrics.h"

namespace fanout::cache {

struct ReadPathOptions {
  // Lifetime of a value unless the origin gives a ttl: expires_at = fetched_at + ttl.
  absl::Duration ttl = absl::Seconds(60);
  // Reads after this fraction of the ttl start a background refresh. Only
  // when xfetch_beta is 0 (entries filled by a pod with XFetch on are fresh
  // until they expire).
  double refresh_ahead = 0.8;
  // Probabilistic early refresh (XFetch, Vattani et al.): a read of a fresh
  // L1 entry starts a background refresh when
  //   now - fill_time * xfetch_beta * ln(U) >= expires_at,  U uniform in (0, 1],
  // fill_time being the entry's measured origin time. Under load a key is
  // refreshed about fill_time * beta * ln(reads/s * fill_time) before it
  // expires, so readers never wait for its fill, and keys nobody reads are
  // not refreshed. Larger = earlier. 0 = off: refresh_ahead applies.
  double xfetch_beta = 1.0;
  // Seeds the XFetch draws (for tests); 0 = from std::random_device.
  uint64_t random_seed = 0;
  // Each entry's ttl is scaled by a random factor in [1 - j, 1 + j], so that
  // keys filled together do not refresh or expire together. 0 = exact.
  double ttl_jitter = 0.1;
  // How long after expiry a value is kept for stale answers.
  absl::Duration stale_ttl = absl::Hours(24);
  // How stale an answer a caller accepts unless it says otherwise.
  absl::Duration default_max_stale = absl::Hours(1);
  // Deadline of one origin fetch (and of one lower-tier lookup).
  absl::Duration origin_timeout = absl::Seconds(2);
  // How long the origin's "no such key" is remembered: reads of the key
  // answer NotFound without asking again. Zero = not remembered.
  absl::Duration negative_ttl = absl::Seconds(5);
  // After an origin failure for a key, the origin is not asked for that key
  // again for this long (with ±ttl_jitter), doubling with each failure in a
  // row up to max_retry_backoff. Zero = no backoff.
  absl::Duration retry_backoff = absl::Seconds(1);
  absl::Duration max_retry_backoff = absl::Seconds(30);
  // Most background refreshes in flight; refresh-ahead reads past it serve
  // the cached value and skip the refresh (a later read retries).
  int max_background_refreshes = 64;
  // A waiting read is answered this long before its deadline (at most half
  // of the time it has left), so its answer reaches the caller in time.
  absl::Duration deadline_margin = absl::Milliseconds(20);
  // Most keys whose NotFound or failure is remembered; past it, older
  // records that have run out are dropped, else new ones are not kept.
  size_t max_key_records = 100000;
  // When set, an L1 entry it does not trust (the pod may be missing
  // invalidations) is not answered as fresh: the read goes on below L1,
  // with the entry kept as a stale fallback. Not owned; must outlive this.
  const LinkGuard* link_guard = nullptr;
  // Where origin fetch latency is reported
  // (fanout_origin_fetch_duration_seconds); not owned, must outlive the
  // read path; null = nowhere. The read path's counts are in Stats().
  Metrics* metrics = nullptr;
  // With a fill lease: a lease runs origin_timeout + lease_margin (the
  // holder's fetch, then its write to the shared tier), and a pod that lost
  // the race waits for the holder's value until the holder's lease ends
  // plus lease_margin; a lease claiming longer than its own would run, only
  // as long as its own, and then it fetches.
  absl::Duration lease_margin = absl::Milliseconds(100);
};

// Which tiers an invalidation erases in.
enum class InvalidateTiers {
  kAll,    // L1 and every lower tier
  kLocal,  // L1 and this pod's own lower tiers (L3), not the shared one (L2)
  kL1,     // L1 only
};

struct InvalidateScope {
  InvalidateTiers tiers = InvalidateTiers::kAll;
  // The survival tier drops the keys instead of keeping stale-only copies.
  bool purge_survival = false;
};

struct InvalidateOutcome {
  uint64_t evicted = 0;  // L1 entries erased
  // The first failure of the shared tier (L2): other pods may still read the
  // old value there. OK when it erased, or was not asked to.
  absl::Status shared;
  // The first failure of a tier of this pod's own (L3), which applies erases
  // it could not make in time later (or remembers them while read-only).
  absl::Status local;
};

struct ReadOptions {
  absl::Duration max_stale = absl::ZeroDuration();  // zero = default_max_stale
  // Read from the origin (not the lower tiers) and refresh the tiers. The
  // cached value is still the fallback when the origin fails.
  bool bypass_cache = false;
  // The caller's deadline. A read still waiting shortly before it is
  // answered with its stale copy (within max_stale) or DeadlineExceeded, and
  // detached from the fill, which goes on for the others.
  absl::Time deadline = absl::InfiniteFuture();
  // Cancelled when the caller goes away: a waiting read is answered
  // Cancelled at once and detached from the fill.
  CancellationToken cancel;
  // The caller's W3C traceparent (validated by the caller), passed on to
  // the origin fetch when this read starts the fill; empty = none.
  std::string traceparent{};
};

struct ReadResult {
  SharedValue value;
  int64_t version = 0;
  TierId served_by = TierId::kL1;
  bool stale = false;
  absl::Duration age = absl::ZeroDuration();
};

struct ReadPathStats {
  uint64_t origin_fetches = 0;     // origin fetches started
  uint64_t coalesced = 0;          // reads that joined a fill already under way
  uint64_t refreshes_ahead = 0;    // background refreshes started
  uint64_t refreshes_skipped = 0;  // refreshes not started: max_background_refreshes reached
  uint64_t stale_served = 0;       // stale answers given because the origin failed or was late
  uint64_t origin_failures = 0;    // origin fetches that ended without a value (not NotFound)
  uint64_t negative_hits = 0;      // reads answered NotFound from the remembered NotFound
  uint64_t backoff_answers = 0;    // reads answered without a fetch: the key was in backoff
  uint64_t deadline_answers = 0;   // reads answered before their deadline, the fill still running
  uint64_t cancelled = 0;          // reads whose caller cancelled while they waited
  uint64_t detached_fills = 0;     // fills detached by Invalidate or a bypass_cache read
  uint64_t xfetch_refreshes =
      0;                       // background refreshes started early by XFetch (in refreshes_ahead)
  uint64_t batch_lookups = 0;  // LookupMany calls made for batched reads
  // The fill lease (cross-pod single fill). Every wait ends in exactly one
  // of filled, timed_out, vacant or failed.
  uint64_t lease_acquired = 0;        // fills that took the lease, then asked the origin
  uint64_t lease_waits = 0;           // fills that found another pod's lease and waited
  uint64_t lease_wait_filled = 0;     // ... answered with the holder's value: no origin call
  uint64_t lease_wait_timed_out = 0;  // ... whose wait ran out (holder late): fetched themselves
  uint64_t lease_wait_vacant = 0;     // ... that found the lease gone without a value
  uint64_t lease_wait_failed = 0;     // ... that could not go on waiting (Redis failed)
  uint64_t lease_fetched_self = 0;    // origin fetches made after a wait (holder died or failed)
  uint64_t lease_unavailable = 0;     // fills that could not ask for the lease: local single flight
};

// The XFetch rule (ReadPathOptions::xfetch_beta) for entry `e` read at `now`
// with the uniform draw `u` in (0, 1]: whether to refresh it now. False for
// an entry without a measured fill time, or with beta <= 0.
bool XFetchDue(const Entry& e, absl::Time now, double beta, double u);

// Thread-safe. Get and Invalidate return at once and call `done` exactly
// once, possibly inline (an L1 hit answers on the caller's thread), else on
// the thread that completed the tier or origin call, the executor's (a
// deadline) or the one that cancelled the caller's token. Background
// refreshes start on the executor. No read path lock
// is held while calling a tier, the origin or a callback.
//
// A Get goes through these steps, each its own function below: L1 (ReadL1:
// answer a fresh copy, or a copy in the refresh window and start a
// background refresh), then (ReadBelowL1) the remembered NotFound and one
// fill per key: the lower tiers
// in order (LookupLower; a stale copy found there is remembered as a
// fallback), then the origin (unless the key is in backoff), then Complete,
// which caches the value (or the NotFound, or the backoff) and answers
// every reader still waiting.
//
// With a fill lease (fill_lease.h), a fill that must ask the origin first
// takes the key's lease (FetchOrigin, OnLease): the winner fetches, writes
// the shared tier (the first lower tier) and gives the lease back once that
// write is done; a fill that finds another pod's lease waits for that pod's
// value (AwaitFill) instead of asking the origin, its readers answered by
// their own deadlines meanwhile (a stale copy, if they hold one). A wait
// that finds the lease gone without a value takes the lease itself (once;
// then it fetches without one), and one that runs out fetches. A fill whose
// shared-tier lookup failed, or whose lease call fails, does not wait on it:
// a plain local single flight.
//
// Work outstanding (tier and origin calls, tier stores, lease calls, deadline
// timers) is counted; Shutdown cancels origin fetches and waits for it (a
// wait for another pod's fill is not waited for: it is dropped).
class ReadPath {
 public:
  using GetDone = absl::AnyInvocable<void(absl::StatusOr<ReadResult>) &&>;
  using InvalidateDone = absl::AnyInvocable<void(absl::StatusOr<uint64_t>) &&>;

  // `lower` tiers are tried in order after L1 (L2, then L3). `lease`, if
  // given, guards fills of the first lower tier, which every pod shares.
  // `origin` and `executor` (deadline timers and the clock,
  // executor->clock()) are not owned and must outlive this.
  ReadPath(const ReadPathOptions& options, std::unique_ptr<L1Cache> l1,
           std::vector<std::unique_ptr<Tier>> lower, Origin* origin, Executor* executor,
           std::unique_ptr<FillLease> lease = nullptr);
  // Answers the reads still waiting (Unavailable) and drops the work still
  // outstanding without waiting for it: call Shutdown first to let it end.
  ~ReadPath();
  ReadPath(const ReadPath&) = delete;
  ReadPath& operator=(const ReadPath&) = delete;

  // NotFound when the origin has no such key (remembered for negative_ttl);
  // Unavailable when the origin cannot answer (or the key is in backoff) and
  // no value within max_stale is held; DeadlineExceeded when the caller's
  // deadline comes first and no such value is held; Cancelled when the
  // caller cancels. `ns` and `key` are copied before `done` can run.
  // The same as ReadL1, then ReadBelowL1 if L1 could not answer.
  void Get(absl::string_view ns, absl::string_view key, const ReadOptions& options, GetDone done);

  // A read L1 could not answer, with what L1 held. Move-only.
  class PendingRead {
   public:
    PendingRead(PendingRead&&) = default;
    PendingRead& operator=(PendingRead&&) = default;
    absl::string_view ns() const { return absl::string_view(ckey_).substr(0, ns_size_); }
    absl::string_view key() const { return absl::string_view(ckey_).substr(ns_size_ + 1); }
    // See ReadOptions::traceparent.
    void set_traceparent(std::string traceparent) { traceparent_ = std::move(traceparent); }

   private:
    friend class ReadPath;
    PendingRead() = default;
    std::string ckey_;  // CompositeKey(ns, key)
    size_t ns_size_ = 0;
    std::optional<Entry> held_;  // L1's copy, for a fallback
    absl::Duration max_stale_;
    bool bypass_ = false;
    std::string traceparent_;
  };

  // The first step of a Get, synchronous: the answer when L1 holds the key
  // fresh, or in its refresh window (then a background refresh is started
  // on the executor, with its own copy of the key); else a PendingRead to
  // pass to ReadBelowL1. options.deadline, options.cancel and
  // options.traceparent are not used.
  std::variant<ReadResult, PendingRead> ReadL1(absl::string_view ns, absl::string_view key,
                                               const ReadOptions& options);
  // The rest of a Get, under the caller's deadline and cancellation.
  void ReadBelowL1(PendingRead read, absl::Time deadline, const CancellationToken& cancel,
                   GetDone done);

  // ReadBelowL1 for several reads at once (BatchGet's L1 misses), under one
  // deadline and cancellation: the reads that need a new fill look up the
  // first lower tier in one LookupMany (one round trip for Redis), then go
  // on one by one. Each read's `done` is called once, as ReadBelowL1's.
  struct BatchRead {
    PendingRead read;
    GetDone done;
  };
  void ReadManyBelowL1(std::vector<BatchRead> reads, absl::Time deadline,
                       const CancellationToken& cancel);

  // Erases `keys` and every key starting with `prefix` (if non-empty) in `ns`
  // from L1 and the lower tiers `scope` names; the survival tier keeps them
  // as stale-only copies (EraseMode::kSupersede) unless purge_survival.
  // Forgets their remembered NotFound and backoff. Fills under way for
  // matching keys are detached: they answer the readers already waiting but
  // cache nothing, and the next read starts a new fill.
  //
  // L1 and the fills are done before this returns, whatever the lower tiers
  // answer; `done` gets the outcome once every tier asked has answered (on
  // its thread, or inline): a tier failure never undoes or hides the L1
  // purge, it is reported beside it.
  using InvalidateOutcomeDone = absl::AnyInvocable<void(InvalidateOutcome) &&>;
  void Invalidate(absl::string_view ns, const std::vector<std::string>& keys,
                  absl::string_view prefix, InvalidateScope scope, InvalidateOutcomeDone done);
  // Every tier. OK with the L1 count unless the shared tier failed (then
  // its error, saying how many L1 entries were erased): the call fails only
  // when the old value may still be read by other pods. A failure of the
  // survival tier is not an error (see InvalidateOutcome::local).
  void Invalidate(absl::string_view ns, const std::vector<std::string>& keys,
                  absl::string_view prefix, bool purge_survival, InvalidateDone done);

  // Drops everything L1 holds, detaches every fill and forgets every
  // remembered NotFound and backoff: for a pod that missed invalidations it
  // cannot name. Returns how many L1 entries were erased.
  uint64_t InvalidateAll();
  // Drops everything L1 holds, and keeps the fills under way out of this
  // pod's own tiers: they answer their readers, write the shared tier (L2)
  // and release their lease as before, but put nothing in L1 or L3 and
  // remember no NotFound. For a pod whose link to the invalidation bus comes
  // up for the first time: what those fills read may predate an invalidation
  // published before the bus's first read, which this pod never receives
  // (the shared tier's writes are fenced against it: see RedisBus). Returns
  // how many L1 entries were erased.
  uint64_t DropL1();

  // Refuses new reads (Unavailable), answers the reads still waiting
  // (Unavailable), cancels origin fetches (FetchContext::cancel) and waits
  // until every outstanding tier call, origin fetch, tier store and timer
  // has finished, at most `timeout`. Work that finishes after that is
  // dropped without touching the read path, which may then be destroyed.
  // Blocks: call it from a thread of your own, never an executor, gRPC or
  // origin thread. Returns false when the timeout passed first. Idempotent.
  bool Shutdown(absl::Duration timeout);

  L1Cache& l1() { return *l1_; }
  ReadPathStats Stats() const;

  // Applies the freshness settings of `options` (ttl, refresh_ahead,
  // stale_ttl, default_max_stale, negative_ttl, retry_backoff,
  // max_retry_backoff, max_background_refreshes) to what happens from now
  // on: values filled later, reads that start later, records made later.
  // Entries already cached keep their windows. The other options keep the
  // values the read path was built with. Thread-safe.
  void Retune(const ReadPathOptions& options);

 private:
  class Tracker;
  class PendingOp;
  struct Waiter;
  struct Flight;
  // What the read path remembers about a key's last origin answers.
  struct KeyRecord {
    absl::Time negative_until = absl::InfinitePast();  // NotFound until then
    absl::Time retry_after = absl::InfinitePast();     // backoff until then
    int failures = 0;                                  // origin failures in a row
    absl::Status last_error;
  };
  // A copy held for when the origin cannot answer, and the tier it came from.
  struct Fallback {
    Entry entry;
    TierId tier = TierId::kL1;
  };

  // The steps of a fill, in order.
  std::shared_ptr<Flight> StartRefresh(std::string ckey, absl::string_view ns,
                                       absl::string_view key, const Entry& held, bool xfetch,
                                       absl::Time now);
  // When a fill started at `now` ends at the latest, if every tier, lease
  // and origin call keeps its deadline.
  absl::Time FillEndsBy(bool bypass, absl::Time now) const;
  // Adds `read` to its key's fill, or starts one: returns the new fill to
  // start (LookupLower), else null (joined, or answered at once).
  std::shared_ptr<Flight> Enlist(PendingRead read, absl::Time deadline,
                                 const CancellationToken& cancel, GetDone done);
  void LookupLower(size_t index, std::shared_ptr<Flight> flight);
  // Lower tier `index`'s answer for `flight`.
  void OnLowerAnswer(size_t index, std::shared_ptr<Flight> flight, absl::StatusOr<Entry> found);
  void FetchOrigin(std::shared_ptr<Flight> flight);
  // The fill lease: its answer, and the end of a wait for another pod's fill.
  void OnLease(std::shared_ptr<Flight> flight, absl::StatusOr<LeaseGrant> grant);
  void OnAwaited(std::shared_ptr<Flight> flight, absl::StatusOr<Entry> filled);
  void AskOrigin(std::shared_ptr<Flight> flight);
  void ReleaseLease(const std::string& ckey, std::string token);
  void Complete(const std::shared_ptr<Flight>& flight, absl::StatusOr<Entry> result, TierId source,
                bool origin_failed);

  // Waiters: register the deadline and cancellation of waiter `id` of
  // `flight`; answer one before its fill ends (deadline, cancellation).
  void Arm(const std::shared_ptr<Flight>& flight, uint64_t id, absl::Time deadline,
           absl::Time ends_by, const CancellationToken& cancel);
  // The deadline timer of waiter `id`.
  TimerId StartTimer(const std::shared_ptr<Flight>& flight, uint64_t id, absl::Time deadline);
  // Moves the fill's latest end to `ends_by` and gives the waiters whose
  // deadline comes before it a timer.
  void ExtendFill(const std::shared_ptr<Flight>& flight, absl::Time ends_by);
  void AnswerEarly(const std::shared_ptr<Flight>& flight, uint64_t id, absl::Status why);
  // Cancels the timer and drops the cancellation callback of a waiter taken
  // out of its flight. Call without mu_ held.
  void Disarm(Waiter& w);
  // The freshest copy a waiter may fall back to (its L1 copy or the fill's
  // lower-tier copy) within its max_stale, as a stale answer.
  static std::optional<ReadResult> StaleFallback(const Waiter& w,
                                                 const std::optional<Fallback>& lower,
                                                 absl::Time now);

  // The record of `ckey`, created if need be; null when records are full.
  KeyRecord* Record(const std::string& ckey, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DetachLocked(const std::shared_ptr<Flight>& flight) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Whether ReadL1 may answer `e` as fresh: the link guard's check.
  bool TrustedInL1(const Entry& e, absl::Time now) const;

  // The options with the freshness settings of the last Retune.
  ReadPathOptions Tuned() const;
  Entry MakeEntry(OriginValue value, absl::Time fetched_at) const;
  // Whether a read of the fresh `e` starts an XFetch refresh.
  bool XFetchNow(const Entry& e, absl::Time now);
  absl::Duration Jittered(absl::Duration d) const;
  // Takes `e` by value: an L1 hit moves its copy in rather than copying the
  // value once more.
  static ReadResult ToResult(Entry e, TierId tier, bool stale, absl::Time now);

  const ReadPathOptions options_;
  // Declared before the tiers: tiers that finish their work while being
  // destroyed still find it.
  const std::shared_ptr<Tracker> tracker_;
  const std::unique_ptr<L1Cache> l1_;
  const std::vector<std::unique_ptr<Tier>> lower_;
  // After the tiers: destroyed first, its waits end while the tiers exist.
  const std::unique_ptr<FillLease> lease_;
  Origin* const origin_;
  Executor* const executor_;
  Clock* const clock_;
  // Cancelled by Shutdown; every origin fetch runs under it.
  CancellationSource shutdown_;
  Histogram* const fetch_latency_;

  // A leaf lock: taken alone, or inside mu_.
  mutable absl::Mutex tune_mu_;
  ReadPathOptions tuned_ ABSL_GUARDED_BY(tune_mu_);
  // XFetch's draws: splitmix64 over this counter (lock-free, seedable).
  std::atomic<uint64_t> random_state_;

  mutable absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  // Fills that later reads of the key join.
  absl::flat_hash_map<std::string, std::shared_ptr<Flight>> flights_ ABSL_GUARDED_BY(mu_);
  // Fills detached by Invalidate or a bypass_cache read, still under way.
  absl::flat_hash_set<std::shared_ptr<Flight>> detached_ ABSL_GUARDED_BY(mu_);
  // Remembered NotFound and backoff, by composite key (ordered for prefix
  // invalidation). At most options_.max_key_records.
  absl::btree_map<std::string, KeyRecord> records_ ABSL_GUARDED_BY(mu_);
  int background_refreshes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_waiter_id_ ABSL_GUARDED_BY(mu_) = 1;
  ReadPathStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_READ_PATH_H_
