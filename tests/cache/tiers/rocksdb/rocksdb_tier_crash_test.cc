// Crash safety of the survival tier: a child process stores entries and
// records each store the tier acknowledged in a file outside the DB; it is
// killed with SIGKILL at random moments (sometimes while it is still opening
// the DB), over many rounds on the same directory. After each kill the DB is
// reopened and every acknowledged entry must be there, whole. With
// `sync: false` this is the process-crash guarantee (the WAL is in the OS
// when a batch is acknowledged); a power loss is not simulated here.
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "cache/tiers/rocksdb/rocksdb_tier.h"
#include "tests/cache/tiers/rocksdb/rocksdb_crash_value.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"

namespace fanout::testing {
namespace {

namespace fs = std::filesystem;

std::vector<int64_t> ReadAcks(const std::string& path) {
  std::vector<int64_t> acks;
  for (absl::string_view line : absl::StrSplit(ReadFile(path), '\n', absl::SkipEmpty())) {
    int64_t i;
    if (line.size() == 10 && absl::SimpleAtoi(line, &i)) acks.push_back(i);
    // A line cut short by the kill was never a complete acknowledgement.
  }
  return acks;
}

std::vector<absl::StatusOr<cache::Entry>> LookupManyNow(cache::Tier& tier,
                                                        std::vector<std::string> keys) {
  absl::Notification done;
  std::vector<absl::StatusOr<cache::Entry>> out;
  tier.LookupMany(std::move(keys), absl::Now() + absl::Seconds(20),
                  [&](std::vector<absl::StatusOr<cache::Entry>> e) {
                    out = std::move(e);
                    done.Notify();
                  });
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)))
      << "LookupMany never answered";
  return out;
}

// Looks up every acknowledged key; returns how many were missing or wrong.
int CountLost(cache::Tier& tier, const std::vector<int64_t>& acks, std::string* first_lost) {
  int lost = 0;
  constexpr size_t kBatch = 500;
  for (size_t at = 0; at < acks.size(); at += kBatch) {
    std::vector<std::string> keys;
    for (size_t j = at; j < std::min(acks.size(), at + kBatch); ++j) {
      keys.push_back(CrashKey(acks[j]));
    }
    std::vector<absl::StatusOr<cache::Entry>> got = LookupManyNow(tier, keys);
    for (size_t j = 0; j < got.size(); ++j) {
      const int64_t i = acks[at + j];
      if (got[j].ok() && got[j]->value == CrashValue(i) && got[j]->version == i) continue;
      if (lost++ == 0) *first_lost = absl::StrCat(i, ": ", got[j].status().ToString());
    }
  }
  return lost;
}

TEST(RocksDbTierCrashTest, EveryAcknowledgedStoreSurvivesKillNine) {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = absl::StrCat(base != nullptr ? base : "/tmp", "/fanout_l3crash_XXXXXX");
  const std::string dir = ::mkdtemp(pattern.data());
  const std::string db = dir + "/l3";
  const uint32_t seed = std::random_device()();
  std::mt19937 rng(seed);
  SCOPED_TRACE(absl::StrCat("seed ", seed));

  std::vector<int64_t> all_acks;
  int rounds = 0;
  int killed_before_any_ack = 0;
  const absl::Time stop_after = absl::Now() + absl::Seconds(10);
  while (rounds < 40 && (rounds < 8 || absl::Now() < stop_after)) {
    const std::string acks = absl::StrCat(dir, "/acks-", rounds);
    const int64_t first = int64_t{rounds} * 10'000'000;
    // Kill after a random number of acknowledgements; one round in four at
    // a random moment in the child's first 60 ms (while it starts, opens and
    // recovers the DB).
    const int64_t kill_after =
        rng() % 4 == 0 ? 0 : std::uniform_int_distribution<int64_t>(1, 20'000)(rng);
    {
      Subprocess child({ROCKSDB_CRASH_CHILD_PATH, db, acks, std::to_string(first)});
      if (kill_after == 0) {
        absl::SleepFor(absl::Microseconds(std::uniform_int_distribution<int>(0, 60'000)(rng)));
      }
      const absl::Time give_up = absl::Now() + absl::Seconds(10);
      while (kill_after > 0 && absl::Now() < give_up) {
        std::error_code ec;
        const auto bytes = fs::file_size(acks, ec);
        if (!ec && static_cast<int64_t>(bytes) >= kill_after * 11) break;
        if (child.Wait(absl::ZeroDuration()).has_value()) break;
        absl::SleepFor(absl::Milliseconds(1));
      }
      child.Signal(SIGKILL);
      std::optional<int> code = child.Wait(absl::Seconds(20));
      ASSERT_TRUE(code.has_value());
      ASSERT_EQ(*code, 128 + SIGKILL) << "the child ended on its own: " << child.err();
    }
    const std::vector<int64_t> acked = ReadAcks(acks);
    if (acked.empty()) ++killed_before_any_ack;
    cache::RocksDbTierOptions options;
    options.path = db;
    absl::StatusOr<std::unique_ptr<cache::RocksDbTier>> tier = cache::RocksDbTier::Open(options);
    ASSERT_OK(tier) << "round " << rounds;
    EXPECT_TRUE((*tier)->State().moved_aside.empty()) << "a crash must not look like corruption";
    std::string first_lost;
    EXPECT_EQ(CountLost(**tier, acked, &first_lost), 0)
        << "round " << rounds << " lost acknowledged stores, first " << first_lost;
    all_acks.insert(all_acks.end(), acked.begin(), acked.end());
    ++rounds;
  }

  // Every round's acknowledgements, once more, after all the kills.
  cache::RocksDbTierOptions options;
  options.path = db;
  absl::StatusOr<std::unique_ptr<cache::RocksDbTier>> tier = cache::RocksDbTier::Open(options);
  ASSERT_OK(tier);
  std::string first_lost;
  EXPECT_EQ(CountLost(**tier, all_acks, &first_lost), 0) << "first " << first_lost;
  EXPECT_GE(all_acks.size(), 10'000u) << "too few stores to say anything";
  RecordProperty("rounds", rounds);
  RecordProperty("acknowledged", static_cast<int>(all_acks.size()));
  std::fprintf(stderr, "%d rounds, %zu acknowledged stores checked, %d killed before any\n", rounds,
               all_acks.size(), killed_before_any_ack);
  tier->reset();
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace
}  // namespace fanout::testing
