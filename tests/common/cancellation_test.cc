#include "common/cancellation.h"

#include <memory>
#include <optional>

#include "gtest/gtest.h"

namespace fanout {
namespace {

TEST(CancellationTokenTest, DefaultTokenIsNeverCancelled) {
  CancellationToken token;
  EXPECT_FALSE(token.cancelled());
  EXPECT_FALSE(token.can_be_cancelled());
  int runs = 0;
  CancellationCallback callback(token, [&] { ++runs; });
  EXPECT_EQ(runs, 0);
}

TEST(CancellationSourceTest, CancelReturnsTrueOnlyOnce) {
  CancellationSource source;
  CancellationToken token = source.token();
  EXPECT_TRUE(token.can_be_cancelled());
  EXPECT_FALSE(token.cancelled());
  EXPECT_TRUE(source.Cancel());
  EXPECT_FALSE(source.Cancel());
  EXPECT_TRUE(token.cancelled());
  EXPECT_TRUE(source.cancelled());
}

TEST(CancellationCallbackTest, CancelRunsCallbackOnce) {
  CancellationSource source;
  int runs = 0;
  CancellationCallback callback(source.token(), [&] { ++runs; });
  EXPECT_EQ(runs, 0);
  source.Cancel();
  source.Cancel();
  EXPECT_EQ(runs, 1);
}

TEST(CancellationCallbackTest, RegisteringOnCancelledTokenRunsInline) {
  CancellationSource source;
  source.Cancel();
  int runs = 0;
  CancellationCallback callback(source.token(), [&] { ++runs; });
  EXPECT_EQ(runs, 1);
}

TEST(CancellationCallbackTest, DestroyedCallbackDoesNotRun) {
  CancellationSource source;
  int runs = 0;
  {
    CancellationCallback callback(source.token(), [&] { ++runs; });
  }
  source.Cancel();
  EXPECT_EQ(runs, 0);
}

TEST(CancellationCallbackTest, CallbackMayDestroyItsOwnRegistration) {
  CancellationSource source;
  auto holder = std::make_shared<int>(7);
  std::optional<CancellationCallback> callback;
  int seen = 0;
  callback.emplace(source.token(), [&, holder] {
    callback.reset();
    seen = *holder;  // captures are still alive: the callback was moved out first
  });
  source.Cancel();
  EXPECT_EQ(seen, 7);
  EXPECT_FALSE(callback.has_value());
  EXPECT_EQ(holder.use_count(), 1);
}

TEST(CancellationSourceTest, ChildFollowsParent) {
  CancellationSource parent;
  CancellationSource child(parent.token());
  CancellationSource grandchild(child.token());
  int runs = 0;
  CancellationCallback callback(grandchild.token(), [&] { ++runs; });
  parent.Cancel();
  EXPECT_TRUE(child.cancelled());
  EXPECT_TRUE(grandchild.token().cancelled());
  EXPECT_EQ(runs, 1);
}

TEST(CancellationSourceTest, CancellingChildLeavesParentAndSiblingsAlone) {
  CancellationSource parent;
  CancellationSource child(parent.token());
  CancellationSource sibling(parent.token());
  child.Cancel();
  EXPECT_TRUE(child.cancelled());
  EXPECT_FALSE(parent.cancelled());
  EXPECT_FALSE(sibling.cancelled());
}

TEST(CancellationSourceTest, ChildOfCancelledParentStartsCancelled) {
  CancellationSource parent;
  parent.Cancel();
  CancellationSource child(parent.token());
  EXPECT_TRUE(child.cancelled());
}

TEST(CancellationSourceTest, DestroyedChildDetachesFromParent) {
  CancellationSource parent;
  CancellationToken orphan;
  {
    CancellationSource child(parent.token());
    orphan = child.token();
  }
  parent.Cancel();
  EXPECT_FALSE(orphan.cancelled());
  EXPECT_FALSE(orphan.can_be_cancelled());
}

TEST(CancellationSourceTest, MovedSourceKeepsParentLink) {
  CancellationSource parent;
  CancellationSource child(parent.token());
  CancellationToken token = child.token();
  CancellationSource moved(std::move(child));
  parent.Cancel();
  EXPECT_TRUE(moved.cancelled());
  EXPECT_TRUE(token.cancelled());
}

}  // namespace
}  // namespace fanout
