// The contract every cache::FillLease keeps (cache/fill_lease.h), as a typed
// test suite. An implementation's test instantiates it with an environment:
//
//   struct RedisLeaseEnv {
//     // Called once per test; no lease is held and no value stored.
//     std::unique_ptr<cache::FillLease> Make();
//     // The holder's write of `key` to the shared tier the lease guards.
//     void Write(const std::string& key, const cache::Entry& entry);
//     // Lets an implementation that is not driven by its own timers look
//     // again at its waiters (a fake); a no-op for real stores.
//     void Settle();
//   };
//   INSTANTIATE_TYPED_TEST_SUITE_P(Redis, FillLeaseContractTest,
//                                  ::testing::Types<RedisLeaseEnv>);
//
// On the real clock: expiry is awaited by bounded polling, never by sleeping
// a fixed time.
#ifndef FANOUT_TESTS_CACHE_FILL_LEASE_CONTRACT_H_
#define FANOUT_TESTS_CACHE_FILL_LEASE_CONTRACT_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "cache/fill_lease.h"
#include "gtest/gtest.h"
#include "tests/cache/tiers/tier_contract.h"
#include "tests/testing/status_matchers.h"

namespace fanout::testing {

inline absl::StatusOr<cache::LeaseGrant> AcquireNow(cache::FillLease& lease, absl::string_view key,
                                                    absl::Duration ttl) {
  absl::Notification done;
  absl::StatusOr<cache::LeaseGrant> out = absl::InternalError("no answer");
  lease.Acquire(key, ttl, absl::Now() + absl::Seconds(5), [&](absl::StatusOr<cache::LeaseGrant> g) {
    out = std::move(g);
    done.Notify();
  });
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(kTierCallBound)) << "Acquire never answered";
  return out;
}

inline absl::Status ReleaseNow(cache::FillLease& lease, absl::string_view key,
                               absl::string_view token) {
  absl::Notification done;
  absl::Status out = absl::InternalError("no answer");
  lease.Release(key, token, absl::Now() + absl::Seconds(5), [&](absl::Status s) {
    out = std::move(s);
    done.Notify();
  });
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(kTierCallBound)) << "Release never answered";
  return out;
}

// An AwaitFill in flight, to be answered later.
class PendingFill {
 public:
  PendingFill(cache::FillLease& lease, absl::string_view key, absl::Time newer_than,
              absl::Duration timeout) {
    lease.AwaitFill(key, newer_than, absl::Now() + timeout, [this](absl::StatusOr<cache::Entry> e) {
      absl::MutexLock l(&mu_);
      result_ = std::move(e);
      answered_ = true;
    });
  }
  bool answered() const {
    absl::MutexLock l(&mu_);
    return answered_;
  }
  // Waits (bounded) for the answer, calling `settle` meanwhile.
  template <typename Settle>
  absl::StatusOr<cache::Entry> Get(Settle settle) {
    const absl::Time give_up = absl::Now() + kTierCallBound;
    while (!answered() && absl::Now() < give_up) {
      settle();
      absl::SleepFor(absl::Milliseconds(5));
    }
    EXPECT_TRUE(answered()) << "AwaitFill never answered";
    absl::MutexLock l(&mu_);
    return result_;
  }

 private:
  mutable absl::Mutex mu_;
  bool answered_ ABSL_GUARDED_BY(mu_) = false;
  absl::StatusOr<cache::Entry> result_ ABSL_GUARDED_BY(mu_) = absl::InternalError("no answer");
};

template <typename Env>
class FillLeaseContractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    lease_ = env_.Make();
    ASSERT_NE(lease_, nullptr);
  }
  void TearDown() override { lease_.reset(); }
  auto Settler() {
    return [this] { env_.Settle(); };
  }

  Env env_;
  std::unique_ptr<cache::FillLease> lease_;
};

TYPED_TEST_SUITE_P(FillLeaseContractTest);

TYPED_TEST_P(FillLeaseContractTest, OneOfManyContendersAcquires) {
  constexpr int kContenders = 8;
  std::atomic<int> acquired{0};
  std::atomic<int> lost{0};
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kContenders; ++i) {
    threads.emplace_back([&] {
      absl::StatusOr<cache::LeaseGrant> g =
          AcquireNow(*this->lease_, Ck("ns", "k"), absl::Seconds(30));
      if (!g.ok()) {
        bad.fetch_add(1);
      } else if (g->acquired) {
        acquired.fetch_add(1);
        if (g->token.empty()) bad.fetch_add(1);
      } else {
        lost.fetch_add(1);
        if (g->holder_remaining <= absl::ZeroDuration() ||
            g->holder_remaining > absl::Seconds(30)) {
          bad.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(acquired.load(), 1);
  EXPECT_EQ(lost.load(), kContenders - 1);
  EXPECT_EQ(bad.load(), 0);
  const cache::FillLeaseStats s = this->lease_->Stats();
  EXPECT_EQ(s.acquired, 1u);
  EXPECT_EQ(s.contended, static_cast<uint64_t>(kContenders - 1));
  // Leases on other keys are independent.
  absl::StatusOr<cache::LeaseGrant> other =
      AcquireNow(*this->lease_, Ck("ns", "other"), absl::Seconds(30));
  ASSERT_OK(other);
  EXPECT_TRUE(other->acquired);
}

TYPED_TEST_P(FillLeaseContractTest, ReleaseByANonHolderIsRefused) {
  absl::StatusOr<cache::LeaseGrant> a = AcquireNow(*this->lease_, Ck("ns", "k"), absl::Seconds(30));
  ASSERT_OK(a);
  ASSERT_TRUE(a->acquired);
  EXPECT_THAT(ReleaseNow(*this->lease_, Ck("ns", "k"), "not-the-token"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  absl::StatusOr<cache::LeaseGrant> b = AcquireNow(*this->lease_, Ck("ns", "k"), absl::Seconds(30));
  ASSERT_OK(b);
  EXPECT_FALSE(b->acquired);  // still A's
  EXPECT_OK(ReleaseNow(*this->lease_, Ck("ns", "k"), a->token));
  EXPECT_THAT(ReleaseNow(*this->lease_, Ck("ns", "k"), a->token),
              StatusIs(absl::StatusCode::kFailedPrecondition));  // once only
  b = AcquireNow(*this->lease_, Ck("ns", "k"), absl::Seconds(30));
  ASSERT_OK(b);
  EXPECT_TRUE(b->acquired);
  const cache::FillLeaseStats s = this->lease_->Stats();
  EXPECT_EQ(s.released, 1u);
  EXPECT_EQ(s.release_refused, 2u);
}

TYPED_TEST_P(FillLeaseContractTest, ALeaseWhoseHolderDiedExpires) {
  const absl::Time start = absl::Now();
  absl::StatusOr<cache::LeaseGrant> dead =
      AcquireNow(*this->lease_, Ck("ns", "k"), absl::Milliseconds(150));
  ASSERT_OK(dead);
  ASSERT_TRUE(dead->acquired);
  absl::StatusOr<cache::LeaseGrant> next;
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  do {
    next = AcquireNow(*this->lease_, Ck("ns", "k"), absl::Seconds(30));
    ASSERT_OK(next);
    if (next->acquired) break;
    absl::SleepFor(absl::Milliseconds(10));
  } while (absl::Now() < give_up);
  EXPECT_TRUE(next->acquired);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(150));
  // The dead holder's late release does not free the new holder's lease.
  EXPECT_THAT(ReleaseNow(*this->lease_, Ck("ns", "k"), dead->token),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  absl::StatusOr<cache::LeaseGrant> third =
      AcquireNow(*this->lease_, Ck("ns", "k"), absl::Seconds(30));
  ASSERT_OK(third);
  EXPECT_FALSE(third->acquired);
}

TYPED_TEST_P(FillLeaseContractTest, AwaitFillAnswersWithTheHoldersWrite) {
  absl::StatusOr<cache::LeaseGrant> holder =
      AcquireNow(*this->lease_, Ck("ns", "k"), absl::Seconds(30));
  ASSERT_OK(holder);
  ASSERT_TRUE(holder->acquired);
  // An older copy is in the tier: the waiter holds it already.
  cache::Entry old = EntryNow("old");
  old.fetched_at -= absl::Minutes(5);
  this->env_.Write(Ck("ns", "k"), old);
  PendingFill wait(*this->lease_, Ck("ns", "k"), old.fetched_at, absl::Seconds(10));
  this->env_.Settle();
  EXPECT_FALSE(wait.answered());

  this->env_.Write(Ck("ns", "k"), EntryNow("new"));
  ASSERT_OK(ReleaseNow(*this->lease_, Ck("ns", "k"), holder->token));
  absl::StatusOr<cache::Entry> got = wait.Get(this->Settler());
  ASSERT_OK(got);
  EXPECT_EQ(got->value, "new");
  EXPECT_EQ(this->lease_->Stats().waits_filled, 1u);
}

TYPED_TEST_P(FillLeaseContractTest, AwaitFillIsNotFoundWhenTheHolderLeavesWithoutWriting) {
  absl::StatusOr<cache::LeaseGrant> holder =
      AcquireNow(*this->lease_, Ck("ns", "k"), absl::Seconds(30));
  ASSERT_OK(holder);
  PendingFill wait(*this->lease_, Ck("ns", "k"), absl::InfinitePast(), absl::Seconds(10));
  ASSERT_OK(ReleaseNow(*this->lease_, Ck("ns", "k"), holder->token));
  EXPECT_THAT(wait.Get(this->Settler()), StatusIs(absl::StatusCode::kNotFound));
  // No lease and no value: at once.
  PendingFill nothing(*this->lease_, Ck("ns", "none"), absl::InfinitePast(), absl::Seconds(10));
  EXPECT_THAT(nothing.Get(this->Settler()), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(this->lease_->Stats().waits_vacant, 2u);
}

TYPED_TEST_P(FillLeaseContractTest, AwaitFillGivesUpAtItsDeadline) {
  absl::StatusOr<cache::LeaseGrant> holder =
      AcquireNow(*this->lease_, Ck("ns", "k"), absl::Seconds(30));
  ASSERT_OK(holder);
  const absl::Time start = absl::Now();
  PendingFill wait(*this->lease_, Ck("ns", "k"), absl::InfinitePast(), absl::Milliseconds(150));
  EXPECT_THAT(wait.Get(this->Settler()), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(150));
  EXPECT_EQ(this->lease_->Stats().waits_timed_out, 1u);
}

TYPED_TEST_P(FillLeaseContractTest, BadArgumentsAreInvalidArgument) {
  EXPECT_THAT(AcquireNow(*this->lease_, "", absl::Seconds(1)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(AcquireNow(*this->lease_, Ck("ns", "k"), absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ReleaseNow(*this->lease_, Ck("ns", "k"), ""),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

REGISTER_TYPED_TEST_SUITE_P(FillLeaseContractTest, OneOfManyContendersAcquires,
                            ReleaseByANonHolderIsRefused, ALeaseWhoseHolderDiedExpires,
                            AwaitFillAnswersWithTheHoldersWrite,
                            AwaitFillIsNotFoundWhenTheHolderLeavesWithoutWriting,
                            AwaitFillGivesUpAtItsDeadline, BadArgumentsAreInvalidArgument);

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_CACHE_FILL_LEASE_CONTRACT_H_
