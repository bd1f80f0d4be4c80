#include "bench/sim/trace.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string>
#include <vector>

#include <unistd.h>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace fanout::sim {
namespace {

using ::fanout::testing::IsOk;
using ::fanout::testing::StatusIs;
using ::testing::ElementsAre;

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/fanout_sim_", ::getpid(), "_", name);
}

TEST(ParseTraceFormatTest, ParseTraceFormatAcceptsKnownNamesOnly) {
  EXPECT_EQ(*ParseTraceFormat("text"), TraceFormat::kText);
  EXPECT_EQ(*ParseTraceFormat("u32be"), TraceFormat::kU32Be);
  EXPECT_THAT(ParseTraceFormat("csv"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ParseTextTraceTest, ParseTextTraceReadsOneKeyPerLine) {
  EXPECT_THAT(*ParseTextTrace("1\n22\n\n 333 \n4294967296"), ElementsAre(1, 22, 333, 4294967296));
}

TEST(ParseTextTraceTest, ParseTextTraceRejectsNonNumbers) {
  EXPECT_THAT(ParseTextTrace("1\nabc\n"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseTextTrace("-5\n"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ParseU32BeTraceTest, ParseU32BeTraceReadsBigEndianWords) {
  const std::string bytes("\x00\x00\x00\x01\x01\x02\x03\x04\xff\xff\xff\xff", 12);
  EXPECT_THAT(*ParseU32BeTrace(bytes), ElementsAre(1, 0x01020304, 0xffffffff));
}

TEST(ParseU32BeTraceTest, ParseU32BeTraceRejectsPartialRecord) {
  EXPECT_THAT(ParseU32BeTrace(std::string("\x00\x00\x00\x01\x00", 5)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ReadTraceTest, ReadTraceRoundTripsBothFormats) {
  const Trace trace = {5, 0, 70000, 5, 4294967295};
  for (TraceFormat format : {TraceFormat::kText, TraceFormat::kU32Be}) {
    const std::string path = TempPath("roundtrip");
    ASSERT_THAT(WriteTrace(path, format, trace), IsOk());
    absl::StatusOr<Trace> read = ReadTrace(path, format);
    ASSERT_THAT(read, IsOk());
    EXPECT_EQ(*read, trace);
    std::remove(path.c_str());
  }
}

TEST(ReadTraceTest, ReadTraceDecompressesXzFiles) {
  if (std::system("command -v xz >/dev/null 2>&1") != 0) GTEST_SKIP() << "no xz";
  const std::string path = TempPath("trace");
  ASSERT_THAT(WriteTrace(path, TraceFormat::kU32Be, {1, 2, 3, 2}), IsOk());
  ASSERT_EQ(std::system(absl::StrCat("xz -f ", path).c_str()), 0);
  absl::StatusOr<Trace> read = ReadTrace(path + ".xz", TraceFormat::kU32Be);
  ASSERT_THAT(read, IsOk());
  EXPECT_THAT(*read, ElementsAre(1, 2, 3, 2));
  std::remove((path + ".xz").c_str());
}

TEST(ReadTraceTest, ReadTraceOfMissingFileIsNotFound) {
  EXPECT_THAT(ReadTrace("/nonexistent/trace", TraceFormat::kText),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ReadTrace("/nonexistent/trace.xz", TraceFormat::kU32Be),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(WriteTraceTest, WriteTraceRejectsKeysBeyondU32) {
  EXPECT_THAT(WriteTrace(TempPath("wide"), TraceFormat::kU32Be, {uint64_t{1} << 32}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ParseSyntheticKindTest, ParseSyntheticKindReadsKindAndExponent) {
  SyntheticSpec spec;
  ASSERT_THAT(ParseSyntheticKind("zipf:1.2", &spec), IsOk());
  EXPECT_EQ(spec.kind, SyntheticSpec::Kind::kZipf);
  EXPECT_DOUBLE_EQ(spec.alpha, 1.2);
  ASSERT_THAT(ParseSyntheticKind("loop", &spec), IsOk());
  EXPECT_EQ(spec.kind, SyntheticSpec::Kind::kLoop);
  ASSERT_THAT(ParseSyntheticKind("scan-zipf:0.8", &spec), IsOk());
  EXPECT_EQ(spec.kind, SyntheticSpec::Kind::kScanZipf);
  EXPECT_DOUBLE_EQ(spec.alpha, 0.8);
  ASSERT_THAT(ParseSyntheticKind("shift-zipf:0.9", &spec), IsOk());
  EXPECT_EQ(spec.kind, SyntheticSpec::Kind::kShiftZipf);
  EXPECT_DOUBLE_EQ(spec.alpha, 0.9);
  ASSERT_THAT(ParseSyntheticKind("recency", &spec), IsOk());
  EXPECT_EQ(spec.kind, SyntheticSpec::Kind::kRecency);
  ASSERT_THAT(ParseSyntheticKind("mix", &spec), IsOk());
  EXPECT_EQ(spec.kind, SyntheticSpec::Kind::kMix);
  EXPECT_THAT(ParseSyntheticKind("recency:1", &spec), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseSyntheticKind("zipf", &spec), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseSyntheticKind("zipf:-1", &spec), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseSyntheticKind("gauss", &spec), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(GenerateTraceTest, GenerateTraceLoopsOverTheKeys) {
  SyntheticSpec spec;
  spec.kind = SyntheticSpec::Kind::kLoop;
  spec.keys = 3;
  spec.length = 7;
  EXPECT_THAT(GenerateTrace(spec), ElementsAre(0, 1, 2, 0, 1, 2, 0));
}

TEST(GenerateTraceTest, GenerateTraceIsDeterministicForASeed) {
  SyntheticSpec spec;
  spec.length = 1000;
  spec.keys = 100;
  const Trace a = GenerateTrace(spec);
  EXPECT_EQ(GenerateTrace(spec), a);
  spec.seed = 2;
  EXPECT_NE(GenerateTrace(spec), a);
}

TEST(GenerateTraceTest, GenerateTraceZipfFavoursLowRanks) {
  SyntheticSpec spec;
  spec.alpha = 1.0;
  spec.length = 100'000;
  spec.keys = 1000;
  int rank0 = 0;
  int rank9 = 0;
  for (uint64_t key : GenerateTrace(spec)) {
    ASSERT_LT(key, 1000u);
    rank0 += key == 0 ? 1 : 0;
    rank9 += key == 9 ? 1 : 0;
  }
  // P(rank r) ~ 1/(r+1): rank 0 about ten times rank 9, ~13% of draws.
  EXPECT_GT(rank0, 11'000);
  EXPECT_LT(rank0, 16'000);
  EXPECT_GT(rank0, 7 * rank9);
  EXPECT_LT(rank0, 14 * rank9);
}

TEST(GenerateTraceTest, GenerateTraceScanZipfInsertsScansOfNewKeys) {
  SyntheticSpec spec;
  spec.kind = SyntheticSpec::Kind::kScanZipf;
  spec.length = 1000;
  spec.keys = 50;
  spec.scan_period = 100;
  spec.scan_length = 25;
  const Trace trace = GenerateTrace(spec);
  ASSERT_EQ(trace.size(), 1000u);
  absl::flat_hash_set<uint64_t> one_offs;
  for (size_t i = 0; i < trace.size(); ++i) {
    const bool in_scan = i % 125 >= 100;
    if (in_scan) {
      EXPECT_GE(trace[i], 50u) << i;
      EXPECT_TRUE(one_offs.insert(trace[i]).second) << "repeated one-off at " << i;
    } else {
      EXPECT_LT(trace[i], 50u) << i;
    }
  }
  EXPECT_EQ(one_offs.size(), 8u * 25u);
}

TEST(ValidateSyntheticSpecTest, ValidateSyntheticSpecNamesTheBadField) {
  SyntheticSpec spec;
  spec.kind = SyntheticSpec::Kind::kShiftZipf;
  EXPECT_THAT(ValidateSyntheticSpec(spec), IsOk());
  spec.phase_length = 0;
  EXPECT_THAT(ValidateSyntheticSpec(spec),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("phase_length")));
  spec.phase_length = 10;
  spec.shift_fraction = 1.5;
  EXPECT_THAT(ValidateSyntheticSpec(spec),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("shift_fraction")));
  spec.kind = SyntheticSpec::Kind::kRecency;
  spec.new_fraction = -0.1;
  EXPECT_THAT(ValidateSyntheticSpec(spec),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("new_fraction")));
  spec.new_fraction = 0.3;
  spec.mean_depth = -1;
  EXPECT_THAT(ValidateSyntheticSpec(spec),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("mean_depth")));
  spec.kind = SyntheticSpec::Kind::kMix;
  spec.mean_depth = 60;
  spec.mix_fraction = 2;
  EXPECT_THAT(ValidateSyntheticSpec(spec),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("mix_fraction")));
  spec.kind = SyntheticSpec::Kind::kZipf;
  spec.keys = 0;
  EXPECT_THAT(ValidateSyntheticSpec(spec),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("keys")));
  spec.keys = 10'000'000'000;  // a table of 80 GB
  EXPECT_THAT(ValidateSyntheticSpec(spec),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("keys")));
}

// The distinct keys of trace[begin, end).
absl::flat_hash_set<uint64_t> KeysIn(const Trace& trace, size_t begin, size_t end) {
  return absl::flat_hash_set<uint64_t>(trace.begin() + static_cast<std::ptrdiff_t>(begin),
                                       trace.begin() + static_cast<std::ptrdiff_t>(end));
}

// The most frequent key of trace[begin, end).
uint64_t MostFrequent(const Trace& trace, size_t begin, size_t end) {
  absl::flat_hash_map<uint64_t, int> counts;
  uint64_t best = 0;
  for (size_t i = begin; i < end; ++i) {
    if (++counts[trace[i]] > counts[best]) best = trace[i];
  }
  return best;
}

TEST(GenerateTraceTest, GenerateTraceShiftZipfReplacesTheKeysEveryPhase) {
  SyntheticSpec spec;
  spec.kind = SyntheticSpec::Kind::kShiftZipf;
  spec.keys = 100;
  spec.phase_length = 5000;
  spec.length = 15'000;
  const Trace trace = GenerateTrace(spec);
  ASSERT_EQ(trace.size(), 15'000u);
  const auto phase0 = KeysIn(trace, 0, 5000);
  const auto phase1 = KeysIn(trace, 5000, 10'000);
  for (uint64_t key : phase1) EXPECT_FALSE(phase0.contains(key)) << key;
  for (uint64_t key : phase0) EXPECT_LT(key, 100u);
  // Ranks get keys in a random order: the hottest key is rarely key 0 again.
  EXPECT_NE(MostFrequent(trace, 5000, 10'000), MostFrequent(trace, 10'000, 15'000));
  EXPECT_EQ(GenerateTrace(spec), trace);
}

TEST(GenerateTraceTest, GenerateTraceShiftZipfWithPartialShiftKeepsTheRest) {
  SyntheticSpec spec;
  spec.kind = SyntheticSpec::Kind::kShiftZipf;
  spec.alpha = 0.5;  // flat, so that nearly every key of a phase is drawn
  spec.keys = 100;
  spec.phase_length = 20'000;
  spec.length = 40'000;
  spec.shift_fraction = 0.3;
  const Trace trace = GenerateTrace(spec);
  const auto phase0 = KeysIn(trace, 0, 20'000);
  const auto phase1 = KeysIn(trace, 20'000, 40'000);
  int kept = 0;
  for (uint64_t key : phase1) kept += phase0.contains(key) ? 1 : 0;
  EXPECT_EQ(phase1.size(), 100u);
  EXPECT_EQ(kept, 70);
}

TEST(GenerateTraceTest, GenerateTraceRecencyDrawsNewKeysAndRecentOnes) {
  SyntheticSpec spec;
  spec.kind = SyntheticSpec::Kind::kRecency;
  spec.new_fraction = 0.25;
  spec.mean_depth = 20;
  spec.length = 100'000;
  const Trace trace = GenerateTrace(spec);
  ASSERT_EQ(trace.size(), 100'000u);
  // Replays an LRU stack to measure each reuse's depth.
  std::vector<uint64_t> stack;  // most recent last
  absl::flat_hash_set<uint64_t> seen;
  uint64_t fresh = 0;
  uint64_t reuses = 0;
  uint64_t depth_sum = 0;
  for (uint64_t key : trace) {
    if (seen.insert(key).second) {
      ++fresh;
      stack.push_back(key);
      continue;
    }
    const auto at = std::find(stack.rbegin(), stack.rend(), key);
    ASSERT_NE(at, stack.rend());
    depth_sum += static_cast<uint64_t>(at - stack.rbegin());
    ++reuses;
    stack.erase(std::next(at).base());
    stack.push_back(key);
  }
  // New keys: the 25% drawn as new, plus the few deeper than the stack early on.
  EXPECT_NEAR(static_cast<double>(fresh) / 100'000, 0.25, 0.01);
  EXPECT_NEAR(static_cast<double>(depth_sum) / static_cast<double>(reuses), 20, 1);
  EXPECT_EQ(GenerateTrace(spec), trace);
}

TEST(GenerateTraceTest, GenerateTraceMixInterleavesZipfAndRecencyKeys) {
  SyntheticSpec spec;
  spec.kind = SyntheticSpec::Kind::kMix;
  spec.keys = 1000;
  spec.mix_fraction = 0.4;
  spec.length = 50'000;
  const Trace trace = GenerateTrace(spec);
  uint64_t recency_draws = 0;
  for (uint64_t key : trace) recency_draws += key >= 1000 ? 1 : 0;
  EXPECT_NEAR(static_cast<double>(recency_draws) / 50'000, 0.4, 0.01);
}

}  // namespace
}  // namespace fanout::sim
