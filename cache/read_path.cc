#include "cache/read_path.h"

#include <atomic>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fanout::cache {
namespace {

std::string Describe(absl::string_view ns, absl::string_view key) {
  return ns.empty() ? absl::StrCat("key \"", key, "\"")
                    : absl::StrCat("key \"", key, "\" in namespace \"", ns, "\"");
}

}  // namespace

ReadPath::ReadPath(const ReadPathOptions& options, std::unique_ptr<L1Cache> l1,
                   std::vector<std::unique_ptr<Tier>> lower, Origin* origin, Clock* clock)
    : options_(options),
      l1_(std::move(l1)),
      lower_(std::move(lower)),
      origin_(origin),
      clock_(clock) {}

void ReadPath::Get(absl::string_view ns, absl::string_view key, const ReadOptions& options,
                   GetDone done) {
  const absl::Time now = clock_->Now();
  std::string ckey = CompositeKey(ns, key);
  Waiter waiter{
      std::move(done),
      options.max_stale > absl::ZeroDuration() ? options.max_stale : options_.default_max_stale,
      std::nullopt};
  if (!options.bypass_cache) {
    Entry e;
    const std::optional<Freshness> freshness = l1_->Lookup(ckey, now, &e);
    if (freshness == Freshness::kFresh) {
      std::move(waiter.done)(ToResult(std::move(e), TierId::kL1, /*stale=*/false, now));
      return;
    }
    if (freshness == Freshness::kRefreshAhead) {
      std::move(waiter.done)(ToResult(std::move(e), TierId::kL1, /*stale=*/false, now));
      Fill(std::move(ckey), ns, key, std::nullopt);
      return;
    }
    if (freshness == Freshness::kStale) waiter.stale = std::move(e);
  }
  Fill(std::move(ckey), ns, key, std::move(waiter));
}

void ReadPath::Fill(std::string ckey, absl::string_view ns, absl::string_view key,
                    std::optional<Waiter> waiter) {
  std::shared_ptr<Flight> flight;
  {
    absl::MutexLock l(&mu_);
    auto [it, inserted] = flights_.try_emplace(ckey);
    if (!inserted) {
      // One fill per key: join the one under way (a refresh-ahead joins
      // nothing, the fill already under way refreshes the entry).
      if (waiter) {
        it->second->waiters.push_back(std::move(*waiter));
        ++stats_.coalesced;
      }
      return;
    }
    it->second = std::make_shared<Flight>();
    flight = it->second;
    flight->ckey = std::move(ckey);
    flight->ns = std::string(ns);
    flight->key = std::string(key);
    if (waiter) {
      flight->waiters.push_back(std::move(*waiter));
    } else {
      ++stats_.refreshes_ahead;
    }
  }
  LookupLower(0, std::move(flight));
}

void ReadPath::LookupLower(size_t index, std::shared_ptr<Flight> flight) {
  if (index >= lower_.size()) {
    FetchOrigin(std::move(flight));
    return;
  }
  Tier* tier = lower_[index].get();
  const absl::Time deadline = clock_->Now() + options_.origin_timeout;
  Flight* f = flight.get();
  tier->Lookup(
      f->ckey, deadline,
      [this, index, tier, flight = std::move(flight)](absl::StatusOr<Entry> found) mutable {
        if (found.ok() && FreshnessAt(*found, clock_->Now()) != Freshness::kStale) {
          Complete(flight, std::move(found), tier->id());
          return;
        }
        // A miss, a failure or a stale copy: the next tier decides.
        LookupLower(index + 1, std::move(flight));
      });
}

void ReadPath::FetchOrigin(std::shared_ptr<Flight> flight) {
  {
    absl::MutexLock l(&mu_);
    ++stats_.origin_fetches;
  }
  const absl::Time start = clock_->Now();
  Flight* f = flight.get();
  origin_->Fetch(
      f->ns, f->key, FetchContext{.deadline = start + options_.origin_timeout, .cancel = {}},
      [this, start, flight = std::move(flight)](absl::StatusOr<OriginValue> value) {
        const absl::Time now = clock_->Now();
        if (!value.ok()) {
          absl::Status status = value.status();
          if (status.code() == absl::StatusCode::kNotFound) {
            status =
                absl::NotFoundError(absl::StrCat(Describe(flight->ns, flight->key), " not found"));
          }
          Complete(flight, status, TierId::kOrigin);
          return;
        }
        Entry entry = MakeEntry(*std::move(value), now);
        entry.fill_time = now - start;
        for (const auto& tier : lower_) {
          tier->Store(flight->ckey, entry, [](absl::Status) {});
        }
        Complete(flight, std::move(entry), TierId::kOrigin);
      });
}

void ReadPath::Complete(const std::shared_ptr<Flight>& flight, absl::StatusOr<Entry> result,
                        TierId source) {
  const std::string& ckey = flight->ckey;
  bool invalidated_before;
  {
    absl::MutexLock l(&mu_);
    invalidated_before = flight->invalidated;
  }
  if (result.ok() && !invalidated_before) l1_->Insert(ckey, *result);
  if (!result.ok() && result.status().code() == absl::StatusCode::kNotFound) l1_->Erase(ckey);

  std::vector<Waiter> waiters;
  bool invalidated_after;
  {
    absl::MutexLock l(&mu_);
    auto it = flights_.find(ckey);
    if (it != flights_.end() && it->second == flight) flights_.erase(it);
    waiters = std::move(flight->waiters);
    invalidated_after = flight->invalidated;
    if (!result.ok() && result.status().code() != absl::StatusCode::kNotFound) {
      ++stats_.origin_failures;
    }
  }
  // An Invalidate that raced the insert above must win.
  if (result.ok() && invalidated_after && !invalidated_before) l1_->Erase(ckey);

  const absl::Time now = clock_->Now();
  for (Waiter& w : waiters) {
    if (result.ok()) {
      std::move(w.done)(ToResult(*result, source, /*stale=*/false, now));
      continue;
    }
    const absl::Status& status = result.status();
    const bool origin_down = status.code() == absl::StatusCode::kUnavailable ||
                             status.code() == absl::StatusCode::kDeadlineExceeded ||
                             status.code() == absl::StatusCode::kResourceExhausted ||
                             status.code() == absl::StatusCode::kInternal ||
                             status.code() == absl::StatusCode::kUnknown;
    if (origin_down && w.stale && now < w.stale->stale_until &&
        now - w.stale->expires_at <= w.max_stale) {
      {
        absl::MutexLock l(&mu_);
        ++stats_.stale_served;
      }
      std::move(w.done)(ToResult(*w.stale, TierId::kL1, /*stale=*/true, now));
      continue;
    }
    if (origin_down) {
      std::move(w.done)(absl::UnavailableError(
          absl::StrCat("origin unavailable and no value within max_stale: ", status.message())));
    } else {
      std::move(w.done)(status);
    }
  }
}

Entry ReadPath::MakeEntry(OriginValue value, absl::Time fetched_at) const {
  const absl::Duration ttl = value.ttl > absl::ZeroDuration() ? value.ttl : options_.ttl;
  Entry e;
  e.value = std::move(value.value);
  e.version = value.version;
  e.fetched_at = fetched_at;
  e.expires_at = fetched_at + ttl;
  e.fresh_until = fetched_at + ttl * options_.refresh_ahead;
  e.stale_until = e.expires_at + options_.stale_ttl;
  return e;
}

ReadResult ReadPath::ToResult(Entry e, TierId tier, bool stale, absl::Time now) const {
  ReadResult r;
  r.value = std::move(e.value);
  r.version = e.version;
  r.served_by = tier;
  r.stale = stale;
  r.age = now > e.fetched_at ? now - e.fetched_at : absl::ZeroDuration();
  return r;
}

void ReadPath::Invalidate(absl::string_view ns, const std::vector<std::string>& keys,
                          absl::string_view prefix, bool purge_survival, InvalidateDone done) {
  absl::flat_hash_set<std::string> ckeys;
  for (const std::string& k : keys) ckeys.insert(CompositeKey(ns, k));
  const std::string cprefix = prefix.empty() ? std::string() : CompositeKey(ns, prefix);
  {
    absl::MutexLock l(&mu_);
    for (auto& [ckey, flight] : flights_) {
      if (ckeys.contains(ckey) || (!cprefix.empty() && absl::StartsWith(ckey, cprefix))) {
        flight->invalidated = true;
      }
    }
  }
  uint64_t erased = 0;
  for (const std::string& ckey : ckeys) erased += l1_->Erase(ckey) ? 1 : 0;
  if (!cprefix.empty()) erased += l1_->ErasePrefix(cprefix);

  if (lower_.empty()) {
    std::move(done)(erased);
    return;
  }
  struct Join {
    std::atomic<size_t> pending;
    uint64_t erased;
    absl::Mutex mu;
    absl::Status first_error ABSL_GUARDED_BY(mu);
    InvalidateDone done;
  };
  auto join = std::make_shared<Join>();
  join->pending = lower_.size();
  join->erased = erased;
  join->done = std::move(done);
  const absl::Time deadline = clock_->Now() + options_.origin_timeout;
  for (const auto& tier : lower_) {
    // The survival tier keeps invalidated values for outages unless purged.
    const EraseMode mode =
        tier->id() == TierId::kL3 && !purge_survival ? EraseMode::kSupersede : EraseMode::kRemove;
    tier->Erase(std::vector<std::string>(ckeys.begin(), ckeys.end()), cprefix, mode, deadline,
                [join](absl::StatusOr<uint64_t> n) {
                  if (!n.ok()) {
                    absl::MutexLock l(&join->mu);
                    if (join->first_error.ok()) join->first_error = n.status();
                  }
                  if (join->pending.fetch_sub(1) != 1) return;
                  absl::Status error;
                  {
                    absl::MutexLock l(&join->mu);
                    error = join->first_error;
                  }
                  if (error.ok()) {
                    std::move(join->done)(join->erased);
                  } else {
                    std::move(join->done)(error);
                  }
                });
  }
}

ReadPathStats ReadPath::Stats() const {
  absl::MutexLock l(&mu_);
  return stats_;
}

}  // namespace fanout::cache
