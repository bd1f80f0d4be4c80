#include "cache/invalidator.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/l1/wtinylfu_cache.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_invalidation_bus.h"
#include "tests/testing/fake_origin.h"
#include "tests/testing/fake_tier.h"
#include "tests/testing/manual_executor.h"
#include "tests/testing/status_matchers.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::FakeBusLog;
using ::fanout::testing::FakeInvalidationBus;
using ::fanout::testing::FakeOrigin;
using ::fanout::testing::FakeTier;
using ::fanout::testing::RecordingSubscriber;
using ::fanout::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A tier that forwards to one FakeTier several read paths share (L2).
class SharedView final : public Tier {
 public:
  explicit SharedView(FakeTier* t) : t_(t) {}
  TierId id() const override { return t_->id(); }
  void Lookup(absl::string_view k, absl::Time d, LookupDone done) override {
    t_->Lookup(k, d, std::move(done));
  }
  void LookupMany(std::vector<std::string> k, absl::Time d, LookupManyDone done) override {
    t_->LookupMany(std::move(k), d, std::move(done));
  }
  void Store(absl::string_view k, const Entry& e, StoreDone done) override {
    t_->Store(k, e, std::move(done));
  }
  void Erase(std::vector<std::string> k, std::string p, EraseMode m, absl::Time d,
             EraseDone done) override {
    t_->Erase(std::move(k), std::move(p), m, d, std::move(done));
  }
  TierStats Stats() const override { return t_->Stats(); }

 private:
  FakeTier* const t_;
};

// One simulated pod: a read path on the shared executor, L2 (shared),
// optionally its own L3, an invalidator on its own fake bus.
struct Pod {
  Pod(FakeBusLog* log, const std::string& name, testing::ManualExecutor* executor, FakeTier* shared,
      FakeTier* l3, bool with_bus = true, bool link_up = true)
      : guard(absl::Seconds(5)) {
    if (with_bus) bus = std::make_unique<FakeInvalidationBus>(log, name);
    if (with_bus && !link_up) bus->SetLink(LinkState::kDegraded);
    ReadPathOptions o;
    o.ttl = absl::Seconds(60);
    o.ttl_jitter = 0;
    o.link_guard = &guard;
    std::vector<std::unique_ptr<Tier>> lower;
    if (shared != nullptr) lower.push_back(std::make_unique<SharedView>(shared));
    if (l3 != nullptr) {
      lower.push_back(NewGuardedTier(std::make_unique<SharedView>(l3), &guard, executor->clock()));
    }
    L1Options l1;
    l1.capacity_bytes = 1 << 20;
    path = std::make_unique<ReadPath>(o, NewWTinyLfuCache(l1), std::move(lower), &origin, executor);
    invalidator = std::make_unique<Invalidator>(path.get(), bus.get(), &guard, executor->clock());
  }
  ~Pod() {
    invalidator.reset();
    path.reset();
  }

  // A Get; the origin (if asked) answers `value` at once.
  absl::StatusOr<ReadResult> Get(const std::string& key, const std::string& value = "") {
    std::optional<absl::StatusOr<ReadResult>> out;
    path->Get("ns", key, {}, [&](absl::StatusOr<ReadResult> r) { out = std::move(r); });
    if (!out.has_value() && origin.pending() > 0) origin.AnswerValue(value);
    if (!out.has_value()) return absl::InternalError("no answer");
    return *std::move(out);
  }
  absl::StatusOr<Invalidator::Result> Invalidate(std::vector<std::string> keys,
                                                 std::string prefix = "") {
    Invalidation inv;
    inv.ns = "ns";
    inv.keys = std::move(keys);
    inv.prefix = std::move(prefix);
    std::optional<absl::StatusOr<Invalidator::Result>> out;
    invalidator->Invalidate(inv, [&](absl::StatusOr<Invalidator::Result> r) { out = r; });
    if (!out.has_value()) return absl::InternalError("no answer yet");
    return *out;
  }

  LinkGuard guard;
  FakeOrigin origin;
  std::unique_ptr<FakeInvalidationBus> bus;
  std::unique_ptr<ReadPath> path;
  std::unique_ptr<Invalidator> invalidator;
};

class InvalidatorTest : public ::testing::Test {
 protected:
  InvalidatorTest() : shared_(TierId::kL2, executor_.clock()) {}
  absl::Time Now() { return executor_.clock()->Now(); }

  testing::ManualExecutor executor_;
  FakeBusLog log_;
  FakeTier shared_;
};

TEST_F(InvalidatorTest, InvalidateErasesHereAndPublishes) {
  Pod a(&log_, "a", &executor_, &shared_, nullptr);
  ASSERT_OK(a.Get("k", "v1"));
  ASSERT_EQ(a.Get("k")->served_by, TierId::kL1);

  absl::StatusOr<Invalidator::Result> r = a.Invalidate({"k"});
  ASSERT_OK(r);
  EXPECT_EQ(r->evicted, 1u);
  EXPECT_TRUE(r->broadcast);
  ASSERT_EQ(a.bus->published().size(), 1u);
  EXPECT_THAT(a.bus->published()[0].keys, ElementsAre("k"));
  EXPECT_EQ(a.bus->published()[0].sender, "a");
  // The bus erases the shared tier; this pod does not erase it itself.
  EXPECT_EQ(shared_.Stats().erased, 0u);
  EXPECT_EQ(a.Get("k", "v2")->served_by, TierId::kL2);  // L2 still held it: the bus's job
}

TEST_F(InvalidatorTest, OtherPodAppliesPublishedInvalidationToItsL1) {
  Pod a(&log_, "a", &executor_, &shared_, nullptr);
  Pod b(&log_, "b", &executor_, &shared_, nullptr);
  ASSERT_OK(b.Get("flags/x", "old"));
  ASSERT_EQ(b.Get("flags/x")->served_by, TierId::kL1);

  ASSERT_OK(a.Invalidate({}, "flags/"));
  shared_.Erase({}, CompositeKey("ns", "flags/"), EraseMode::kRemove, absl::InfiniteFuture(),
                [](absl::StatusOr<uint64_t>) {});       // what the real bus does in Redis
  EXPECT_EQ(b.Get("flags/x")->served_by, TierId::kL1);  // not delivered yet
  EXPECT_EQ(b.bus->Pump(), 1);
  absl::StatusOr<ReadResult> after = b.Get("flags/x", "new");
  ASSERT_OK(after);
  EXPECT_EQ(after->served_by, TierId::kOrigin);
  EXPECT_EQ(after->value, "new");
  EXPECT_EQ(b.invalidator->Stats().applied, 1u);
  EXPECT_EQ(a.bus->Pump(), 0);  // its own message is not applied twice
}

TEST_F(InvalidatorTest, PublishFailureIsUnavailableButThisPodIsPurged) {
  Pod a(&log_, "a", &executor_, &shared_, nullptr);
  ASSERT_OK(a.Get("k", "v1"));
  a.bus->set_publish_failure(absl::UnavailableError("redis down"));
  absl::StatusOr<Invalidator::Result> r = a.Invalidate({"k"});
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("redis down")));
  EXPECT_THAT(r.status().message(), HasSubstr("erased 1 entries from this pod"));
  EXPECT_EQ(a.path->l1().Stats().entries, 0u);
  EXPECT_EQ(a.invalidator->Stats().not_broadcast, 1u);
}

TEST_F(InvalidatorTest, WithoutBusInvalidateIsLocalAndNotBroadcast) {
  Pod solo(&log_, "solo", &executor_, nullptr, nullptr, /*with_bus=*/false);
  ASSERT_OK(solo.Get("k", "v"));
  absl::StatusOr<Invalidator::Result> r = solo.Invalidate({"k"});
  ASSERT_OK(r);
  EXPECT_EQ(r->evicted, 1u);
  EXPECT_FALSE(r->broadcast);
  EXPECT_EQ(solo.invalidator->link_state(), LinkState::kUp);
}

TEST_F(InvalidatorTest, InvalidateErasesAgainWhatAReadRefilledFromL2BeforeItWasErased) {
  Pod a(&log_, "a", &executor_, &shared_, nullptr);
  ASSERT_OK(a.Get("k", "old"));  // in L1 and L2
  a.bus->set_hold(true);
  std::optional<absl::StatusOr<Invalidator::Result>> result;
  Invalidation inv;
  inv.ns = "ns";
  inv.keys = {"k"};
  a.invalidator->Invalidate(inv, [&](absl::StatusOr<Invalidator::Result> r) { result = r; });
  ASSERT_FALSE(result.has_value());
  // Between this pod's first L1 pass and the bus's erase of L2, a read
  // refills L1 with the old value from L2.
  absl::StatusOr<ReadResult> between = a.Get("k");
  ASSERT_OK(between);
  ASSERT_EQ(between->served_by, TierId::kL2);
  shared_.Erase({CompositeKey("ns", "k")}, "", EraseMode::kRemove, absl::InfiniteFuture(),
                [](absl::StatusOr<uint64_t>) {});
  a.bus->set_hold(false);
  a.bus->ReleaseHeld();
  ASSERT_TRUE(result.has_value());
  ASSERT_OK(*result);
  EXPECT_EQ((*result)->evicted, 2u);  // once before the publish, once after
  absl::StatusOr<ReadResult> after = a.Get("k", "new");
  ASSERT_OK(after);
  EXPECT_EQ(after->value, "new");
  EXPECT_EQ(after->served_by, TierId::kOrigin);
}

TEST_F(InvalidatorTest, LinkDownCapsL1LifetimeUntilItIsBack) {
  Pod b(&log_, "b", &executor_, nullptr, nullptr);
  ASSERT_OK(b.Get("k", "v1"));
  executor_.AdvanceTime(absl::Seconds(10));  // older than max_local_ttl, well within its ttl
  ASSERT_EQ(b.Get("k")->served_by, TierId::kL1);

  b.bus->SetLink(LinkState::kDegraded);
  EXPECT_EQ(b.invalidator->link_state(), LinkState::kDegraded);
  executor_.AdvanceTime(absl::Seconds(4));
  EXPECT_EQ(b.Get("k")->served_by, TierId::kL1);  // within 5 s of the link's loss
  executor_.AdvanceTime(absl::Seconds(2));
  absl::StatusOr<ReadResult> capped = b.Get("k", "v2");
  ASSERT_OK(capped);
  EXPECT_EQ(capped->served_by, TierId::kOrigin);
  EXPECT_EQ(capped->value, "v2");
  // Fetched while down: trusted for max_local_ttl from its fetch.
  executor_.AdvanceTime(absl::Seconds(4));
  EXPECT_EQ(b.Get("k")->served_by, TierId::kL1);
  executor_.AdvanceTime(absl::Seconds(2));
  std::optional<absl::StatusOr<ReadResult>> down;
  b.path->Get("ns", "k", {}, [&](absl::StatusOr<ReadResult> r) { down = std::move(r); });
  ASSERT_EQ(b.origin.pending(), 1u);
  b.origin.Answer(absl::UnavailableError("origin down"));
  ASSERT_TRUE(down.has_value());
  ASSERT_OK(*down);
  EXPECT_TRUE((*down)->stale);  // the capped copy is still a fallback
  EXPECT_EQ((*down)->value, "v2");

  b.bus->SetLink(LinkState::kUp);
  EXPECT_EQ(b.Get("k")->served_by, TierId::kL1);
}

TEST_F(InvalidatorTest, FirstLinkUpDropsWhatWasCachedBeforeIt) {
  // Started while the bus could not be read: invalidations published before
  // its first read are not replayed to it.
  Pod b(&log_, "b", &executor_, nullptr, nullptr, /*with_bus=*/true, /*link_up=*/false);
  ASSERT_OK(b.Get("k", "v1"));
  ASSERT_EQ(b.Get("k")->served_by, TierId::kL1);
  b.bus->SetLink(LinkState::kUp);
  absl::StatusOr<ReadResult> after = b.Get("k", "v2");
  ASSERT_OK(after);
  EXPECT_EQ(after->served_by, TierId::kOrigin);
  EXPECT_EQ(after->value, "v2");
  EXPECT_EQ(b.invalidator->Stats().cache_drops, 1u);
  // Later flaps replay: they drop nothing.
  ASSERT_EQ(b.Get("k")->served_by, TierId::kL1);
  b.bus->SetLink(LinkState::kDegraded);
  b.bus->SetLink(LinkState::kUp);
  EXPECT_EQ(b.Get("k")->served_by, TierId::kL1);
  EXPECT_EQ(b.invalidator->Stats().cache_drops, 1u);
}

TEST_F(InvalidatorTest, FirstLinkUpKeepsAFillUnderWayOutOfL1AndL3) {
  // A fill reads the old value; another pod invalidates it before this
  // pod's bus makes its first read, which starts after that entry; the
  // fill's answer comes once the link is up. This pod never hears of the
  // invalidation: neither its L1 nor its L3 may keep what the fill read.
  FakeTier l3(TierId::kL3, executor_.clock());
  Pod a(&log_, "a", &executor_, nullptr, nullptr);
  Pod b(&log_, "b", &executor_, nullptr, &l3, /*with_bus=*/true, /*link_up=*/false);
  std::optional<absl::StatusOr<ReadResult>> first;
  b.path->Get("ns", "k", {}, [&](absl::StatusOr<ReadResult> r) { first = std::move(r); });
  ASSERT_EQ(b.origin.pending(), 1u);
  ASSERT_OK(a.Invalidate({"k"}));
  b.bus->SkipToEnd();
  b.bus->SetLink(LinkState::kUp);
  EXPECT_EQ(b.bus->Pump(), 0);
  b.origin.AnswerValue("v1");
  ASSERT_TRUE(first.has_value());
  ASSERT_OK(*first);
  EXPECT_EQ((*first)->value, "v1");  // its reader, from before, gets it
  EXPECT_FALSE(l3.Contains(CompositeKey("ns", "k")));
  absl::StatusOr<ReadResult> again = b.Get("k", "v2");
  ASSERT_OK(again);
  EXPECT_EQ(again->value, "v2");
  EXPECT_EQ(again->served_by, TierId::kOrigin);
}

TEST_F(InvalidatorTest, FirstLinkUpLetsAFillUnderWayWriteTheSharedTier) {
  // Pods started together see their link come up while their first reads
  // wait for the origin: those fills still write L2 (where Redis's fence
  // refuses a fill older than an invalidation), or every pod's next read
  // asks the origin again.
  Pod b(&log_, "b", &executor_, &shared_, nullptr, /*with_bus=*/true, /*link_up=*/false);
  std::optional<absl::StatusOr<ReadResult>> first;
  b.path->Get("ns", "k", {}, [&](absl::StatusOr<ReadResult> r) { first = std::move(r); });
  ASSERT_EQ(b.origin.pending(), 1u);
  b.bus->SetLink(LinkState::kUp);
  b.origin.AnswerValue("v1");
  ASSERT_TRUE(first.has_value());
  ASSERT_OK(*first);
  EXPECT_EQ((*first)->value, "v1");
  absl::StatusOr<ReadResult> again = b.Get("k", "v2");
  ASSERT_OK(again);
  EXPECT_EQ(again->served_by, TierId::kL2);
  EXPECT_EQ(again->value, "v1");
  EXPECT_EQ(b.origin.pending(), 0u);
  // Read from L2 after the link came up: kept in L1.
  EXPECT_EQ(b.Get("k")->served_by, TierId::kL1);
}

TEST_F(InvalidatorTest, GapDropsL1AndSurvivalCopiesServeOnlyAsFallback) {
  FakeTier l3(TierId::kL3, executor_.clock());
  Pod b(&log_, "b", &executor_, nullptr, &l3);
  Pod a(&log_, "a", &executor_, nullptr, nullptr);
  ASSERT_OK(b.Get("k", "v1"));
  ASSERT_TRUE(l3.Contains(CompositeKey("ns", "k")));
  b.bus->SetLink(LinkState::kDegraded);
  for (int i = 0; i < 3; ++i) ASSERT_OK(a.Invalidate({"other"}));
  log_.Trim(1);
  executor_.AdvanceTime(absl::Seconds(1));
  b.bus->SetLink(LinkState::kUp);
  b.bus->Pump();
  EXPECT_EQ(b.invalidator->Stats().cache_drops, 1u);
  EXPECT_EQ(b.path->l1().Stats().entries, 0u);
  // L3's copy predates the gap: the origin is asked, the copy is a fallback.
  std::optional<absl::StatusOr<ReadResult>> r;
  b.path->Get("ns", "k", {}, [&](absl::StatusOr<ReadResult> x) { r = std::move(x); });
  ASSERT_EQ(b.origin.pending(), 1u);
  b.origin.Answer(absl::UnavailableError("origin down"));
  ASSERT_OK(*r);
  EXPECT_EQ((*r)->served_by, TierId::kL3);
  EXPECT_TRUE((*r)->stale);
}

TEST_F(InvalidatorTest, SurvivalCopiesFromBeforeStartAreNotFreshWithABus) {
  FakeTier l3(TierId::kL3, executor_.clock());
  Entry e;
  e.value = "from-last-run";
  e.fetched_at = Now() - absl::Seconds(1);
  e.fresh_until = Now() + absl::Seconds(50);
  e.expires_at = Now() + absl::Seconds(60);
  e.stale_until = Now() + absl::Hours(1);
  l3.Put(CompositeKey("ns", "k"), e);
  {
    Pod solo(&log_, "solo", &executor_, nullptr, &l3, /*with_bus=*/false);
    EXPECT_EQ(solo.Get("k")->served_by, TierId::kL3);  // one pod: nothing was missed
  }
  Pod b(&log_, "b", &executor_, nullptr, &l3);
  absl::StatusOr<ReadResult> r = b.Get("k", "fresh");
  ASSERT_OK(r);
  EXPECT_EQ(r->served_by, TierId::kOrigin);
}

TEST_F(InvalidatorTest, InvalidateEverythingDropsL1HereOnlyAndSurvivalCopiesServeAsFallback) {
  FakeTier l3(TierId::kL3, executor_.clock());
  Pod a(&log_, "a", &executor_, nullptr, &l3);
  Pod b(&log_, "b", &executor_, nullptr, nullptr);
  ASSERT_OK(a.Get("k", "v1"));
  ASSERT_OK(a.Get("j", "v1"));
  ASSERT_OK(b.Get("k", "v1"));
  RecordingSubscriber heard;
  a.invalidator->AddListener(&heard);
  executor_.AdvanceTime(absl::Seconds(1));
  EXPECT_EQ(a.invalidator->InvalidateEverything(), 2u);
  a.invalidator->RemoveListener(&heard);
  EXPECT_EQ(a.path->l1().Stats().entries, 0u);
  EXPECT_EQ(a.invalidator->Stats().cache_drops, 1u);
  EXPECT_THAT(heard.events(), ElementsAre("gap"));
  // Nothing was sent: the other pod hears it from the origin itself.
  EXPECT_TRUE(a.bus->published().empty());
  EXPECT_EQ(b.path->l1().Stats().entries, 1u);
  // L3's copy predates it: the origin is asked, the copy is a fallback.
  std::optional<absl::StatusOr<ReadResult>> r;
  a.path->Get("ns", "k", {}, [&](absl::StatusOr<ReadResult> x) { r = std::move(x); });
  ASSERT_EQ(a.origin.pending(), 1u);
  a.origin.Answer(absl::UnavailableError("origin down"));
  ASSERT_OK(*r);
  EXPECT_EQ((*r)->served_by, TierId::kL3);
  EXPECT_TRUE((*r)->stale);
}

TEST_F(InvalidatorTest, ListenersHearWhatWasAppliedHereInOrder) {
  Pod a(&log_, "a", &executor_, nullptr, nullptr);
  Pod b(&log_, "b", &executor_, nullptr, nullptr);
  RecordingSubscriber heard;
  b.invalidator->AddListener(&heard);
  ASSERT_OK(b.Invalidate({"mine"}));
  ASSERT_OK(a.Invalidate({"theirs"}));
  b.bus->Pump();
  b.bus->SetLink(LinkState::kDegraded);
  ASSERT_OK(a.Invalidate({"missed"}));
  log_.Trim(0);
  b.bus->SetLink(LinkState::kUp);
  b.bus->Pump();
  b.invalidator->RemoveListener(&heard);
  ASSERT_OK(b.Invalidate({"after"}));
  EXPECT_THAT(heard.events(),
              ElementsAre("inv ns:[mine]", "inv ns:[theirs]", "link degraded", "link up", "gap"));
}

}  // namespace
}  // namespace fanout::cache
