// An in-memory invalidation bus for tests: several FakeInvalidationBus
// instances (one per simulated pod) share one FakeBusLog (the shared store).
// Nothing moves by itself: Pump() delivers what a bus has not yet delivered,
// so a test decides exactly when each pod learns of each message.
//
//   FakeBusLog log;
//   FakeInvalidationBus a(&log, "a"), b(&log, "b");
//   a.Publish(...);   // in the log; a's own subscribers are not called
//   b.Pump();         // b's subscribers get it
//   b.SetLink(kDegraded); a.Publish(...); b.Pump();  // nothing while down
//   log.Trim(1);      // drop all but the newest entry
//   b.SetLink(kUp); b.Pump();  // OnGap (what b missed was trimmed), then the rest
//
// Thread-safe; callbacks run on the thread calling Pump or SetLink.
#ifndef FANOUT_TESTS_TESTING_FAKE_INVALIDATION_BUS_H_
#define FANOUT_TESTS_TESTING_FAKE_INVALIDATION_BUS_H_

#include <algorithm>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cache/invalidation_bus.h"

namespace fanout::testing {

class FakeBusLog {
 public:
  // Appends; returns the entry's position (from 1).
  uint64_t Append(cache::Invalidation inv) {
    absl::MutexLock l(&mu_);
    entries_.push_back(std::move(inv));
    return first_ + entries_.size() - 1;
  }
  // Keeps only the newest `keep` entries.
  void Trim(size_t keep) {
    absl::MutexLock l(&mu_);
    while (entries_.size() > keep) {
      entries_.pop_front();
      ++first_;
    }
  }
  // The position after the last entry.
  uint64_t end() const {
    absl::MutexLock l(&mu_);
    return first_ + entries_.size();
  }
  // Entries from `from` on; *gap is set when some of them were trimmed.
  std::vector<std::pair<uint64_t, cache::Invalidation>> From(uint64_t from, bool* gap) const {
    absl::MutexLock l(&mu_);
    *gap = from < first_;
    std::vector<std::pair<uint64_t, cache::Invalidation>> out;
    for (uint64_t p = std::max(from, first_); p < first_ + entries_.size(); ++p) {
      out.emplace_back(p, entries_[p - first_]);
    }
    return out;
  }

 private:
  mutable absl::Mutex mu_;
  std::deque<cache::Invalidation> entries_ ABSL_GUARDED_BY(mu_);
  uint64_t first_ ABSL_GUARDED_BY(mu_) = 1;
};

class FakeInvalidationBus final : public cache::InvalidationBus {
 public:
  // Starts up, reading from the log's end.
  FakeInvalidationBus(FakeBusLog* log, std::string id)
      : log_(log), id_(std::move(id)), next_(log->end()) {}

  // Publish fails with this while set (the entry is not logged).
  void set_publish_failure(absl::Status s) {
    absl::MutexLock l(&mu_);
    publish_failure_ = std::move(s);
  }

  // While holding, Publish calls wait (unlogged, unanswered) until
  // ReleaseHeld().
  void set_hold(bool hold) {
    absl::MutexLock l(&mu_);
    hold_ = hold;
  }
  void ReleaseHeld() {
    std::vector<std::pair<cache::Invalidation, PublishDone>> held;
    {
      absl::MutexLock l(&mu_);
      held.swap(held_);
    }
    for (auto& [inv, done] : held) Publish(std::move(inv), absl::InfiniteFuture(), std::move(done));
  }
  size_t held() const {
    absl::MutexLock l(&mu_);
    return held_.size();
  }

  void Publish(cache::Invalidation inv, absl::Time, PublishDone done) override {
    absl::Status failure;
    {
      absl::MutexLock l(&mu_);
      if (hold_) {
        held_.emplace_back(std::move(inv), std::move(done));
        return;
      }
      failure = publish_failure_;
      if (failure.ok()) {
        inv.sender = id_;
        inv.sequence = ++sequence_;
        ++stats_.published;
        published_.push_back(inv);
      } else {
        ++stats_.publish_failures;
      }
    }
    if (inv.keys.empty() && inv.prefix.empty()) failure = absl::InvalidArgumentError("empty");
    if (failure.ok()) log_->Append(std::move(inv));
    std::move(done)(failure);
  }

  // Moves the read position to the log's end: what was logged before is
  // never delivered. A real bus learns where to start at its first read,
  // which may come after entries logged since it was made.
  void SkipToEnd() {
    const uint64_t end = log_->end();
    absl::MutexLock l(&mu_);
    next_ = end;
  }

  // Delivers what was logged since the last Pump (nothing while degraded).
  // Returns how many messages it delivered.
  int Pump() {
    uint64_t from;
    {
      absl::MutexLock l(&mu_);
      if (link_ != cache::LinkState::kUp) return 0;
      from = next_;
    }
    bool gap = false;
    auto entries = log_->From(from, &gap);
    if (gap) {
      {
        absl::MutexLock l(&mu_);
        ++stats_.gaps;
      }
      ForEach([](Subscriber* s) { s->OnGap(); });
    }
    int delivered = 0;
    for (auto& [pos, inv] : entries) {
      {
        absl::MutexLock l(&mu_);
        next_ = pos + 1;
        if (inv.sender == id_) continue;
        ++stats_.received;
      }
      ForEach([&inv = inv](Subscriber* s) { s->OnInvalidation(inv); });
      ++delivered;
    }
    if (entries.empty() && gap) {
      absl::MutexLock l(&mu_);
      next_ = log_->end();
    }
    return delivered;
  }

  void SetLink(cache::LinkState state) {
    {
      absl::MutexLock l(&mu_);
      if (link_ == state) return;
      link_ = state;
      if (state == cache::LinkState::kDegraded) ++stats_.link_downs;
    }
    ForEach([state](Subscriber* s) { s->OnLinkState(state); });
  }

  void Subscribe(Subscriber* s) override {
    absl::MutexLock l(&mu_);
    subscribers_.push_back(s);
  }
  void Unsubscribe(Subscriber* s) override {
    absl::MutexLock l(&mu_);
    subscribers_.erase(std::remove(subscribers_.begin(), subscribers_.end(), s),
                       subscribers_.end());
  }
  cache::LinkState link_state() const override {
    absl::MutexLock l(&mu_);
    return link_;
  }
  const std::string& id() const override { return id_; }
  cache::InvalidationBusStats Stats() const override {
    absl::MutexLock l(&mu_);
    cache::InvalidationBusStats s = stats_;
    s.link = link_;
    s.last_applied = absl::StrCat(next_ - 1);
    return s;
  }
  std::vector<cache::Invalidation> published() const {
    absl::MutexLock l(&mu_);
    return published_;
  }

 private:
  template <typename F>
  void ForEach(F f) {
    std::vector<Subscriber*> subs;
    {
      absl::MutexLock l(&mu_);
      subs = subscribers_;
    }
    for (Subscriber* s : subs) f(s);
  }

  FakeBusLog* const log_;
  const std::string id_;
  mutable absl::Mutex mu_;
  uint64_t next_ ABSL_GUARDED_BY(mu_);
  uint64_t sequence_ ABSL_GUARDED_BY(mu_) = 0;
  cache::LinkState link_ ABSL_GUARDED_BY(mu_) = cache::LinkState::kUp;
  absl::Status publish_failure_ ABSL_GUARDED_BY(mu_);
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::pair<cache::Invalidation, PublishDone>> held_ ABSL_GUARDED_BY(mu_);
  std::vector<Subscriber*> subscribers_ ABSL_GUARDED_BY(mu_);
  std::vector<cache::Invalidation> published_ ABSL_GUARDED_BY(mu_);
  cache::InvalidationBusStats stats_ ABSL_GUARDED_BY(mu_);
};

// Records what a subscriber hears, for assertions. Thread-safe.
class RecordingSubscriber final : public cache::InvalidationBus::Subscriber {
 public:
  void OnInvalidation(const cache::Invalidation& inv) override {
    absl::MutexLock l(&mu_);
    events_.push_back(absl::StrCat("inv ", inv.ns, ":", inv.prefix, "[",
                                   inv.keys.empty() ? "" : inv.keys.front(), "]"));
    invalidations_.push_back(inv);
  }
  void OnLinkState(cache::LinkState state) override {
    absl::MutexLock l(&mu_);
    events_.push_back(absl::StrCat("link ", cache::LinkStateName(state)));
  }
  void OnGap() override {
    absl::MutexLock l(&mu_);
    events_.push_back("gap");
  }
  std::vector<std::string> events() const {
    absl::MutexLock l(&mu_);
    return events_;
  }
  std::vector<cache::Invalidation> invalidations() const {
    absl::MutexLock l(&mu_);
    return invalidations_;
  }
  // Waits (bounded) until `n` events were heard.
  bool WaitForEvents(size_t n, absl::Duration timeout) const {
    absl::MutexLock l(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return events_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::string> events_ ABSL_GUARDED_BY(mu_);
  std::vector<cache::Invalidation> invalidations_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_FAKE_INVALIDATION_BUS_H_
