#include "cache/link_guard.h"

#include <algorithm>
#include <utility>

#include "cache/tiers/envelope.h"

namespace fanout::cache {
namespace {

int64_t ToNanos(absl::Time t) {
  if (t == absl::InfinitePast()) return INT64_MIN + 1;
  if (t == absl::InfiniteFuture()) return INT64_MAX;
  return absl::ToUnixNanos(t);
}

}  // namespace

void LinkGuard::SetDegraded(absl::Time since) {
  int64_t expected = kNone;
  degraded_since_.compare_exchange_strong(expected, ToNanos(since), std::memory_order_acq_rel);
}

void LinkGuard::SetUp() { degraded_since_.store(kNone, std::memory_order_release); }

void LinkGuard::DistrustLocalBefore(absl::Time t) {
  const int64_t n = ToNanos(t);
  int64_t cur = local_floor_.load(std::memory_order_acquire);
  while (cur < n && !local_floor_.compare_exchange_weak(cur, n, std::memory_order_acq_rel)) {
  }
}

bool LinkGuard::TrustL1(const Entry& e, absl::Time now) const {
  const int64_t since = degraded_since_.load(std::memory_order_acquire);
  if (since == kNone) return true;
  // Known valid at the later of its fetch and the link's loss.
  const absl::Time known = std::max(e.fetched_at, absl::FromUnixNanos(since));
  return now - known < max_local_ttl_;
}

bool LinkGuard::TrustLocal(const Entry& e, absl::Time now) const {
  const int64_t floor = local_floor_.load(std::memory_order_acquire);
  if (floor != kNone && e.fetched_at < absl::FromUnixNanos(floor)) return false;
  return TrustL1(e, now);
}

namespace {

class GuardedTier final : public Tier {
 public:
  GuardedTier(std::unique_ptr<Tier> inner, const LinkGuard* guard, Clock* clock)
      : inner_(std::move(inner)), guard_(guard), clock_(clock) {}

  TierId id() const override { return inner_->id(); }

  void Lookup(absl::string_view key, absl::Time deadline, LookupDone done) override {
    inner_->Lookup(key, deadline,
                   [this, done = std::move(done)](absl::StatusOr<Entry> found) mutable {
                     if (found.ok()) Check(&*found);
                     std::move(done)(std::move(found));
                   });
  }

  void LookupMany(std::vector<std::string> keys, absl::Time deadline,
                  LookupManyDone done) override {
    inner_->LookupMany(
        std::move(keys), deadline,
        [this, done = std::move(done)](std::vector<absl::StatusOr<Entry>> found) mutable {
          for (absl::StatusOr<Entry>& f : found) {
            if (f.ok()) Check(&*f);
          }
          std::move(done)(std::move(found));
        });
  }

  void Store(absl::string_view key, const Entry& entry, StoreDone done) override {
    inner_->Store(key, entry, std::move(done));
  }
  void Erase(std::vector<std::string> keys, std::string prefix, EraseMode mode, absl::Time deadline,
             EraseDone done) override {
    inner_->Erase(std::move(keys), std::move(prefix), mode, deadline, std::move(done));
  }
  TierStats Stats() const override { return inner_->Stats(); }

 private:
  void Check(Entry* e) const {
    const absl::Time now = clock_->Now();
    if (FreshnessAt(*e, now) != Freshness::kStale && !guard_->TrustLocal(*e, now)) {
      *e = Supersede(std::move(*e), now);
    }
  }

  const std::unique_ptr<Tier> inner_;
  const LinkGuard* const guard_;
  Clock* const clock_;
};

}  // namespace

std::unique_ptr<Tier> NewGuardedTier(std::unique_ptr<Tier> inner, const LinkGuard* guard,
                                     Clock* clock) {
  return std::make_unique<GuardedTier>(std::move(inner), guard, clock);
}

}  // namespace fanout::cache
