// The tiered read path: L1, then the lower tiers in order, then the origin,
// with one fill per key, refresh-ahead, and stale answers during outages.
#ifndef FANOUT_CACHE_READ_PATH_H_
#define FANOUT_CACHE_READ_PATH_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cache/entry.h"
#include "cache/l1_cache.h"
#include "cache/origin.h"
#include "cache/tier.h"
#include "common/executor.h"

namespace fanout::cache {

struct ReadPathOptions {
  // Lifetime of a value unless the origin gives a ttl: expires_at = fetched_at + ttl.
  absl::Duration ttl = absl::Seconds(60);
  // Reads after this fraction of the ttl start a background refresh.
  double refresh_ahead = 0.8;
  // How long after expiry a value is kept for stale answers.
  absl::Duration stale_ttl = absl::Hours(24);
  // How stale an answer a caller accepts unless it says otherwise.
  absl::Duration default_max_stale = absl::Hours(1);
  // Deadline of one origin fetch.
  absl::Duration origin_timeout = absl::Seconds(2);
};

struct ReadOptions {
  absl::Duration max_stale = absl::ZeroDuration();  // zero = default_max_stale
  bool bypass_cache = false;  // read from the origin, refresh the tiers
};

struct ReadResult {
  SharedValue value;
  int64_t version = 0;
  TierId served_by = TierId::kL1;
  bool stale = false;
  absl::Duration age = absl::ZeroDuration();
};

struct ReadPathStats {
  uint64_t origin_fetches = 0;    // fills started
  uint64_t coalesced = 0;         // reads that joined a fill already under way
  uint64_t refreshes_ahead = 0;   // background refreshes started
  uint64_t stale_served = 0;      // stale answers given because the origin failed
  uint64_t origin_failures = 0;   // fills that ended without a value (not NotFound)
};

// Thread-safe. Get and Invalidate return at once and call `done` exactly
// once, possibly inline (an L1 hit answers on the caller's thread), else on
// the thread that completed the tier or origin call. No lock is held while
// calling a tier, the origin or a callback.
class ReadPath {
 public:
  using GetDone = absl::AnyInvocable<void(absl::StatusOr<ReadResult>) &&>;
  using InvalidateDone = absl::AnyInvocable<void(absl::StatusOr<uint64_t>) &&>;

  // `lower` tiers are tried in order after L1 (L2, then L3). `origin` and
  // `clock` are not owned and must outlive this.
  ReadPath(const ReadPathOptions& options, std::unique_ptr<L1Cache> l1,
           std::vector<std::unique_ptr<Tier>> lower, Origin* origin, Clock* clock);
  ReadPath(const ReadPath&) = delete;
  ReadPath& operator=(const ReadPath&) = delete;

  // NotFound when the origin has no such key; Unavailable when the origin
  // cannot answer and no value within max_stale is held.
  void Get(absl::string_view ns, absl::string_view key, const ReadOptions& options, GetDone done);

  // Erases `keys` and every key starting with `prefix` (if non-empty) in `ns`
  // from L1 and the lower tiers; the survival tier keeps them as stale-only
  // copies (EraseMode::kSupersede) unless purge_survival.
  // A fill under way for an erased key delivers its value to its waiters but
  // does not cache it. Reports how many L1 entries were erased.
  void Invalidate(absl::string_view ns, const std::vector<std::string>& keys,
                  absl::string_view prefix, bool purge_survival, InvalidateDone done);

  L1Cache& l1() { return *l1_; }
  ReadPathStats Stats() const;

 private:
  struct Waiter {
    GetDone done;
    absl::Duration max_stale;
    std::optional<Entry> stale;  // what this reader may fall back to
  };
  // One fill of one key, shared by every reader waiting for it.
  struct Flight {
    std::string ckey;
    std::string ns;
    std::string key;
    // Guarded by ReadPath::mu_.
  std::vector<Waiter> waiters;
    // An Invalidate raced the fill: deliver the value, do not cache it.
    bool invalidated = false;  // guarded by ReadPath::mu_
  };

  void Fill(std::string ckey, absl::string_view ns, absl::string_view key,
            std::optional<Waiter> waiter);
  void LookupLower(size_t index, std::shared_ptr<Flight> flight);
  void FetchOrigin(std::shared_ptr<Flight> flight);
  void Complete(const std::shared_ptr<Flight>& flight, absl::StatusOr<Entry> result,
                TierId source);
  Entry MakeEntry(OriginValue value, absl::Time fetched_at) const;
  // Takes `e` by value: an L1 hit moves its copy in rather than copying the
  // value once more.
  ReadResult ToResult(Entry e, TierId tier, bool stale, absl::Time now) const;

  const ReadPathOptions options_;
  const std::unique_ptr<L1Cache> l1_;
  const std::vector<std::unique_ptr<Tier>> lower_;
  Origin* const origin_;
  Clock* const clock_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Flight>> flights_ ABSL_GUARDED_BY(mu_);
  ReadPathStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_READ_PATH_H_
