#include "cache/origin_push.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/l1/wtinylfu_cache.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_origin.h"
#include "tests/testing/manual_executor.h"
#include "tests/testing/status_matchers.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::FakeOrigin;

class OriginPushTest : public ::testing::Test {
 protected:
  OriginPushTest() : guard_(absl::Seconds(5)) {
    ReadPathOptions o;
    o.ttl = absl::Seconds(60);
    o.ttl_jitter = 0;
    o.link_guard = &guard_;
    L1Options l1;
    l1.capacity_bytes = 1 << 20;
    path_ = std::make_unique<ReadPath>(o, NewWTinyLfuCache(l1),
                                       std::vector<std::unique_ptr<Tier>>{}, &origin_, &executor_);
    invalidator_ = std::make_unique<Invalidator>(path_.get(), nullptr, &guard_, executor_.clock());
    origin_.EnablePush();
    auto push = OriginPush::Start(&origin_, invalidator_.get(), 10);
    EXPECT_OK(push);
    push_ = *std::move(push);
  }
  ~OriginPushTest() override {
    push_.reset();
    invalidator_.reset();
    path_.reset();
  }

  // A Get of `key` in `ns`; the origin (if asked) answers `value` at once.
  absl::StatusOr<ReadResult> Get(const std::string& ns, const std::string& key,
                                 const std::string& value = "") {
    std::optional<absl::StatusOr<ReadResult>> out;
    path_->Get(ns, key, {}, [&](absl::StatusOr<ReadResult> r) { out = std::move(r); });
    if (!out.has_value() && origin_.pending() > 0) origin_.AnswerValue(value);
    if (!out.has_value()) return absl::InternalError("no answer");
    return *std::move(out);
  }

  testing::ManualExecutor executor_;
  LinkGuard guard_;
  FakeOrigin origin_;
  std::unique_ptr<ReadPath> path_;
  std::unique_ptr<Invalidator> invalidator_;
  std::unique_ptr<OriginPush> push_;
};

TEST_F(OriginPushTest, PushedKeysAreErasedFromL1) {
  ASSERT_OK(Get("ns", "a", "v1"));
  ASSERT_OK(Get("ns", "b", "v1"));
  origin_.Push({.ns = "ns", .keys = {"a"}, .prefix = ""});
  EXPECT_EQ(Get("ns", "a", "v2")->served_by, TierId::kOrigin);
  EXPECT_EQ(Get("ns", "b")->served_by, TierId::kL1);
  EXPECT_EQ(push_->Stats().changes, 1u);
  EXPECT_EQ(push_->Stats().keys, 1u);
  EXPECT_EQ(push_->Stats().resets, 0u);
}

TEST_F(OriginPushTest, AChangeOfEveryKeyDropsL1OfEveryNamespace) {
  ASSERT_OK(Get("ns", "a", "v1"));
  ASSERT_OK(Get("other", "b", "v1"));
  ASSERT_EQ(Get("ns", "a")->served_by, TierId::kL1);
  origin_.Push({.ns = "ns", .keys = {}, .prefix = "", .all = true});
  absl::StatusOr<ReadResult> a = Get("ns", "a", "v2");
  ASSERT_OK(a);
  EXPECT_EQ(a->served_by, TierId::kOrigin);
  EXPECT_EQ(a->value.view(), "v2");
  EXPECT_EQ(Get("other", "b", "v2")->served_by, TierId::kOrigin);
  EXPECT_EQ(push_->Stats().changes, 1u);
  EXPECT_EQ(push_->Stats().resets, 1u);
  EXPECT_EQ(invalidator_->Stats().cache_drops, 1u);
}

TEST_F(OriginPushTest, AnEmptyChangeIsIgnored) {
  ASSERT_OK(Get("ns", "a", "v1"));
  origin_.Push({.ns = "ns", .keys = {}, .prefix = ""});
  EXPECT_EQ(Get("ns", "a")->served_by, TierId::kL1);
  EXPECT_EQ(push_->Stats().changes, 0u);
}

}  // namespace
}  // namespace fanout::cache
