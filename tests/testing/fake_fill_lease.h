// An in-memory FillLease (cache/fill_lease.h) for read-path tests, reading
// the holder's writes from a FakeTier. Time is the injected clock's: a lease
// expires and a wait times out when the clock passes them, as seen by the
// next call or Settle().
#ifndef FANOUT_TESTS_TESTING_FAKE_FILL_LEASE_H_
#define FANOUT_TESTS_TESTING_FAKE_FILL_LEASE_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cache/fill_lease.h"
#include "common/clock.h"
#include "tests/testing/fake_tier.h"

namespace fanout::testing {

// Acquire and Release answer inline. AwaitFill answers inline when it can;
// otherwise it waits until Release, Settle() or NotifyWrite() finds the
// holder's value, the lease gone, or its deadline passed. With `failure`
// set every call fails with it. Thread-safe.
class FakeFillLease final : public cache::FillLease {
 public:
  // `clock` and `values`: not owned; must outlive this.
  FakeFillLease(Clock* clock, const FakeTier* values) : clock_(clock), values_(values) {}

  void Acquire(absl::string_view key, absl::Duration ttl, absl::Time deadline,
               AcquireDone done) override {
    if (key.empty() || ttl <= absl::ZeroDuration()) {
      std::move(done)(absl::InvalidArgumentError("a lease needs a key and a positive ttl"));
      return;
    }
    absl::StatusOr<cache::LeaseGrant> out;
    {
      absl::MutexLock l(&mu_);
      if (!failure_.ok()) {
        ++stats_.errors;
        out = failure_;
      } else {
        const absl::Time now = clock_->Now();
        cache::LeaseGrant g;
        auto it = leases_.find(key);
        if (it != leases_.end() && now < it->second.second) {
          ++stats_.contended;
          g.holder_remaining = it->second.second - now;
        } else {
          ++stats_.acquired;
          g.acquired = true;
          g.token = absl::StrCat("fake-token-", ++tokens_);
          leases_[std::string(key)] = {g.token, now + ttl};
        }
        out = std::move(g);
      }
    }
    std::move(done)(std::move(out));
  }

  void Release(absl::string_view key, absl::string_view token, absl::Time deadline,
               ReleaseDone done) override {
    if (key.empty() || token.empty()) {
      std::move(done)(absl::InvalidArgumentError("a release needs a key and a token"));
      return;
    }
    absl::Status out;
    {
      absl::MutexLock l(&mu_);
      auto it = leases_.find(key);
      if (!failure_.ok()) {
        ++stats_.errors;
        out = failure_;
      } else if (it != leases_.end() && it->second.first == token &&
                 clock_->Now() < it->second.second) {
        ++stats_.released;
        leases_.erase(it);
      } else {
        ++stats_.release_refused;
        out = absl::FailedPreconditionError("the lease is not held by this token");
      }
    }
    std::move(done)(std::move(out));
    Settle();
  }

  void AwaitFill(absl::string_view key, absl::Time newer_than, absl::Time deadline,
                 AwaitDone done) override {
    if (key.empty()) {
      std::move(done)(absl::InvalidArgumentError("AwaitFill needs a key"));
      return;
    }
    Waiter w{std::string(key), newer_than, deadline, std::move(done)};
    std::optional<absl::StatusOr<cache::Entry>> now;
    {
      absl::MutexLock l(&mu_);
      ++stats_.waits;
      now = Check(w);
      if (!now.has_value()) {
        waiters_.push_back(std::move(w));
        return;
      }
    }
    std::move(w.done)(*std::move(now));
  }

  cache::FillLeaseStats Stats() const override {
    absl::MutexLock l(&mu_);
    return stats_;
  }

  // Re-checks every waiting AwaitFill against the values, the leases and
  // the clock; answers those that are settled.
  void Settle() {
    std::vector<std::pair<Waiter, absl::StatusOr<cache::Entry>>> ready;
    {
      absl::MutexLock l(&mu_);
      for (auto it = waiters_.begin(); it != waiters_.end();) {
        std::optional<absl::StatusOr<cache::Entry>> r = Check(*it);
        if (r.has_value()) {
          ready.emplace_back(std::move(*it), *std::move(r));
          it = waiters_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& [w, r] : ready) std::move(w.done)(std::move(r));
  }

  void set_failure(absl::Status status) {
    absl::MutexLock l(&mu_);
    failure_ = std::move(status);
  }
  size_t waiting() const {
    absl::MutexLock l(&mu_);
    return waiters_.size();
  }
  bool Held(const std::string& key) const {
    absl::MutexLock l(&mu_);
    auto it = leases_.find(key);
    return it != leases_.end() && clock_->Now() < it->second.second;
  }

 private:
  struct Waiter {
    std::string key;
    absl::Time newer_than;
    absl::Time deadline;
    AwaitDone done;
  };

  // The waiter's answer if it has one now.
  std::optional<absl::StatusOr<cache::Entry>> Check(const Waiter& w)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!failure_.ok()) {
      ++stats_.errors;
      return absl::StatusOr<cache::Entry>(failure_);
    }
    ++stats_.polls;
    const absl::Time now = clock_->Now();
    std::optional<cache::Entry> e = values_->Get(w.key);
    if (e.has_value() && e->fetched_at > w.newer_than && now < e->stale_until) {
      ++stats_.waits_filled;
      return absl::StatusOr<cache::Entry>(*std::move(e));
    }
    auto it = leases_.find(w.key);
    if (it == leases_.end() || now >= it->second.second) {
      ++stats_.waits_vacant;
      return absl::StatusOr<cache::Entry>(
          absl::NotFoundError("the lease is gone and no newer value was written"));
    }
    if (now >= w.deadline) {
      ++stats_.waits_timed_out;
      return absl::StatusOr<cache::Entry>(
          absl::DeadlineExceededError("the lease holder did not write in time"));
    }
    return std::nullopt;
  }

  Clock* const clock_;
  const FakeTier* const values_;
  mutable absl::Mutex mu_;
  // key → (token, expiry)
  absl::flat_hash_map<std::string, std::pair<std::string, absl::Time>> leases_ ABSL_GUARDED_BY(mu_);
  std::vector<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  cache::FillLeaseStats stats_ ABSL_GUARDED_BY(mu_);
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  uint64_t tokens_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_FAKE_FILL_LEASE_H_
