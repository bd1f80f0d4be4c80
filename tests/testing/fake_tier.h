// An in-memory Tier with fault knobs, for read-path tests and as the
// reference implementation the tier contract suite runs over.
#ifndef FANOUT_TESTS_TESTING_FAKE_TIER_H_
#define FANOUT_TESTS_TESTING_FAKE_TIER_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "cache/tier.h"
#include "cache/tiers/envelope.h"
#include "common/clock.h"

namespace fanout::testing {

// Answers inline on the caller's thread. With `failure` set every call fails
// with it; with `hang` set, calls are held until ReleaseHung(). Thread-safe.
class FakeTier final : public cache::Tier {
 public:
  // `clock`: not owned; must outlive this.
  FakeTier(cache::TierId id, Clock* clock) : id_(id), clock_(clock) {}

  cache::TierId id() const override { return id_; }

  void Lookup(absl::string_view key, absl::Time deadline, LookupDone done) override {
    if (Hanging()) {
      Hold([this, key = std::string(key), deadline, done = std::move(done)]() mutable {
        Lookup(key, deadline, std::move(done));
      });
      return;
    }
    std::move(done)(Find(key));
  }

  void LookupMany(std::vector<std::string> keys, absl::Time deadline,
                  LookupManyDone done) override {
    if (Hanging()) {
      Hold([this, keys, deadline, done = std::move(done)]() mutable {
        LookupMany(std::move(keys), deadline, std::move(done));
      });
      return;
    }
    {
      absl::MutexLock l(&mu_);
      ++lookup_many_calls_;
    }
    std::vector<absl::StatusOr<cache::Entry>> out;
    out.reserve(keys.size());
    for (const std::string& k : keys) out.push_back(Find(k));
    std::move(done)(std::move(out));
  }

  void Store(absl::string_view key, const cache::Entry& entry, StoreDone done) override {
    if (Hanging()) {
      Hold([this, key = std::string(key), entry, done = std::move(done)]() mutable {
        Store(key, entry, std::move(done));
      });
      return;
    }
    absl::Status status = Failure();
    if (status.ok()) {
      absl::MutexLock l(&mu_);
      map_[std::string(key)] = entry;
      ++stats_.stores;
    }
    std::move(done)(status);
  }

  void Erase(std::vector<std::string> keys, std::string prefix, cache::EraseMode mode,
             absl::Time deadline, EraseDone done) override {
    absl::AnyInvocable<void() &&> on_erase;
    {
      absl::MutexLock l(&mu_);
      on_erase = std::move(on_erase_);
    }
    if (on_erase) std::move(on_erase)();
    if (Hanging()) {
      Hold([this, keys, prefix, mode, deadline, done = std::move(done)]() mutable {
        Erase(std::move(keys), std::move(prefix), mode, deadline, std::move(done));
      });
      return;
    }
    absl::Status status = Failure();
    if (!status.ok()) {
      std::move(done)(status);
      return;
    }
    uint64_t n = 0;
    const absl::Time now = clock_->Now();
    {
      absl::MutexLock l(&mu_);
      ++erase_calls_;
      using Iterator = absl::btree_map<std::string, cache::Entry>::iterator;
      auto apply = [&](Iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        ++n;
        if (mode == cache::EraseMode::kRemove) return map_.erase(it);
        it->second = cache::Supersede(std::move(it->second), now);
        return std::next(it);
      };
      for (const std::string& k : keys) {
        auto it = map_.find(k);
        if (it != map_.end()) apply(it);
      }
      if (!prefix.empty()) {
        for (auto it = map_.lower_bound(prefix);
             it != map_.end() && absl::StartsWith(it->first, prefix);) {
          it = apply(it);
        }
      }
      stats_.erased += n;
    }
    std::move(done)(n);
  }

  cache::TierStats Stats() const override {
    absl::MutexLock l(&mu_);
    return stats_;
  }

  // Runs `f` once, at the start of the next Erase, before it applies (what
  // another thread may do while an invalidation is under way).
  void set_on_erase(absl::AnyInvocable<void() &&> f) {
    absl::MutexLock l(&mu_);
    on_erase_ = std::move(f);
  }

  // Faults.
  void set_failure(absl::Status status) {
    absl::MutexLock l(&mu_);
    failure_ = std::move(status);
  }
  void set_hang(bool hang) {
    absl::MutexLock l(&mu_);
    hang_ = hang;
  }
  // Runs the calls held while hanging (after set_hang(false) they answer
  // normally; while still hanging they are held again).
  void ReleaseHung() {
    std::vector<absl::AnyInvocable<void() &&>> held;
    {
      absl::MutexLock l(&mu_);
      held.swap(held_);
    }
    for (auto& call : held) std::move(call)();
  }

  // Direct access for tests.
  void Put(const std::string& key, cache::Entry entry) {
    absl::MutexLock l(&mu_);
    map_[key] = std::move(entry);
  }
  bool Contains(const std::string& key) const {
    absl::MutexLock l(&mu_);
    return map_.contains(key);
  }
  std::optional<cache::Entry> Get(const std::string& key) const {
    absl::MutexLock l(&mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return std::nullopt;
    return it->second;
  }
  int lookups() const {
    absl::MutexLock l(&mu_);
    return lookups_;
  }
  int lookup_many_calls() const {
    absl::MutexLock l(&mu_);
    return lookup_many_calls_;
  }
  int erase_calls() const {
    absl::MutexLock l(&mu_);
    return erase_calls_;
  }
  size_t held() const {
    absl::MutexLock l(&mu_);
    return held_.size();
  }

 private:
  bool Hanging() const {
    absl::MutexLock l(&mu_);
    return hang_;
  }
  void Hold(absl::AnyInvocable<void() &&> call) {
    absl::MutexLock l(&mu_);
    held_.push_back(std::move(call));
  }
  absl::Status Failure() const {
    absl::MutexLock l(&mu_);
    return failure_;
  }
  absl::StatusOr<cache::Entry> Find(absl::string_view key) {
    absl::Status status = Failure();
    absl::MutexLock l(&mu_);
    ++lookups_;
    if (!status.ok()) {
      ++stats_.errors;
      return status;
    }
    auto it = map_.find(key);
    if (it == map_.end() || clock_->Now() >= it->second.stale_until) {
      ++stats_.misses;
      return absl::NotFoundError("miss");
    }
    ++stats_.hits;
    return it->second;
  }

  const cache::TierId id_;
  Clock* const clock_;
  mutable absl::Mutex mu_;
  absl::btree_map<std::string, cache::Entry> map_ ABSL_GUARDED_BY(mu_);
  cache::TierStats stats_ ABSL_GUARDED_BY(mu_);
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  bool hang_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<absl::AnyInvocable<void() &&>> held_ ABSL_GUARDED_BY(mu_);
  absl::AnyInvocable<void() &&> on_erase_ ABSL_GUARDED_BY(mu_);
  int lookups_ ABSL_GUARDED_BY(mu_) = 0;
  int lookup_many_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int erase_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_FAKE_TIER_H_
