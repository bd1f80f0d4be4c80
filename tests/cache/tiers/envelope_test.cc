#include "cache/tiers/envelope.h"

#include <string>

#include "gtest/gtest.h"
#include "tests/testing/cache_entries.h"
#include "tests/testing/status_matchers.h"

namespace fanout::cache {
namespace {

using ::fanout::testing::MakeEntry;
using ::fanout::testing::StatusIs;

TEST(EnvelopeTest, RoundTripKeepsValueVersionAndTimes) {
  Entry e = MakeEntry(std::string("va\0lue", 6));
  e.version = -42;
  e.fill_time = absl::Microseconds(1234);
  absl::StatusOr<Envelope> got = DecodeEnvelope(EncodeEnvelope(e));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->superseded);
  EXPECT_EQ(got->entry.value, std::string("va\0lue", 6));
  EXPECT_EQ(got->entry.version, -42);
  EXPECT_EQ(got->entry.fetched_at, e.fetched_at);
  EXPECT_EQ(got->entry.fresh_until, e.fresh_until);
  EXPECT_EQ(got->entry.expires_at, e.expires_at);
  EXPECT_EQ(got->entry.stale_until, e.stale_until);
  EXPECT_EQ(got->entry.fill_time, absl::Microseconds(1234));
}

TEST(EnvelopeTest, RoundTripKeepsInfiniteTimesAndTheSupersededFlag) {
  Entry e;
  e.value = "";
  e.stale_until = absl::InfiniteFuture();
  absl::StatusOr<Envelope> got = DecodeEnvelope(EncodeEnvelope(e, /*superseded=*/true));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->superseded);
  EXPECT_EQ(got->entry.fetched_at, absl::InfinitePast());
  EXPECT_EQ(got->entry.stale_until, absl::InfiniteFuture());
  EXPECT_TRUE(got->entry.value.empty());
}

TEST(EnvelopeTest, DecodeRefusesGarbageWithDataLoss) {
  const std::string good = EncodeEnvelope(MakeEntry("value"));
  EXPECT_THAT(DecodeEnvelope(""), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(DecodeEnvelope("hello, this is not an envelope at all, not one bit of it"),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(DecodeEnvelope(good.substr(0, good.size() - 1)),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(DecodeEnvelope(good + "x"), StatusIs(absl::StatusCode::kDataLoss));
  std::string other_format = good;
  other_format[0] = 2;
  EXPECT_THAT(DecodeEnvelope(other_format), StatusIs(absl::StatusCode::kDataLoss));
  std::string bad_flags = good;
  bad_flags[1] = 0x40;
  EXPECT_THAT(DecodeEnvelope(bad_flags), StatusIs(absl::StatusCode::kDataLoss));
  // Times out of order: expires_at before fetched_at.
  Entry e = MakeEntry("v");
  e.expires_at = e.fetched_at - absl::Seconds(1);
  EXPECT_THAT(DecodeEnvelope(EncodeEnvelope(e)), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(EnvelopeTest, DecodeNeverCrashesOnAnyTruncationOrByteFlip) {
  const std::string good = EncodeEnvelope(MakeEntry("some value"));
  for (size_t n = 0; n <= good.size(); ++n) (void)DecodeEnvelope(good.substr(0, n));
  for (size_t i = 0; i < good.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string flipped = good;
      flipped[i] = static_cast<char>(flipped[i] ^ (1 << bit));
      absl::StatusOr<Envelope> got = DecodeEnvelope(flipped);
      if (got.ok()) {
        EXPECT_LE(got->entry.fetched_at, got->entry.stale_until);
      }
    }
  }
}

TEST(EnvelopeTest, SupersedeEndsFreshnessNowAndKeepsTheStaleWindow) {
  Entry e = MakeEntry("v", absl::Seconds(10));  // fresh 10s, expires 20s, stale until 40s
  const absl::Time now = e.fetched_at + absl::Seconds(3);
  Entry s = Supersede(e, now);
  EXPECT_EQ(FreshnessAt(s, now), Freshness::kStale);
  EXPECT_EQ(s.expires_at, now);
  EXPECT_EQ(s.stale_until, e.stale_until);
  // Already expired: unchanged.
  Entry late = Supersede(e, e.fetched_at + absl::Seconds(30));
  EXPECT_EQ(late.expires_at, e.expires_at);
}

}  // namespace
}  // namespace fanout::cache
