#include "cache/invalidator.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace fanout::cache {

const char* LinkStateName(LinkState state) {
  switch (state) {
    case LinkState::kUp:
      return "up";
    case LinkState::kDegraded:
      return "degraded";
  }
  return "unknown";
}

Invalidator::Invalidator(ReadPath* read_path, InvalidationBus* bus, LinkGuard* guard, Clock* clock,
                         InvalidatorOptions options)
    : read_path_(read_path), bus_(bus), guard_(guard), clock_(clock), options_(options) {
  if (bus_ == nullptr) return;
  const absl::Time now = clock_->Now();
  // What L3 wrote before this start may have been invalidated meanwhile.
  guard_->DistrustLocalBefore(now);
  // Subscribed first, so that a change of state from now on is heard.
  {
    absl::MutexLock l(&mu_);
    link_ = LinkState::kDegraded;
    never_up_ = true;
  }
  guard_->SetDegraded(now);
  bus_->Subscribe(this);
  if (bus_->link_state() == LinkState::kUp) OnLinkState(LinkState::kUp);
}

Invalidator::~Invalidator() {
  if (bus_ != nullptr) bus_->Unsubscribe(this);
}

template <typename F>
void Invalidator::Notify(F f) {
  std::vector<InvalidationBus::Subscriber*> listeners;
  {
    absl::MutexLock l(&mu_);
    if (listeners_.empty()) return;
    listeners = listeners_;
    ++notifying_;
  }
  for (InvalidationBus::Subscriber* listener : listeners) f(listener);
  absl::MutexLock l(&mu_);
  --notifying_;
}

void Invalidator::AddListener(InvalidationBus::Subscriber* listener) {
  absl::MutexLock l(&mu_);
  listeners_.push_back(listener);
}

void Invalidator::RemoveListener(InvalidationBus::Subscriber* listener) {
  absl::MutexLock l(&mu_);
  listeners_.erase(std::remove(listeners_.begin(), listeners_.end(), listener), listeners_.end());
  mu_.Await(absl::Condition(
      +[](int* n) { return *n == 0; }, &notifying_));
}

void Invalidator::Invalidate(Invalidation invalidation, Done done) {
  {
    absl::MutexLock l(&mu_);
    ++made_;
  }
  const InvalidateScope scope{.tiers = InvalidateTiers::kAll,
                              .purge_survival = invalidation.purge_survival};
  if (bus_ == nullptr) {
    auto inv = std::make_shared<Invalidation>(std::move(invalidation));
    read_path_->Invalidate(
        inv->ns, inv->keys, inv->prefix, scope,
        [this, inv, done = std::move(done)](InvalidateOutcome outcome) mutable {
          Notify([&](InvalidationBus::Subscriber* s) { s->OnInvalidation(*inv); });
          if (!outcome.shared.ok()) {
            std::move(done)(absl::Status(
                outcome.shared.code(),
                absl::StrCat("erased ", outcome.evicted,
                             " entries from this pod's cache, but not from the shared tier: ",
                             outcome.shared.message())));
            return;
          }
          std::move(done)(Result{.evicted = outcome.evicted, .broadcast = false});
        });
    return;
  }

  // L1 at once, so this pod stops answering the old value now.
  uint64_t first = 0;
  read_path_->Invalidate(invalidation.ns, invalidation.keys, invalidation.prefix,
                         InvalidateScope{.tiers = InvalidateTiers::kL1},
                         [&first](InvalidateOutcome o) { first = o.evicted; });
  auto inv = std::make_shared<Invalidation>(invalidation);
  inv->sender = bus_->id();
  bus_->Publish(
      std::move(invalidation), clock_->Now() + options_.publish_timeout,
      [this, inv, first, purge = scope.purge_survival,
       done = std::move(done)](absl::Status published) mutable {
        // Again, now that L2 is erased: a read between the first pass and
        // L2's erase may have refilled L1 from L2.
        read_path_->Invalidate(
            inv->ns, inv->keys, inv->prefix,
            InvalidateScope{.tiers = InvalidateTiers::kLocal, .purge_survival = purge},
            [this, inv, first, published = std::move(published),
             done = std::move(done)](InvalidateOutcome outcome) mutable {
              const uint64_t evicted = first + outcome.evicted;
              Notify([&](InvalidationBus::Subscriber* s) { s->OnInvalidation(*inv); });
              if (!published.ok()) {
                {
                  absl::MutexLock l(&mu_);
                  ++not_broadcast_;
                }
                std::move(done)(absl::UnavailableError(absl::StrCat(
                    "erased ", evicted,
                    " entries from this pod's cache, but could not send the invalidation to "
                    "the other pods (they may keep serving the old value; retry): ",
                    published.message())));
                return;
              }
              std::move(done)(Result{.evicted = evicted, .broadcast = true});
            });
      });
}

void Invalidator::OnInvalidation(const Invalidation& invalidation) {
  {
    absl::MutexLock l(&mu_);
    ++applied_;
  }
  // L1 and the fills are done when this returns; L3 follows on its own.
  read_path_->Invalidate(invalidation.ns, invalidation.keys, invalidation.prefix,
                         InvalidateScope{.tiers = InvalidateTiers::kLocal,
                                         .purge_survival = invalidation.purge_survival},
                         [](InvalidateOutcome outcome) {
                           if (!outcome.local.ok()) {
                             FANOUT_LOG(WARNING)
                                 << "invalidation from another pod: " << outcome.local.message()
                                 << " (applied later)";
                           }
                         });
  Notify([&](InvalidationBus::Subscriber* s) { s->OnInvalidation(invalidation); });
}

void Invalidator::OnLinkState(LinkState state) {
  bool first_up = false;
  {
    absl::MutexLock l(&mu_);
    if (link_ == state) return;
    link_ = state;
    if (state == LinkState::kUp && never_up_) {
      never_up_ = false;
      first_up = true;
    }
  }
  if (first_up) {
    // The bus starts reading where the stream is at its first read: what
    // this pod cached before that may have been invalidated before it, and
    // would not be replayed. (Nothing, when the bus was up before the first
    // call was served.) So may what a fill under way now read, from L2 or
    // the origin, before that invalidation: such fills answer their readers
    // but put nothing in L1 or L3 (else this pod answers the old value until
    // its ttl). They still write L2, whose fence refuses a fill from before
    // an invalidation, so pods started together do not each ask the origin
    // again (which detaching them would make them do).
    const uint64_t dropped = read_path_->DropL1();
    if (dropped > 0) {
      absl::MutexLock l(&mu_);
      ++cache_drops_;
    }
    if (dropped > 0) {
      FANOUT_LOG(WARNING) << "invalidation link up for the first time: dropped " << dropped
                          << " entries cached before it";
    }
  }
  if (state == LinkState::kDegraded) {
    guard_->SetDegraded(clock_->Now());
    FANOUT_LOG(WARNING) << "invalidation link down: this pod's cached values are answered for at "
                           "most "
                        << absl::FormatDuration(guard_->max_local_ttl())
                        << " (invalidation.max_local_ttl) until it is back";
  } else {
    guard_->SetUp();
    FANOUT_LOG(INFO) << "invalidation link up";
  }
  Notify([&](InvalidationBus::Subscriber* s) { s->OnLinkState(state); });
}

void Invalidator::OnGap() {
  const uint64_t dropped = read_path_->InvalidateAll();
  guard_->DistrustLocalBefore(clock_->Now());
  {
    absl::MutexLock l(&mu_);
    ++cache_drops_;
  }
  FANOUT_LOG(WARNING) << "invalidations were missed and cannot be replayed: dropped " << dropped
                      << " cached entries; survival-tier copies serve only as stale fallbacks";
  Notify([](InvalidationBus::Subscriber* s) { s->OnGap(); });
}

uint64_t Invalidator::InvalidateEverything() {
  const uint64_t dropped = read_path_->InvalidateAll();
  guard_->DistrustLocalBefore(clock_->Now());
  {
    absl::MutexLock l(&mu_);
    ++cache_drops_;
  }
  Notify([](InvalidationBus::Subscriber* s) { s->OnGap(); });
  return dropped;
}

LinkState Invalidator::link_state() const {
  absl::MutexLock l(&mu_);
  return link_;
}

InvalidatorStats Invalidator::Stats() const {
  InvalidatorStats s;
  s.has_bus = bus_ != nullptr;
  if (bus_ != nullptr) s.bus = bus_->Stats();
  absl::MutexLock l(&mu_);
  s.made = made_;
  s.not_broadcast = not_broadcast_;
  s.applied = applied_;
  s.cache_drops = cache_drops_;
  s.link = link_;
  return s;
}

}  // namespace fanout::cache
