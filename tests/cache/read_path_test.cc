#include "cache/read_path.h"

#include <functional>
#include <optional>
#include <thread>
#include <variant>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cache/l1/wtinylfu_cache.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_fill_lease.h"
#include "tests/testing/fake_origin.h"
#include "tests/testing/fake_tier.h"
#include "tests/testing/manual_executor.h"
#include "tests/testing/status_matchers.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::FakeFillLease;
using ::fanout::testing::FakeOrigin;
using ::fanout::testing::FakeTier;
using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;

using Slot = std::shared_ptr<std::optional<absl::StatusOr<ReadResult>>>;

// A pod's view of a tier every pod shares (not owned): several read paths
// over one FakeTier.
class SharedTier final : public Tier {
 public:
  explicit SharedTier(Tier* shared) : shared_(shared) {}
  TierId id() const override { return shared_->id(); }
  void Lookup(absl::string_view key, absl::Time deadline, LookupDone done) override {
    shared_->Lookup(key, deadline, std::move(done));
  }
  void LookupMany(std::vector<std::string> keys, absl::Time deadline,
                  LookupManyDone done) override {
    shared_->LookupMany(std::move(keys), deadline, std::move(done));
  }
  void Store(absl::string_view key, const Entry& entry, StoreDone done) override {
    shared_->Store(key, entry, std::move(done));
  }
  void Erase(std::vector<std::string> keys, std::string prefix, EraseMode mode, absl::Time deadline,
             EraseDone done) override {
    shared_->Erase(std::move(keys), std::move(prefix), mode, deadline, std::move(done));
  }
  TierStats Stats() const override { return shared_->Stats(); }

 private:
  Tier* const shared_;
};

// A pod's view of the fill lease every pod shares (not owned).
class SharedLease final : public FillLease {
 public:
  explicit SharedLease(FillLease* shared) : shared_(shared) {}
  void Acquire(absl::string_view key, absl::Duration ttl, absl::Time deadline,
               AcquireDone done) override {
    shared_->Acquire(key, ttl, deadline, std::move(done));
  }
  void Release(absl::string_view key, absl::string_view token, absl::Time deadline,
               ReleaseDone done) override {
    shared_->Release(key, token, deadline, std::move(done));
  }
  void AwaitFill(absl::string_view key, absl::Time newer_than, absl::Time deadline,
                 AwaitDone done) override {
    shared_->AwaitFill(key, newer_than, deadline, std::move(done));
  }
  FillLeaseStats Stats() const override { return shared_->Stats(); }

 private:
  FillLease* const shared_;
};

// The read path runs over both L1 engines: production uses W-TinyLFU, which
// may decline an insert; these tests use small values, which its window
// always admits, and never assume more than that.
struct Engine {
  std::string name;
  std::function<std::unique_ptr<L1Cache>()> make;
  friend void PrintTo(const Engine& e, std::ostream* os) { *os << e.name; }
};

class ReadPathTest : public ::testing::TestWithParam<Engine> {
 protected:
  ReadPathTest() {
    options_.ttl = absl::Seconds(10);
    options_.refresh_ahead = 0.5;
    options_.xfetch_beta = 0;  // the fixed refresh window; the XFetch tests set it
    options_.stale_ttl = absl::Seconds(100);
    options_.default_max_stale = absl::Seconds(30);
    options_.ttl_jitter = 0;  // exact windows; one test covers the jitter
    options_.negative_ttl = absl::Seconds(5);
    options_.retry_backoff = absl::Seconds(1);
    options_.max_retry_backoff = absl::Seconds(8);
    Build({});
  }

  void Build(std::vector<std::unique_ptr<Tier>> lower) {
    path_.reset();
    path_ = std::make_unique<ReadPath>(options_, GetParam().make(), std::move(lower), &origin_,
                                       &executor_);
  }
  // Rebuilds with one lower tier (L2 or L3) and returns it.
  FakeTier* BuildWithTier(TierId id) {
    auto tier = std::make_unique<FakeTier>(id, executor_.clock());
    FakeTier* raw = tier.get();
    std::vector<std::unique_ptr<Tier>> lower;
    lower.push_back(std::move(tier));
    Build(std::move(lower));
    return raw;
  }

  // A pod: a read path of its own over the L2 and the lease every pod
  // shares (shared_l2_, lease_), the same origin and executor.
  std::unique_ptr<ReadPath> Pod() {
    std::vector<std::unique_ptr<Tier>> lower;
    lower.push_back(std::make_unique<SharedTier>(&shared_l2_));
    return std::make_unique<ReadPath>(options_, GetParam().make(), std::move(lower), &origin_,
                                      &executor_, std::make_unique<SharedLease>(&lease_));
  }

  // Starts a Get; the result lands in the returned slot when it completes.
  Slot StartGet(absl::string_view key, ReadOptions options = {}) {
    return StartGetOn(*path_, key, options);
  }
  static Slot StartGetOn(ReadPath& path, absl::string_view key, ReadOptions options = {}) {
    auto slot = std::make_shared<std::optional<absl::StatusOr<ReadResult>>>();
    path.Get("ns", key, options, [slot](absl::StatusOr<ReadResult> r) { *slot = std::move(r); });
    return slot;
  }
  // Fills `key` from the origin with `value`.
  void Fill(absl::string_view key, std::string value, int64_t version = 1) {
    auto r = StartGet(key);
    origin_.AnswerValue(std::move(value), version);
    ASSERT_TRUE(r->has_value());
    ASSERT_OK(r->value());
  }

  ReadOptions WithDeadline(absl::Duration d) {
    ReadOptions o;
    o.deadline = Now() + d;
    return o;
  }
  absl::Time Now() { return executor_.clock()->Now(); }
  // Moves the fake clock, firing the timers that come due.
  void Advance(absl::Duration d) { executor_.AdvanceTime(d); }
  Entry EntryAt(std::string value, absl::Time fetched_at) {
    Entry e;
    e.value = std::move(value);
    e.fetched_at = fetched_at;
    e.fresh_until = fetched_at + absl::Seconds(5);
    e.expires_at = fetched_at + absl::Seconds(10);
    e.stale_until = fetched_at + absl::Seconds(100);
    return e;
  }

  ReadPathOptions options_;
  testing::ManualExecutor executor_;
  FakeOrigin origin_;
  FakeTier shared_l2_{TierId::kL2, executor_.clock()};
  FakeFillLease lease_{executor_.clock(), &shared_l2_};
  std::unique_ptr<ReadPath> path_;
};

TEST_P(ReadPathTest, GetMissFetchesOriginThenServesFromL1) {
  auto first = StartGet("flags/a");
  ASSERT_EQ(origin_.pending(), 1u);
  EXPECT_EQ(origin_.pending_key(0), "flags/a");
  origin_.AnswerValue("on", 7);
  ASSERT_TRUE(first->has_value());
  ASSERT_TRUE(first->value().ok());
  EXPECT_EQ(first->value()->value, "on");
  EXPECT_EQ(first->value()->served_by, TierId::kOrigin);
  EXPECT_EQ(first->value()->version, 7);

  Advance(absl::Seconds(2));
  auto second = StartGet("flags/a");
  ASSERT_TRUE(second->has_value());  // answered inline
  EXPECT_EQ(second->value()->served_by, TierId::kL1);
  EXPECT_EQ(second->value()->age, absl::Seconds(2));
  EXPECT_FALSE(second->value()->stale);
  EXPECT_EQ(origin_.fetches(), 1);
}

TEST_P(ReadPathTest, GetCoalescesConcurrentMissesIntoOneFetchSharingTheValue) {
  std::vector<Slot> reads;
  for (int i = 0; i < 50; ++i) reads.push_back(StartGet("hot"));
  EXPECT_EQ(origin_.fetches(), 1);
  origin_.AnswerValue(std::string(4096, 'v'));
  const char* bytes = nullptr;
  for (const auto& r : reads) {
    ASSERT_TRUE(r->has_value());
    ASSERT_OK(r->value());
    EXPECT_EQ(r->value()->value.size(), 4096u);
    // One buffer for every waiter: no copy per waiter.
    if (bytes == nullptr) bytes = r->value()->value.view().data();
    EXPECT_EQ(r->value()->value.view().data(), bytes);
  }
  EXPECT_EQ(path_->Stats().coalesced, 49u);
}

TEST_P(ReadPathTest, GetInRefreshWindowServesCachedAndRefreshesOnce) {
  Fill("k", "old", 1);
  Advance(absl::Seconds(6));  // past fresh_until (5 s), before expiry (10 s)
  auto r1 = StartGet("k");
  auto r2 = StartGet("k");
  ASSERT_TRUE(r1->has_value());
  EXPECT_EQ(r1->value()->value, "old");
  EXPECT_EQ(r2->value()->value, "old");
  EXPECT_EQ(origin_.fetches(), 1);  // the refresh starts on the executor
  executor_.RunUntilIdle();
  EXPECT_EQ(origin_.fetches(), 2);  // one background refresh for both reads
  origin_.AnswerValue("new", 2);
  auto r3 = StartGet("k");
  EXPECT_EQ(r3->value()->value, "new");
  EXPECT_EQ(r3->value()->age, absl::ZeroDuration());
  EXPECT_EQ(path_->Stats().refreshes_ahead, 1u);
}

TEST_P(ReadPathTest, GetRefreshAheadCopiesTheKeyBeforeAnswering) {
  Fill("flags/refresh-me", "old");
  Advance(absl::Seconds(6));
  // The caller's request (holding the key) ends as soon as it is answered.
  auto key = std::make_unique<std::string>("flags/refresh-me");
  auto ns = std::make_unique<std::string>("ns");
  std::optional<absl::StatusOr<ReadResult>> result;
  path_->Get(*ns, *key, {}, [&](absl::StatusOr<ReadResult> r) {
    result = std::move(r);
    key->assign(key->size(), 'X');
    ns->assign(ns->size(), 'Y');
    key.reset();
    ns.reset();
  });
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->value().value, "old");
  executor_.RunUntilIdle();
  ASSERT_EQ(origin_.pending(), 1u);
  EXPECT_EQ(origin_.pending_key(0), "flags/refresh-me");
  origin_.AnswerValue("new");
  EXPECT_EQ(StartGet("flags/refresh-me")->value()->value, "new");
}

TEST_P(ReadPathTest, GetRefreshAheadFailureKeepsCachedValueAndBacksOff) {
  Fill("k", "good");
  Advance(absl::Seconds(6));
  EXPECT_EQ(StartGet("k")->value()->value, "good");
  executor_.RunUntilIdle();
  ASSERT_EQ(origin_.pending(), 1u);
  origin_.Answer(absl::UnavailableError("origin down"));
  EXPECT_EQ(path_->Stats().origin_failures, 1u);
  // The failed refresh neither evicted nor replaced the value, and reads in
  // the backoff start no new refresh.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(StartGet("k")->value()->value, "good");
  executor_.RunUntilIdle();
  EXPECT_EQ(origin_.fetches(), 2);
  Advance(absl::Seconds(1));  // the backoff (1 s) has passed
  EXPECT_EQ(StartGet("k")->value()->value, "good");
  executor_.RunUntilIdle();
  EXPECT_EQ(origin_.fetches(), 3);
  origin_.AnswerValue("fresh");
  EXPECT_EQ(StartGet("k")->value()->value, "fresh");
}

TEST_P(ReadPathTest, GetRefreshAheadBeyondCapSkipsTheRefresh) {
  options_.max_background_refreshes = 2;
  Build({});
  for (const char* k : {"a", "b", "c"}) Fill(k, "v");
  Advance(absl::Seconds(6));
  for (const char* k : {"a", "b", "c"}) EXPECT_EQ(StartGet(k)->value()->value, "v");
  executor_.RunUntilIdle();
  EXPECT_EQ(origin_.pending(), 2u);
  EXPECT_EQ(path_->Stats().refreshes_skipped, 1u);
  origin_.AnswerValue("v2");
  // A slot is free again: the skipped key refreshes on its next read.
  StartGet("c");
  executor_.RunUntilIdle();
  EXPECT_EQ(origin_.pending(), 2u);
  EXPECT_EQ(origin_.pending_key(1), "c");
}

TEST_P(ReadPathTest, GetServesStaleWhenOriginDown) {
  Fill("k", "last-known", 3);
  Advance(absl::Seconds(20));  // expired 10 s ago
  auto r = StartGet("k");
  ASSERT_FALSE(r->has_value());
  origin_.Answer(absl::UnavailableError("connection refused"));
  ASSERT_TRUE(r->has_value());
  ASSERT_TRUE(r->value().ok()) << r->value().status();
  EXPECT_EQ(r->value()->value, "last-known");
  EXPECT_TRUE(r->value()->stale);
  EXPECT_EQ(r->value()->age, absl::Seconds(20));
  EXPECT_EQ(path_->Stats().stale_served, 1u);
}

TEST_P(ReadPathTest, GetUnavailableWhenStaleBeyondCallersMaxStale) {
  Fill("k", "v");
  Advance(absl::Seconds(20));
  ReadOptions strict;
  strict.max_stale = absl::Seconds(5);
  auto r = StartGet("k", strict);
  origin_.Answer(absl::UnavailableError("down"));
  EXPECT_THAT(r->value(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("max_stale")));
}

TEST_P(ReadPathTest, GetHangingOriginServesStaleBeforeCallersDeadline) {
  Fill("k", "last-known");
  Advance(absl::Seconds(20));
  auto r = StartGet("k", WithDeadline(absl::Milliseconds(200)));
  Advance(absl::Milliseconds(179));
  EXPECT_FALSE(r->has_value());
  Advance(absl::Milliseconds(1));  // 20 ms before the deadline
  ASSERT_TRUE(r->has_value());
  ASSERT_OK(r->value());
  EXPECT_EQ(r->value()->value, "last-known");
  EXPECT_TRUE(r->value()->stale);
  EXPECT_EQ(path_->Stats().deadline_answers, 1u);
  // The fill went on without the caller, and still fills the cache.
  ASSERT_EQ(origin_.pending(), 1u);
  origin_.AnswerValue("late");
  auto after = StartGet("k");
  ASSERT_TRUE(after->has_value());
  EXPECT_EQ(after->value()->value, "late");
  EXPECT_EQ(after->value()->served_by, TierId::kL1);
}

TEST_P(ReadPathTest, GetHangingOriginWithoutStaleCopyFailsBeforeCallersDeadline) {
  auto r = StartGet("k", WithDeadline(absl::Milliseconds(30)));
  auto patient = StartGet("k");
  Advance(absl::Milliseconds(14));
  EXPECT_FALSE(r->has_value());
  Advance(absl::Milliseconds(1));  // half of a short deadline is the margin
  ASSERT_TRUE(r->has_value());
  EXPECT_THAT(r->value(), StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("\"k\"")));
  EXPECT_FALSE(patient->has_value());
  origin_.AnswerValue("v");
  EXPECT_EQ(patient->value()->value, "v");
}

TEST_P(ReadPathTest, GetWithDeadlineAfterTheFillsOwnSetsNoTimer) {
  StartGet("k", WithDeadline(absl::Seconds(10)));  // origin_timeout is 2 s
  EXPECT_EQ(executor_.pending_timers(), 0u);
  StartGet("other", WithDeadline(absl::Seconds(1)));
  EXPECT_EQ(executor_.pending_timers(), 1u);
  origin_.AnswerValue("v");
  origin_.AnswerValue("v");
  EXPECT_EQ(executor_.pending_timers(), 0u);  // cancelled with its answer
}

TEST_P(ReadPathTest, GetCancelledCallerIsAnsweredAtOnceAndTheFillGoesOn) {
  CancellationSource caller;
  ReadOptions o;
  o.cancel = caller.token();
  auto r = StartGet("k", o);
  auto other = StartGet("k");
  caller.Cancel();
  ASSERT_TRUE(r->has_value());
  EXPECT_THAT(r->value(), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(path_->Stats().cancelled, 1u);
  EXPECT_FALSE(other->has_value());
  origin_.AnswerValue("v");
  EXPECT_EQ(other->value()->value, "v");
  EXPECT_EQ(StartGet("k")->value()->served_by, TierId::kL1);
}

TEST_P(ReadPathTest, GetAlreadyCancelledAnswersCancelled) {
  CancellationSource caller;
  caller.Cancel();
  ReadOptions o;
  o.cancel = caller.token();
  EXPECT_THAT(StartGet("k", o)->value(), StatusIs(absl::StatusCode::kCancelled));
}

TEST_P(ReadPathTest, GetOriginFailureBacksOffThenAsksAgain) {
  auto r1 = StartGet("k");
  origin_.Answer(absl::UnavailableError("down"));
  EXPECT_THAT(r1->value(), StatusIs(absl::StatusCode::kUnavailable));
  // In the backoff: answered at once, naming it, without a fetch.
  auto r2 = StartGet("k");
  ASSERT_TRUE(r2->has_value());
  EXPECT_THAT(r2->value(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cache.retry_backoff")));
  EXPECT_EQ(origin_.fetches(), 1);
  EXPECT_EQ(path_->Stats().backoff_answers, 1u);
  Advance(absl::Seconds(1));
  auto r3 = StartGet("k");
  EXPECT_EQ(origin_.fetches(), 2);  // no cached failure past the backoff
  origin_.Answer(absl::UnavailableError("still down"));
  // The second failure in a row doubles the backoff.
  Advance(absl::Milliseconds(1999));
  StartGet("k");
  EXPECT_EQ(origin_.fetches(), 2);
  Advance(absl::Milliseconds(1));
  auto r4 = StartGet("k");
  EXPECT_EQ(origin_.fetches(), 3);
  origin_.AnswerValue("back");
  EXPECT_EQ(r4->value()->value, "back");
}

TEST_P(ReadPathTest, GetOriginFailureBackoffNeverExceedsTheTtl) {
  // An origin down for long has its keys asked again at least once a ttl,
  // so values are fresh again within a ttl of its return.
  options_.ttl = absl::Seconds(3);
  options_.max_retry_backoff = absl::Seconds(30);
  BuildWithTier(TierId::kL2);
  int fetches = 0;
  for (int i = 0; i < 6; ++i) {
    StartGet("k");
    ASSERT_EQ(origin_.fetches(), ++fetches) << "failure " << i;
    origin_.Answer(absl::UnavailableError("down"));
    Advance(absl::Seconds(3));
  }
  auto back = StartGet("k");
  ASSERT_EQ(origin_.fetches(), fetches + 1);
  origin_.AnswerValue("back");
  EXPECT_EQ(back->value()->value, "back");
}

TEST_P(ReadPathTest, GetDuringBackoffServesStaleCopyAtOnce) {
  Fill("k", "last-known");
  Advance(absl::Seconds(20));
  auto r1 = StartGet("k");
  origin_.Answer(absl::UnavailableError("down"));
  ASSERT_TRUE(r1->value()->stale);
  auto r2 = StartGet("k");
  ASSERT_TRUE(r2->has_value());
  EXPECT_EQ(r2->value()->value, "last-known");
  EXPECT_TRUE(r2->value()->stale);
  EXPECT_EQ(origin_.fetches(), 2);
}

TEST_P(ReadPathTest, GetPermanentOriginErrorIsRepeatedDuringBackoff) {
  auto r1 = StartGet("k");
  origin_.Answer(absl::FailedPreconditionError("value is too large (limits.max_value_bytes)"));
  EXPECT_THAT(r1->value(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(StartGet("k")->value(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("limits.max_value_bytes")));
  EXPECT_EQ(origin_.fetches(), 1);
}

TEST_P(ReadPathTest, GetNotFoundIsRememberedForNegativeTtl) {
  auto r1 = StartGet("missing");
  origin_.Answer(absl::NotFoundError("no such key"));
  EXPECT_THAT(r1->value(), StatusIs(absl::StatusCode::kNotFound, HasSubstr("\"missing\"")));
  auto r2 = StartGet("missing");
  ASSERT_TRUE(r2->has_value());
  EXPECT_THAT(r2->value(), StatusIs(absl::StatusCode::kNotFound, HasSubstr("\"missing\"")));
  EXPECT_EQ(origin_.fetches(), 1);
  EXPECT_EQ(path_->Stats().negative_hits, 1u);
  Advance(absl::Seconds(5));
  StartGet("missing");
  EXPECT_EQ(origin_.fetches(), 2);
}

TEST_P(ReadPathTest, GetBypassCacheIgnoresRememberedNotFound) {
  StartGet("missing");
  origin_.Answer(absl::NotFoundError("no such key"));
  ReadOptions bypass;
  bypass.bypass_cache = true;
  auto r = StartGet("missing", bypass);
  EXPECT_EQ(origin_.fetches(), 2);
  origin_.AnswerValue("created");
  EXPECT_EQ(r->value()->value, "created");
}

TEST_P(ReadPathTest, GetBypassCacheAsksTheOriginDuringBackoff) {
  StartGet("flaky");
  origin_.Answer(absl::UnavailableError("down"));
  EXPECT_THAT(StartGet("flaky")->value(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(origin_.fetches(), 1);  // an ordinary read waits out the backoff
  ReadOptions bypass;
  bypass.bypass_cache = true;
  auto r = StartGet("flaky", bypass);
  EXPECT_EQ(origin_.fetches(), 2);
  origin_.AnswerValue("back");
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ(r->value()->value, "back");
}

TEST_P(ReadPathTest, InvalidateForgetsRememberedNotFoundAndBackoff) {
  StartGet("missing");
  origin_.Answer(absl::NotFoundError("no such key"));
  StartGet("flaky");
  origin_.Answer(absl::UnavailableError("down"));
  path_->Invalidate("ns", {"missing", "flaky"}, "", false, [](absl::StatusOr<uint64_t>) {});
  StartGet("missing");
  StartGet("flaky");
  EXPECT_EQ(origin_.fetches(), 4);
}

TEST_P(ReadPathTest, GetOriginFailureNeverEvictsCachedValue) {
  Fill("k", "good");
  ReadOptions bypass;
  bypass.bypass_cache = true;
  auto r = StartGet("k", bypass);
  origin_.Answer(absl::InternalError("garbage answer"));
  // The cached value is the fallback of a bypass_cache read...
  ASSERT_TRUE(r->has_value());
  ASSERT_OK(r->value());
  EXPECT_EQ(r->value()->value, "good");
  EXPECT_TRUE(r->value()->stale);
  // ... and is still cached.
  auto after = StartGet("k");
  ASSERT_TRUE(after->has_value());
  EXPECT_EQ(after->value()->value, "good");
  EXPECT_EQ(after->value()->served_by, TierId::kL1);
}

TEST_P(ReadPathTest, GetNotFoundNamesKeyAndDropsCachedCopy) {
  Fill("gone", "v");
  ReadOptions bypass;
  bypass.bypass_cache = true;
  auto r = StartGet("gone", bypass);
  origin_.Answer(absl::NotFoundError("no such key"));
  EXPECT_THAT(r->value(), StatusIs(absl::StatusCode::kNotFound, HasSubstr("\"gone\"")));
  EXPECT_EQ(path_->l1().Stats().entries, 0u);
}

TEST_P(ReadPathTest, GetBypassCacheReadsOriginAndRefreshesL1) {
  Fill("k", "v1");
  ReadOptions bypass;
  bypass.bypass_cache = true;
  auto r = StartGet("k", bypass);
  ASSERT_FALSE(r->has_value());
  origin_.AnswerValue("v2");
  EXPECT_EQ(r->value()->served_by, TierId::kOrigin);
  EXPECT_EQ(StartGet("k")->value()->value, "v2");
}

TEST_P(ReadPathTest, GetBypassCacheSkipsLowerTiers) {
  FakeTier* l2 = BuildWithTier(TierId::kL2);
  l2->Put(CompositeKey("ns", "k"), EntryAt("from-l2", Now()));
  ReadOptions bypass;
  bypass.bypass_cache = true;
  auto r = StartGet("k", bypass);
  EXPECT_EQ(l2->lookups(), 0);
  ASSERT_EQ(origin_.pending(), 1u);
  origin_.AnswerValue("from-origin");
  EXPECT_EQ(r->value()->served_by, TierId::kOrigin);
}

TEST_P(ReadPathTest, FillSpreadsExpiryByJitter) {
  options_.ttl_jitter = 0.1;
  FakeTier* l2 = BuildWithTier(TierId::kL2);
  const absl::Time start = Now();
  absl::flat_hash_map<int64_t, int> distinct;
  for (int i = 0; i < 40; ++i) {
    const std::string key = absl::StrCat("k", i);
    Fill(key, "v");
    std::optional<Entry> e = l2->Get(CompositeKey("ns", key));
    ASSERT_TRUE(e.has_value());
    EXPECT_GE(e->expires_at, start + absl::Seconds(9));
    EXPECT_LE(e->expires_at, start + absl::Seconds(11));
    EXPECT_EQ(e->fresh_until - start, (e->expires_at - start) * options_.refresh_ahead);
    ++distinct[absl::ToInt64Milliseconds(e->expires_at - start)];
  }
  EXPECT_GT(distinct.size(), 20u);
}

TEST_P(ReadPathTest, InvalidateDuringFillDoesNotCacheTheValue) {
  auto r = StartGet("k");
  std::optional<absl::StatusOr<uint64_t>> evicted;
  path_->Invalidate("ns", {"k"}, "", false, [&](absl::StatusOr<uint64_t> n) { evicted = n; });
  origin_.AnswerValue("from-before-the-invalidation");
  EXPECT_EQ(r->value()->value, "from-before-the-invalidation");  // the waiter still gets it
  StartGet("k");
  EXPECT_EQ(origin_.fetches(), 2);  // but it was not cached
}

TEST_P(ReadPathTest, GetAfterInvalidateDuringFillStartsNewFill) {
  auto before = StartGet("flags/x");
  path_->Invalidate("ns", {}, "flags/", false, [](absl::StatusOr<uint64_t>) {});
  auto after = StartGet("flags/x");
  ASSERT_EQ(origin_.fetches(), 2);  // did not join the detached fill
  EXPECT_EQ(path_->Stats().detached_fills, 1u);
  EXPECT_EQ(path_->Stats().coalesced, 0u);
  // The detached fill answers last, with the old value: only its own reader
  // gets it, and it is not cached over the new one.
  origin_.AnswerValue("old");
  origin_.Answer(absl::NotFoundError("no such key"));  // the new fill: deleted since
  EXPECT_EQ(before->value()->value, "old");
  EXPECT_THAT(after->value(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(StartGet("flags/x")->value(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(origin_.fetches(), 2);  // remembered NotFound, not the old value
}

TEST_P(ReadPathTest, DetachedFillNotFoundDoesNotEraseNewerValue) {
  FakeTier* l2 = BuildWithTier(TierId::kL2);
  l2->set_hang(true);
  auto before = StartGet("k");  // held in the L2 lookup
  path_->Invalidate("ns", {"k"}, "", false, [](absl::StatusOr<uint64_t>) {});
  l2->set_hang(false);  // what is held stays held
  auto after = StartGet("k");
  ASSERT_EQ(origin_.pending(), 1u);
  origin_.AnswerValue("new");
  EXPECT_EQ(after->value()->value, "new");
  // The detached fill ends last (L2 now failing), with a NotFound from
  // before the new value.
  l2->set_failure(absl::UnavailableError("redis down"));
  l2->ReleaseHung();
  ASSERT_EQ(origin_.pending(), 1u);
  origin_.Answer(absl::NotFoundError("no such key"));
  EXPECT_THAT(before->value(), StatusIs(absl::StatusCode::kNotFound));
  auto later = StartGet("k");
  ASSERT_TRUE(later->has_value());
  EXPECT_EQ(later->value()->value, "new");
  EXPECT_EQ(later->value()->served_by, TierId::kL1);
}

TEST_P(ReadPathTest, InvalidateErasesKeysAndPrefixInNamespaceOnly) {
  for (const char* k : {"flags/a", "flags/b", "limits/x"}) Fill(k, "v");
  path_->Get("other", "flags/a", {}, [](absl::StatusOr<ReadResult>) {});
  origin_.AnswerValue("v");
  std::optional<absl::StatusOr<uint64_t>> evicted;
  path_->Invalidate("ns", {"limits/x"}, "flags/", false,
                    [&](absl::StatusOr<uint64_t> n) { evicted = n; });
  ASSERT_TRUE(evicted.has_value());
  EXPECT_EQ(evicted->value(), 3u);
  EXPECT_EQ(path_->l1().Stats().entries, 1u);  // other/flags/a stays
}

TEST_P(ReadPathTest, GetMissServedByLowerTierBackfillsL1) {
  FakeTier* l2 = BuildWithTier(TierId::kL2);
  l2->Put(CompositeKey("ns", "k"), EntryAt("from-redis", Now()));

  auto r = StartGet("k");
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ(r->value()->served_by, TierId::kL2);
  EXPECT_EQ(origin_.fetches(), 0);
  EXPECT_EQ(StartGet("k")->value()->served_by, TierId::kL1);

  // An origin fill writes through to the lower tier.
  Fill("other", "o");
  EXPECT_TRUE(l2->Contains(CompositeKey("ns", "other")));
}

TEST_P(ReadPathTest, GetServesLowerTierStaleCopyWhenOriginDown) {
  FakeTier* l3 = BuildWithTier(TierId::kL3);
  l3->Put(CompositeKey("ns", "k"), EntryAt("survived", Now() - absl::Seconds(20)));
  auto r = StartGet("k");
  ASSERT_EQ(origin_.pending(), 1u);  // a stale copy does not answer by itself
  origin_.Answer(absl::UnavailableError("down"));
  ASSERT_TRUE(r->has_value());
  ASSERT_OK(r->value());
  EXPECT_EQ(r->value()->value, "survived");
  EXPECT_EQ(r->value()->served_by, TierId::kL3);
  EXPECT_TRUE(r->value()->stale);
}

TEST_P(ReadPathTest, GetFallsBackToFreshestStaleCopyAlongTheChain) {
  FakeTier* l3 = BuildWithTier(TierId::kL3);
  Fill("k", "l1-copy");        // fetched at t0
  Advance(absl::Seconds(15));  // L1 copy expired
  l3->Put(CompositeKey("ns", "k"), EntryAt("l3-copy", Now() - absl::Seconds(12)));  // t0 + 3 s
  auto r = StartGet("k");
  origin_.Answer(absl::UnavailableError("down"));
  ASSERT_OK(r->value());
  EXPECT_EQ(r->value()->value, "l3-copy");
  EXPECT_EQ(r->value()->served_by, TierId::kL3);
  EXPECT_EQ(r->value()->age, absl::Seconds(12));
}

TEST_P(ReadPathTest, GetDeadlineServesLowerTierStaleCopy) {
  FakeTier* l3 = BuildWithTier(TierId::kL3);
  l3->Put(CompositeKey("ns", "k"), EntryAt("survived", Now() - absl::Seconds(20)));
  auto r = StartGet("k", WithDeadline(absl::Milliseconds(100)));
  Advance(absl::Milliseconds(80));
  ASSERT_TRUE(r->has_value());
  ASSERT_OK(r->value());
  EXPECT_EQ(r->value()->value, "survived");
  EXPECT_EQ(r->value()->served_by, TierId::kL3);
}

TEST_P(ReadPathTest, InvalidateSupersedesSurvivalTierUnlessPurged) {
  FakeTier* l3 = BuildWithTier(TierId::kL3);
  const absl::Time now = Now();
  l3->Put(CompositeKey("ns", "k"), EntryAt("kept", now));

  path_->Invalidate("ns", {"k"}, "", false, [](absl::StatusOr<uint64_t>) {});
  std::optional<Entry> kept = l3->Get(CompositeKey("ns", "k"));
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(kept->value, "kept");
  EXPECT_EQ(FreshnessAt(*kept, now), Freshness::kStale);

  path_->Invalidate("ns", {"k"}, "", true, [](absl::StatusOr<uint64_t>) {});
  EXPECT_FALSE(l3->Contains(CompositeKey("ns", "k")));
}

// A read that misses L1 while an invalidation is under way must not find
// the old value fresh in a lower tier that has not applied its erase yet
// (and put it back in L1): the lower tiers are asked before L1 is purged.
TEST_P(ReadPathTest, InvalidateAsksTheLowerTiersBeforePurgingL1) {
  FakeTier* l3 = BuildWithTier(TierId::kL3);
  Fill("k", "old");
  ASSERT_TRUE(l3->Contains(CompositeKey("ns", "k")));
  Slot during;
  l3->set_on_erase([&] { during = StartGet("k"); });
  path_->Invalidate("ns", {"k"}, "", false, [](absl::StatusOr<uint64_t>) {});
  ASSERT_TRUE(during != nullptr && during->has_value());
  auto after = StartGet("k");
  ASSERT_EQ(origin_.pending(), 1u) << "the old value came back into L1";
  origin_.AnswerValue("new", 2);
  ASSERT_TRUE(after->has_value());
  ASSERT_OK(after->value());
  EXPECT_EQ(after->value()->value, "new");
}

TEST_P(ReadPathTest, InvalidateReportsTierFailuresBesideTheL1Purge) {
  auto l2 = std::make_unique<FakeTier>(TierId::kL2, executor_.clock());
  auto l3 = std::make_unique<FakeTier>(TierId::kL3, executor_.clock());
  FakeTier* l2_raw = l2.get();
  FakeTier* l3_raw = l3.get();
  std::vector<std::unique_ptr<Tier>> lower;
  lower.push_back(std::move(l2));
  lower.push_back(std::move(l3));
  Build(std::move(lower));
  Fill("a", "v");
  Fill("b", "v");
  l2_raw->set_failure(absl::UnavailableError("redis down"));
  l3_raw->set_failure(absl::UnavailableError("disk full"));
  std::optional<InvalidateOutcome> outcome;
  path_->Invalidate("ns", {"a"}, "", InvalidateScope{},
                    [&](InvalidateOutcome o) { outcome = std::move(o); });
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(outcome->evicted, 1u);
  EXPECT_THAT(outcome->shared, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("redis down")));
  EXPECT_THAT(outcome->local, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("disk full")));
  // The old form fails only for the shared tier, and says what was done.
  std::optional<absl::StatusOr<uint64_t>> evicted;
  path_->Invalidate("ns", {"b"}, "", false, [&](absl::StatusOr<uint64_t> n) { evicted = n; });
  EXPECT_THAT(*evicted, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("erased 1 entries")));
  EXPECT_EQ(path_->l1().Stats().entries, 0u);
  l2_raw->set_failure(absl::OkStatus());
  Fill("c", "v");
  path_->Invalidate("ns", {"c"}, "", false, [&](absl::StatusOr<uint64_t> n) { evicted = n; });
  ASSERT_OK(*evicted);  // L3 still failing: not the caller's error
  EXPECT_EQ(**evicted, 1u);
}

TEST_P(ReadPathTest, InvalidateScopeLeavesTheTiersItDoesNotName) {
  auto l2 = std::make_unique<FakeTier>(TierId::kL2, executor_.clock());
  auto l3 = std::make_unique<FakeTier>(TierId::kL3, executor_.clock());
  FakeTier* l2_raw = l2.get();
  FakeTier* l3_raw = l3.get();
  std::vector<std::unique_ptr<Tier>> lower;
  lower.push_back(std::move(l2));
  lower.push_back(std::move(l3));
  Build(std::move(lower));
  Fill("k", "v");
  path_->Invalidate("ns", {"k"}, "", InvalidateScope{.tiers = InvalidateTiers::kL1},
                    [](InvalidateOutcome) {});
  EXPECT_EQ(l2_raw->Stats().erased + l3_raw->Stats().erased, 0u);
  ASSERT_EQ(StartGet("k")->value()->served_by, TierId::kL2);  // back in L1
  path_->Invalidate("ns", {"k"}, "",
                    InvalidateScope{.tiers = InvalidateTiers::kLocal, .purge_survival = true},
                    [](InvalidateOutcome) {});
  EXPECT_TRUE(l2_raw->Contains(CompositeKey("ns", "k")));
  EXPECT_FALSE(l3_raw->Contains(CompositeKey("ns", "k")));
  EXPECT_EQ(path_->l1().Stats().entries, 0u);
}

TEST_P(ReadPathTest, InvalidateAllDropsL1AndDetachesEveryFill) {
  Fill("a", "v");
  Fill("b", "v");
  auto waiting = StartGet("c");
  EXPECT_EQ(path_->InvalidateAll(), 2u);
  EXPECT_EQ(path_->l1().Stats().entries, 0u);
  origin_.AnswerValue("from-before");
  EXPECT_EQ(waiting->value()->value, "from-before");  // its reader still gets it
  StartGet("c");
  EXPECT_EQ(origin_.pending(), 1u);  // but it was not cached
}

TEST_P(ReadPathTest, DropL1KeepsFillsUnderWayOutOfL1AndL3ButLetsThemWriteL2) {
  std::vector<std::unique_ptr<Tier>> lower;
  auto l2 = std::make_unique<FakeTier>(TierId::kL2, executor_.clock());
  auto l3 = std::make_unique<FakeTier>(TierId::kL3, executor_.clock());
  FakeTier* l2_raw = l2.get();
  FakeTier* l3_raw = l3.get();
  lower.push_back(std::move(l2));
  lower.push_back(std::move(l3));
  Build(std::move(lower));
  Fill("cached", "v");
  auto value = StartGet("k");
  auto missing = StartGet("gone");
  ASSERT_EQ(origin_.pending(), 2u);
  EXPECT_EQ(path_->DropL1(), 1u);
  origin_.AnswerValue("from-before");
  origin_.Answer(absl::NotFoundError("no such key"));
  EXPECT_EQ(value->value()->value, "from-before");  // its reader still gets it
  EXPECT_EQ(missing->value().status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(path_->l1().Stats().entries, 0u);
  EXPECT_TRUE(l2_raw->Contains(CompositeKey("ns", "k")));
  EXPECT_FALSE(l3_raw->Contains(CompositeKey("ns", "k")));
  EXPECT_EQ(StartGet("k")->value()->served_by, TierId::kL2);
  // The NotFound is not remembered: the origin is asked again.
  StartGet("gone");
  EXPECT_EQ(origin_.pending(), 1u);
  origin_.AnswerValue("now");
  // Fills started after it cache as before.
  EXPECT_EQ(StartGet("gone")->value()->served_by, TierId::kL1);
  EXPECT_EQ(StartGet("k")->value()->served_by, TierId::kL1);
}

TEST_P(ReadPathTest, GetGoesBelowAnL1EntryTheLinkGuardDoesNotTrust) {
  LinkGuard guard(absl::Seconds(5));
  options_.link_guard = &guard;
  Build({});
  Fill("k", "old");
  guard.SetDegraded(Now());
  Advance(absl::Seconds(5));
  auto r = StartGet("k");
  ASSERT_EQ(origin_.pending(), 1u);
  origin_.AnswerValue("new");
  EXPECT_EQ(r->value()->value, "new");
  EXPECT_EQ(r->value()->served_by, TierId::kOrigin);
  EXPECT_EQ(StartGet("k")->value()->served_by, TierId::kL1);  // just fetched: trusted
  guard.SetUp();
  Advance(absl::Seconds(5));
  EXPECT_EQ(StartGet("k")->value()->served_by, TierId::kL1);
  EXPECT_EQ(origin_.fetches(), 2);
}

TEST_P(ReadPathTest, ShutdownCancelsBackgroundRefreshAndWaitsForIt) {
  FakeTier* l2 = BuildWithTier(TierId::kL2);
  Fill("k", "v");
  Advance(absl::Seconds(6));
  auto other = StartGet("other");
  StartGet("k");  // starts a background refresh: no caller waits for it
  executor_.RunUntilIdle();
  auto waiting = StartGet("third");
  ASSERT_EQ(origin_.pending(), 3u);
  ASSERT_EQ(origin_.pending_key(1), "k");
  l2->set_hang(true);
  origin_.AnswerValue("o");  // "other": its store to L2 is held
  ASSERT_OK(other->value());
  ASSERT_EQ(l2->held(), 1u);
  ASSERT_FALSE(origin_.pending_context(0).cancel.cancelled());

  std::atomic<bool> done{false};
  bool idle = false;
  std::thread shutdown([&] {
    idle = path_->Shutdown(absl::Seconds(60));
    done = true;
  });
  // The caller still waiting is answered; origin fetches are cancelled.
  for (int i = 0; i < 5000 && !origin_.pending_context(0).cancel.cancelled(); ++i) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_TRUE(origin_.pending_context(0).cancel.cancelled());
  EXPECT_TRUE(origin_.pending_context(1).cancel.cancelled());
  EXPECT_TRUE(waiting->has_value());
  // Shutdown waits for the refresh, the other fetch and the store.
  origin_.Answer(absl::CancelledError("cancelled"));
  origin_.Answer(absl::CancelledError("cancelled"));
  EXPECT_FALSE(done);
  l2->set_hang(false);
  l2->ReleaseHung();
  shutdown.join();
  EXPECT_TRUE(idle);
  ASSERT_TRUE(waiting->has_value());
  EXPECT_THAT(waiting->value(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shutting")));
  EXPECT_THAT(StartGet("new")->value(), StatusIs(absl::StatusCode::kUnavailable));
  path_.reset();
}

TEST_P(ReadPathTest, ShutdownTimeoutDropsLateAnswersWithoutTouchingTheReadPath) {
  Fill("k", "v");
  Advance(absl::Seconds(6));
  StartGet("k");  // a background refresh whose origin never answers in time
  executor_.RunUntilIdle();
  auto waiting = StartGet("other", WithDeadline(absl::Milliseconds(500)));
  ASSERT_EQ(origin_.pending(), 2u);
  EXPECT_FALSE(path_->Shutdown(absl::Milliseconds(20)));
  EXPECT_THAT(waiting->value(), StatusIs(absl::StatusCode::kUnavailable));
  path_.reset();
  // Late answers, and the deadline timer, find the read path gone (ASan
  // checks that nothing touches it).
  origin_.AnswerValue("late");
  origin_.AnswerValue("late");
  Advance(absl::Seconds(1));
}

TEST_P(ReadPathTest, DestroyWithoutShutdownAnswersWaitingReads) {
  auto waiting = StartGet("k", WithDeadline(absl::Milliseconds(500)));
  path_.reset();
  EXPECT_THAT(waiting->value(), StatusIs(absl::StatusCode::kUnavailable));
  origin_.AnswerValue("late");
  Advance(absl::Seconds(1));
}

TEST_P(ReadPathTest, GetSharedTierHitIsPromotedToL1WithItsOriginalTimes) {
  FakeTier* l2 = BuildWithTier(TierId::kL2);
  l2->Put(CompositeKey("ns", "k"), EntryAt("from-l2", Now() - absl::Seconds(3)));
  auto r = StartGet("k");
  ASSERT_TRUE(r->has_value());
  ASSERT_OK(r->value());
  EXPECT_EQ(r->value()->served_by, TierId::kL2);
  EXPECT_EQ(r->value()->age, absl::Seconds(3));
  EXPECT_FALSE(r->value()->stale);
  Advance(absl::Seconds(1));
  auto again = StartGet("k");
  ASSERT_TRUE(again->has_value());
  EXPECT_EQ(again->value()->served_by, TierId::kL1);
  EXPECT_EQ(again->value()->age, absl::Seconds(4));  // not restarted by the promotion
  // It expires in L1 when it expires in L2 (10 s after it was fetched).
  Advance(absl::Seconds(6));
  StartGet("k");
  EXPECT_EQ(origin_.pending(), 1u);
}

TEST_P(ReadPathTest, GetServesSharedTierStaleCopyWithinMaxStaleWhenOriginDown) {
  FakeTier* l2 = BuildWithTier(TierId::kL2);
  l2->Put(CompositeKey("ns", "k"),
          EntryAt("from-l2", Now() - absl::Seconds(20)));  // expired 10 s ago
  ReadOptions lenient;
  lenient.max_stale = absl::Seconds(15);
  auto r = StartGet("k", lenient);
  ASSERT_EQ(origin_.pending(), 1u);
  origin_.Answer(absl::UnavailableError("down"));
  ASSERT_TRUE(r->has_value());
  ASSERT_OK(r->value());
  EXPECT_EQ(r->value()->value, "from-l2");
  EXPECT_EQ(r->value()->served_by, TierId::kL2);
  EXPECT_TRUE(r->value()->stale);
  EXPECT_EQ(r->value()->age, absl::Seconds(20));
  Advance(absl::Seconds(2));  // past the backoff
  ReadOptions strict;
  strict.max_stale = absl::Seconds(5);
  auto r2 = StartGet("k", strict);
  ASSERT_EQ(origin_.pending(), 1u);
  origin_.Answer(absl::UnavailableError("down"));
  EXPECT_THAT(r2->value(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("max_stale")));
}

TEST_P(ReadPathTest, ReadManyLooksUpTheSharedTierOnceForAllItsMisses) {
  FakeTier* l2 = BuildWithTier(TierId::kL2);
  for (const char* k : {"a", "b", "c"}) {
    l2->Put(CompositeKey("ns", k), EntryAt(absl::StrCat("l2-", k), Now()));
  }
  std::vector<ReadPath::BatchRead> reads;
  std::vector<Slot> slots;
  for (const char* k : {"a", "b", "c", "missing"}) {
    std::variant<ReadResult, ReadPath::PendingRead> first = path_->ReadL1("ns", k, {});
    ASSERT_TRUE(std::holds_alternative<ReadPath::PendingRead>(first));
    auto slot = std::make_shared<std::optional<absl::StatusOr<ReadResult>>>();
    slots.push_back(slot);
    reads.push_back({std::get<ReadPath::PendingRead>(std::move(first)),
                     [slot](absl::StatusOr<ReadResult> r) { *slot = std::move(r); }});
  }
  path_->ReadManyBelowL1(std::move(reads), absl::InfiniteFuture(), CancellationToken());
  EXPECT_EQ(l2->lookup_many_calls(), 1);
  EXPECT_EQ(l2->lookups(), 4);  // all four in that one call: no Lookup of its own
  EXPECT_EQ(path_->Stats().batch_lookups, 1u);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(slots[i]->has_value());
    ASSERT_OK(slots[i]->value());
    EXPECT_EQ(slots[i]->value()->served_by, TierId::kL2);
  }
  EXPECT_EQ(slots[1]->value()->value, "l2-b");
  ASSERT_EQ(origin_.pending(), 1u);  // the miss goes on to the origin by itself
  EXPECT_EQ(origin_.pending_key(0), "missing");
  origin_.AnswerValue("o");
  ASSERT_TRUE(slots[3]->has_value());
  EXPECT_EQ(slots[3]->value()->value, "o");
}

TEST_P(ReadPathTest, ReadManyJoinsFillsUnderWayAndAnswersCancelledCallers) {
  FakeTier* l2 = BuildWithTier(TierId::kL2);
  l2->set_hang(true);
  auto earlier = StartGet("a");  // its fill is held in L2
  std::vector<ReadPath::BatchRead> reads;
  std::vector<Slot> slots;
  for (const char* k : {"a", "b"}) {
    std::variant<ReadResult, ReadPath::PendingRead> first = path_->ReadL1("ns", k, {});
    auto slot = std::make_shared<std::optional<absl::StatusOr<ReadResult>>>();
    slots.push_back(slot);
    reads.push_back({std::get<ReadPath::PendingRead>(std::move(first)),
                     [slot](absl::StatusOr<ReadResult> r) { *slot = std::move(r); }});
  }
  path_->ReadManyBelowL1(std::move(reads), absl::InfiniteFuture(), CancellationToken());
  EXPECT_EQ(path_->Stats().coalesced, 1u);
  EXPECT_EQ(path_->Stats().batch_lookups, 0u);  // one new fill: a Lookup of its own
  EXPECT_EQ(l2->held(), 2u);
  l2->set_hang(false);
  l2->ReleaseHung();
  ASSERT_EQ(origin_.pending(), 2u);
  origin_.AnswerValue("va");
  origin_.AnswerValue("vb");
  EXPECT_EQ(earlier->value()->value, "va");
  EXPECT_EQ(slots[0]->value()->value, "va");
  EXPECT_EQ(slots[1]->value()->value, "vb");

  CancellationSource gone;
  gone.Cancel();
  std::vector<ReadPath::BatchRead> late;
  auto slot = std::make_shared<std::optional<absl::StatusOr<ReadResult>>>();
  std::variant<ReadResult, ReadPath::PendingRead> first = path_->ReadL1("ns", "c", {});
  late.push_back({std::get<ReadPath::PendingRead>(std::move(first)),
                  [slot](absl::StatusOr<ReadResult> r) { *slot = std::move(r); }});
  path_->ReadManyBelowL1(std::move(late), absl::InfiniteFuture(), gone.token());
  ASSERT_TRUE(slot->has_value());
  EXPECT_THAT(slot->value(), StatusIs(absl::StatusCode::kCancelled));
}

// ---- The fill lease: several pods sharing one L2 ---------------------------

TEST_P(ReadPathTest, GetLeaseLoserTakesTheWinnersValueWithoutAskingTheOrigin) {
  auto a = Pod();
  auto b = Pod();
  const std::string ckey = CompositeKey("ns", "hot");
  auto from_a = StartGetOn(*a, "hot");
  ASSERT_EQ(origin_.pending(), 1u);
  EXPECT_TRUE(lease_.Held(ckey));
  std::vector<Slot> from_b;
  for (int i = 0; i < 3; ++i) from_b.push_back(StartGetOn(*b, "hot"));
  EXPECT_EQ(lease_.waiting(), 1u);  // b's reads share one fill, which waits
  EXPECT_EQ(origin_.fetches(), 1);
  Advance(absl::Milliseconds(40));
  origin_.AnswerValue("v", 3);
  ASSERT_TRUE(from_a->has_value());
  ASSERT_OK(from_a->value());
  EXPECT_EQ(from_a->value()->served_by, TierId::kOrigin);
  for (const Slot& r : from_b) {
    ASSERT_TRUE(r->has_value());
    ASSERT_OK(r->value());
    EXPECT_EQ(r->value()->value, "v");
    EXPECT_EQ(r->value()->version, 3);
    EXPECT_EQ(r->value()->served_by, TierId::kL2);
  }
  EXPECT_EQ(origin_.fetches(), 1);
  EXPECT_FALSE(lease_.Held(ckey));  // given back once the value was written
  EXPECT_EQ(a->Stats().lease_acquired, 1u);
  EXPECT_EQ(b->Stats().lease_waits, 1u);
  EXPECT_EQ(b->Stats().lease_wait_filled, 1u);
  EXPECT_EQ(b->Stats().origin_fetches, 0u);
  auto again = StartGetOn(*b, "hot");
  ASSERT_TRUE(again->has_value());
  EXPECT_EQ(again->value()->served_by, TierId::kL1);
  // The winner's measured fill time travels with the value.
  std::optional<Entry> stored = shared_l2_.Get(ckey);
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(stored->fill_time, absl::Milliseconds(40));
}

TEST_P(ReadPathTest, GetLeaseLoserWithStaleCopyAnswersItAtItsDeadline) {
  const std::string ckey = CompositeKey("ns", "k");
  shared_l2_.Put(ckey, EntryAt("old", Now() - absl::Seconds(20)));  // expired 10 s ago
  auto a = Pod();
  auto b = Pod();
  auto from_a = StartGetOn(*a, "k");
  ASSERT_EQ(origin_.pending(), 1u);
  auto from_b = StartGetOn(*b, "k", WithDeadline(absl::Milliseconds(200)));
  EXPECT_EQ(lease_.waiting(), 1u);
  Advance(absl::Milliseconds(179));
  EXPECT_FALSE(from_b->has_value());
  Advance(absl::Milliseconds(1));  // 20 ms before the caller's deadline
  ASSERT_TRUE(from_b->has_value());
  ASSERT_OK(from_b->value());
  EXPECT_EQ(from_b->value()->value, "old");
  EXPECT_TRUE(from_b->value()->stale);
  EXPECT_EQ(from_b->value()->served_by, TierId::kL2);
  EXPECT_EQ(from_b->value()->age, absl::Seconds(20) + absl::Milliseconds(180));
  EXPECT_EQ(origin_.fetches(), 1);
  // The wait goes on without its caller, and fills b's L1.
  origin_.AnswerValue("new");
  auto later = StartGetOn(*b, "k");
  ASSERT_TRUE(later->has_value());
  EXPECT_EQ(later->value()->value, "new");
  EXPECT_EQ(later->value()->served_by, TierId::kL1);
  EXPECT_EQ(origin_.fetches(), 1);
}

TEST_P(ReadPathTest, GetLeaseWaitLongerThanAFillStillAnswersByTheCallersDeadline) {
  const std::string ckey = CompositeKey("ns", "k");
  shared_l2_.Put(ckey, EntryAt("old", Now() - absl::Seconds(20)));
  // Another pod holds a lease (as long as b's own would run, at most).
  lease_.Acquire(ckey, absl::Seconds(2), absl::InfiniteFuture(), [](absl::StatusOr<LeaseGrant>) {});
  auto b = Pod();
  // A deadline after the fill's usual end (two tiers' and the origin's
  // timeouts, 4 s here): no timer at first, one once the fill waits.
  auto r = StartGetOn(*b, "k", WithDeadline(absl::Seconds(5)));
  EXPECT_EQ(lease_.waiting(), 1u);
  Advance(absl::Milliseconds(4970));
  EXPECT_FALSE(r->has_value());
  Advance(absl::Milliseconds(10));
  ASSERT_TRUE(r->has_value());
  ASSERT_OK(r->value());
  EXPECT_EQ(r->value()->value, "old");
  EXPECT_TRUE(r->value()->stale);
  EXPECT_EQ(origin_.fetches(), 0);
}

TEST_P(ReadPathTest, GetLeaseLongerThanThePodsOwnIsWaitedOnlyThatLongThenItFetches) {
  const std::string ckey = CompositeKey("ns", "k");
  // An hour-long lease whose holder never writes (a stray key, or a pod with
  // a far longer origin timeout that died).
  lease_.Acquire(ckey, absl::Hours(1), absl::InfiniteFuture(), [](absl::StatusOr<LeaseGrant>) {});
  auto b = Pod();
  auto r = StartGetOn(*b, "k", WithDeadline(absl::Seconds(30)));
  EXPECT_EQ(lease_.waiting(), 1u);
  // b's own lease would run origin_timeout + lease_margin (2.1 s); it waits
  // that and one lease_margin more, then fetches without a second round.
  Advance(absl::Milliseconds(2150));
  lease_.Settle();
  EXPECT_EQ(origin_.fetches(), 0);
  Advance(absl::Milliseconds(100));
  lease_.Settle();
  ASSERT_EQ(origin_.pending(), 1u);
  EXPECT_EQ(lease_.waiting(), 0u);
  origin_.AnswerValue("v");
  ASSERT_TRUE(r->has_value());
  ASSERT_OK(r->value());
  EXPECT_EQ(r->value()->value, "v");
  EXPECT_EQ(r->value()->served_by, TierId::kOrigin);
  EXPECT_EQ(b->Stats().lease_wait_timed_out, 1u);
  EXPECT_EQ(b->Stats().lease_fetched_self, 1u);
  EXPECT_TRUE(shared_l2_.Contains(ckey));
}

TEST_P(ReadPathTest, GetLeaseOfADeadPodRunsOutThenTheLoserFetches) {
  const std::string ckey = CompositeKey("ns", "k");
  // Another pod took the lease and died.
  lease_.Acquire(ckey, absl::Seconds(2), absl::InfiniteFuture(),
                 [](absl::StatusOr<LeaseGrant> g) { ASSERT_TRUE(g.ok() && g->acquired); });
  auto b = Pod();
  auto r = StartGetOn(*b, "k");
  EXPECT_EQ(lease_.waiting(), 1u);
  Advance(absl::Seconds(1));
  lease_.Settle();
  EXPECT_EQ(origin_.fetches(), 0);  // still held: still waiting
  Advance(absl::Seconds(1));        // the lease runs out
  lease_.Settle();
  ASSERT_EQ(origin_.pending(), 1u);
  EXPECT_TRUE(lease_.Held(ckey));  // b fetches under a lease of its own
  origin_.AnswerValue("v");
  ASSERT_TRUE(r->has_value());
  ASSERT_OK(r->value());
  EXPECT_EQ(r->value()->value, "v");
  EXPECT_EQ(r->value()->served_by, TierId::kOrigin);
  EXPECT_EQ(b->Stats().lease_wait_vacant, 1u);
  EXPECT_EQ(b->Stats().lease_fetched_self, 1u);
  EXPECT_TRUE(shared_l2_.Contains(ckey));
  EXPECT_FALSE(lease_.Held(ckey));
}

TEST_P(ReadPathTest, GetLeaseHolderOriginFailureLetsOneWaiterFetch) {
  auto a = Pod();
  auto b = Pod();
  auto from_a = StartGetOn(*a, "k");
  auto from_b = StartGetOn(*b, "k");
  ASSERT_EQ(origin_.pending(), 1u);
  origin_.Answer(absl::UnavailableError("down"));
  EXPECT_THAT(from_a->value(), StatusIs(absl::StatusCode::kUnavailable));
  // a gave the lease back without a value: b takes it and asks itself.
  ASSERT_EQ(origin_.pending(), 1u);
  EXPECT_FALSE(from_b->has_value());
  origin_.AnswerValue("back");
  ASSERT_TRUE(from_b->has_value());
  EXPECT_EQ(from_b->value()->value, "back");
  EXPECT_EQ(b->Stats().lease_wait_vacant, 1u);
}

TEST_P(ReadPathTest, GetLeaseUnavailableFallsBackToLocalSingleFlight) {
  lease_.set_failure(absl::UnavailableError("redis down"));
  auto a = Pod();
  std::vector<Slot> reads;
  for (int i = 0; i < 5; ++i) reads.push_back(StartGetOn(*a, "k"));
  EXPECT_EQ(origin_.fetches(), 1);
  origin_.AnswerValue("v");
  for (const Slot& r : reads) {
    ASSERT_TRUE(r->has_value());
    ASSERT_OK(r->value());
    EXPECT_EQ(r->value()->value, "v");
  }
  EXPECT_EQ(a->Stats().lease_unavailable, 1u);
  EXPECT_EQ(a->Stats().lease_acquired, 0u);
}

TEST_P(ReadPathTest, GetSharedTierDownSkipsTheLease) {
  shared_l2_.set_failure(absl::UnavailableError("redis down"));
  auto a = Pod();
  auto r = StartGetOn(*a, "k");
  EXPECT_EQ(origin_.fetches(), 1);
  const FillLeaseStats lease = lease_.Stats();
  EXPECT_EQ(lease.acquired + lease.contended + lease.errors, 0u);
  origin_.AnswerValue("v");
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ(r->value()->value, "v");
}

// ---- XFetch --------------------------------------------------------------------

TEST(XFetchTest, DueWhenTheScaledDrawReachesExpiry) {
  const absl::Time now = absl::FromUnixSeconds(1000);
  Entry e;
  e.fill_time = absl::Milliseconds(100);
  e.expires_at = now + absl::Milliseconds(100);
  // Due when -ln(u) * beta >= gap / fill_time = 1.
  EXPECT_TRUE(XFetchDue(e, now, 1.0, 0.36));
  EXPECT_FALSE(XFetchDue(e, now, 1.0, 0.37));
  EXPECT_TRUE(XFetchDue(e, now, 2.0, 0.60));  // larger beta: earlier
  EXPECT_FALSE(XFetchDue(e, now, 2.0, 0.61));
  EXPECT_FALSE(XFetchDue(e, now, 0.0, 1e-12));  // off
  EXPECT_TRUE(XFetchDue(e, e.expires_at, 1.0, 1.0));
  e.fill_time = absl::ZeroDuration();  // nothing measured
  EXPECT_FALSE(XFetchDue(e, now, 1.0, 1e-12));
}

TEST_P(ReadPathTest, XFetchRefreshesSlowFillsEarlierThanFastOnes) {
  options_.xfetch_beta = 1.0;
  options_.random_seed = 42;
  options_.max_background_refreshes = 1000;
  Build({});
  const absl::Time now = Now();
  // 200 keys filled in 100 ms and 200 in 10 ms, all expiring 100 ms from now.
  auto put = [&](const std::string& key, absl::Duration fill_time) {
    Entry e;
    e.value = "v";
    e.fetched_at = now - absl::Seconds(9);
    e.fresh_until = e.expires_at = now + absl::Milliseconds(100);
    e.stale_until = now + absl::Seconds(100);
    e.fill_time = fill_time;
    ASSERT_TRUE(path_->l1().Insert(CompositeKey("ns", key), e));
  };
  for (int i = 0; i < 200; ++i) {
    put(absl::StrCat("slow/", i), absl::Milliseconds(100));
    put(absl::StrCat("fast/", i), absl::Milliseconds(10));
  }
  for (int i = 0; i < 200; ++i) {
    for (const char* kind : {"slow/", "fast/"}) {
      auto r = StartGet(absl::StrCat(kind, i));
      ASSERT_TRUE(r->has_value());  // served from L1 either way
      EXPECT_EQ(r->value()->served_by, TierId::kL1);
    }
  }
  executor_.RunUntilIdle();
  int slow = 0;
  int fast = 0;
  for (size_t i = 0; i < origin_.pending(); ++i) {
    ++(absl::StartsWith(origin_.pending_key(i), "slow/") ? slow : fast);
  }
  // One read each, 100 ms before expiry: P = exp(-gap / (fill_time * beta)),
  // e^-1 (74 of 200 expected) for the slow keys, e^-10 for the fast ones.
  EXPECT_GE(slow, 50);
  EXPECT_LE(slow, 100);
  EXPECT_EQ(fast, 0);
  EXPECT_EQ(path_->Stats().xfetch_refreshes, static_cast<uint64_t>(slow));
}

TEST_P(ReadPathTest, XFetchOffLeavesTheFixedRefreshWindow) {
  // beta 0 (the fixture's): an entry due by XFetch almost surely is not refreshed.
  const absl::Time now = Now();
  Entry e;
  e.value = "v";
  e.fetched_at = now - absl::Seconds(9);
  e.fresh_until = e.expires_at = now + absl::Milliseconds(10);
  e.stale_until = now + absl::Seconds(100);
  e.fill_time = absl::Seconds(1);
  ASSERT_TRUE(path_->l1().Insert(CompositeKey("ns", "k"), e));
  for (int i = 0; i < 20; ++i) StartGet("k");
  executor_.RunUntilIdle();
  EXPECT_EQ(origin_.fetches(), 0);
  // The same with XFetch on: refreshed (P = e^-0.01 a read).
  options_.xfetch_beta = 1.0;
  options_.random_seed = 1;
  Build({});
  ASSERT_TRUE(path_->l1().Insert(CompositeKey("ns", "k"), e));
  for (int i = 0; i < 20; ++i) StartGet("k");
  executor_.RunUntilIdle();
  EXPECT_EQ(origin_.fetches(), 1);
  EXPECT_EQ(path_->Stats().xfetch_refreshes, 1u);
}

TEST_P(ReadPathTest, FillWithXFetchIsFreshUntilItExpiresAndKeepsItsFillTime) {
  options_.xfetch_beta = 1.0;
  FakeTier* l2 = BuildWithTier(TierId::kL2);
  auto r = StartGet("k");
  Advance(absl::Milliseconds(30));
  origin_.AnswerValue("v");
  ASSERT_OK(r->value());
  std::optional<Entry> e = l2->Get(CompositeKey("ns", "k"));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->fresh_until, e->expires_at);
  EXPECT_EQ(e->fill_time, absl::Milliseconds(30));
  // In the fixed window's place (refresh_ahead 0.5), no refresh.
  Advance(absl::Seconds(6));
  StartGet("k");
  executor_.RunUntilIdle();
  EXPECT_EQ(origin_.fetches(), 1);
}

TEST_P(ReadPathTest, XFetchRefreshOnTwoPodsAsksTheOriginOnce) {
  options_.xfetch_beta = 1.0;
  options_.random_seed = 7;
  auto a = Pod();
  auto b = Pod();
  const std::string ckey = CompositeKey("ns", "k");
  const absl::Time now = Now();
  // Both pods hold the key, 10 ms from expiry, 1 s to fill: due at once.
  Entry e;
  e.value = "old";
  e.fetched_at = now - absl::Seconds(9);
  e.fresh_until = e.expires_at = now + absl::Milliseconds(10);
  e.stale_until = now + absl::Seconds(100);
  e.fill_time = absl::Seconds(1);
  ASSERT_TRUE(a->l1().Insert(ckey, e));
  ASSERT_TRUE(b->l1().Insert(ckey, e));
  shared_l2_.Put(ckey, e);
  EXPECT_EQ(StartGetOn(*a, "k")->value()->value, "old");
  EXPECT_EQ(StartGetOn(*b, "k")->value()->value, "old");
  executor_.RunUntilIdle();
  EXPECT_EQ(a->Stats().xfetch_refreshes + b->Stats().xfetch_refreshes, 2u);
  EXPECT_EQ(origin_.fetches(), 1);
  EXPECT_EQ(lease_.waiting(), 1u);
  origin_.AnswerValue("new");
  EXPECT_EQ(StartGetOn(*a, "k")->value()->value, "new");
  EXPECT_EQ(StartGetOn(*b, "k")->value()->value, "new");
  EXPECT_EQ(origin_.fetches(), 1);
}

TEST_P(ReadPathTest, RefreshTakesANewerCopyFromTheSharedTierWithoutTheOrigin) {
  auto b = Pod();
  const std::string ckey = CompositeKey("ns", "k");
  Fill("unused", "x");  // path_ is not a pod; only b is read below
  shared_l2_.Put(ckey, EntryAt("old", Now()));
  auto first = StartGetOn(*b, "k");
  ASSERT_EQ(first->value()->served_by, TierId::kL2);
  Advance(absl::Seconds(6));  // b's copy is in its refresh window (5 s)
  shared_l2_.Put(ckey, EntryAt("newer", Now() - absl::Seconds(1)));  // another pod refreshed it
  EXPECT_EQ(StartGetOn(*b, "k")->value()->value, "old");
  executor_.RunUntilIdle();
  EXPECT_EQ(origin_.fetches(), 1);  // only path_'s "unused"
  EXPECT_EQ(lease_.Stats().acquired + lease_.Stats().contended, 0u);
  auto after = StartGetOn(*b, "k");
  EXPECT_EQ(after->value()->value, "newer");
  EXPECT_EQ(after->value()->served_by, TierId::kL1);
}

INSTANTIATE_TEST_SUITE_P(Engines, ReadPathTest,
                         ::testing::Values(Engine{"Lru", [] { return NewLruL1Cache({}); }},
                                           Engine{"WTinyLfu", [] { return NewWTinyLfuCache({}); }}),
                         [](const ::testing::TestParamInfo<Engine>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace fanout::cache
