// The tier contract over the in-memory FakeTier: the reference the Redis and
// RocksDB tiers are held to.
#include "tests/testing/fake_tier.h"

#include "tests/cache/tiers/tier_contract.h"

namespace fanout::testing {
namespace {

struct FakeTierEnv {
  std::unique_ptr<cache::Tier> Make() {
    return std::make_unique<FakeTier>(cache::TierId::kL2, Clock::Real());
  }
};

INSTANTIATE_TYPED_TEST_SUITE_P(Fake, TierContractTest, ::testing::Types<FakeTierEnv>);

}  // namespace
}  // namespace fanout::testing
