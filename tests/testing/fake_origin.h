// An origin whose fetches stay pending until the test answers them.
#ifndef FANOUT_TESTS_TESTING_FAKE_ORIGIN_H_
#define FANOUT_TESTS_TESTING_FAKE_ORIGIN_H_

#include <deque>
#include <memory>
#include <string>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "cache/origin.h"

namespace fanout::testing {

class FakeOrigin final : public cache::Origin {
 public:
  void Fetch(absl::string_view ns, absl::string_view key, const cache::FetchContext& context,
             FetchDone done) override {
    absl::MutexLock l(&mu_);
    ++fetches_;
    pending_.push_back(Pending{std::string(ns), std::string(key), context, std::move(done)});
  }

  // After EnablePush, WatchChanges takes a sink and Push calls it (the
  // default: this origin does not push).
  void EnablePush() {
    absl::MutexLock l(&mu_);
    push_enabled_ = true;
  }
  absl::StatusOr<std::unique_ptr<cache::OriginWatch>> WatchChanges(ChangeSink sink) override {
    absl::MutexLock l(&mu_);
    if (!push_enabled_) return cache::Origin::WatchChanges(nullptr);
    sink_ = std::move(sink);
    return std::make_unique<cache::OriginWatch>();
  }
  // Calls the sink WatchChanges took (from the calling thread).
  void Push(cache::OriginChange change) { sink_(std::move(change)); }

  int fetches() const {
    absl::MutexLock l(&mu_);
    return fetches_;
  }
  size_t pending() const {
    absl::MutexLock l(&mu_);
    return pending_.size();
  }
  std::string pending_key(size_t i) const {
    absl::MutexLock l(&mu_);
    return pending_[i].key;
  }
  cache::FetchContext pending_context(size_t i) const {
    absl::MutexLock l(&mu_);
    return pending_[i].context;
  }

  // Answers the oldest pending fetch.
  void Answer(absl::StatusOr<cache::OriginValue> value) {
    FetchDone done;
    {
      absl::MutexLock l(&mu_);
      done = std::move(pending_.front().done);
      pending_.pop_front();
    }
    std::move(done)(std::move(value));
  }
  void AnswerValue(std::string value, int64_t version = 1,
                   absl::Duration ttl = absl::ZeroDuration()) {
    cache::OriginValue v;
    v.value = std::move(value);
    v.version = version;
    v.ttl = ttl;
    Answer(std::move(v));
  }

 private:
  struct Pending {
    std::string ns;
    std::string key;
    cache::FetchContext context;
    FetchDone done;
  };
  bool push_enabled_ ABSL_GUARDED_BY(mu_) = false;
  ChangeSink sink_;  // set by WatchChanges, before any Push
  mutable absl::Mutex mu_;
  std::deque<Pending> pending_ ABSL_GUARDED_BY(mu_);
  int fetches_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_FAKE_ORIGIN_H_
