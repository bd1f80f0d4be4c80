// The survival tier (L3) over RocksDB: the tier contract, then what only a
// persistent, local tier has to get right: restarts, the disk (reads off the
// caller's thread, deadlines of queued reads, the write-behind queue), the
// compaction filter and the disk cap, and bad directories and disks.
#include "cache/tiers/rocksdb/rocksdb_tier.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "rocksdb/db.h"
#include "tests/cache/tiers/rocksdb/rocksdb_fault_env.h"
#include "tests/cache/tiers/tier_contract.h"
#include "tests/testing/eventually.h"
#include "tests/testing/fake_clock.h"

namespace fanout::testing {
namespace {

namespace fs = std::filesystem;
using cache::Entry;
using cache::RocksDbTier;
using cache::RocksDbTierOptions;
using ::testing::HasSubstr;

// A directory removed (with its contents) at the end of the test.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = absl::StrCat(base != nullptr ? base : "/tmp", "/fanout_l3_XXXXXX");
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string Sub(absl::string_view name) const { return absl::StrCat(path_, "/", name); }

 private:
  std::string path_;
};

// A directory and a RocksDB Env over a FaultFs the test controls; Options()
// points a tier at both (DIR/l3).
struct FaultyDisk {
  TempDir dir;
  std::shared_ptr<FaultFs> faults = std::make_shared<FaultFs>();
  std::unique_ptr<rocksdb::Env> env = faults->NewEnv();

  RocksDbTierOptions Options() const {
    RocksDbTierOptions o;
    o.path = dir.Sub("l3");
    o.env = env.get();
    return o;
  }
};

std::unique_ptr<RocksDbTier> OpenOrDie(const RocksDbTierOptions& options) {
  absl::StatusOr<std::unique_ptr<RocksDbTier>> t = RocksDbTier::Open(options);
  EXPECT_OK(t) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

// Keys physically in the DB at `path` (expired or not), read with RocksDB
// itself after the tier has closed it.
int RawKeyCount(const std::string& path) {
  rocksdb::DB* raw = nullptr;
  rocksdb::Options o;
  if (!rocksdb::DB::OpenForReadOnly(o, path, &raw).ok()) return -1;
  std::unique_ptr<rocksdb::DB> db(raw);
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
  int n = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) ++n;
  return n;
}

// --- The contract ----------------------------------------------------------

struct RocksDbEnv {
  TempDir dir;
  std::unique_ptr<cache::Tier> Make() {
    RocksDbTierOptions o;
    o.path = dir.Sub("l3");
    return OpenOrDie(o);
  }
};
INSTANTIATE_TYPED_TEST_SUITE_P(RocksDb, TierContractTest, ::testing::Types<RocksDbEnv>);

// The contract again with every read on the reader pool (no inline reads
// from memory), so that both read paths keep it.
struct RocksDbPoolOnlyEnv {
  TempDir dir;
  std::unique_ptr<cache::Tier> Make() {
    RocksDbTierOptions o;
    o.path = dir.Sub("l3");
    o.inline_cached_reads = false;
    return OpenOrDie(o);
  }
};
INSTANTIATE_TYPED_TEST_SUITE_P(RocksDbPoolOnly, TierContractTest,
                               ::testing::Types<RocksDbPoolOnlyEnv>);

// --- Restarts ----------------------------------------------------------------

TEST(RocksDbTierTest, OpenAfterCloseFindsEveryStoredEntryWithItsTimes) {
  TempDir dir;
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  const Entry e = EntryNow("survives", absl::Seconds(60), 7);
  {
    auto tier = OpenOrDie(o);
    ASSERT_OK(StoreNow(*tier, Ck("ns", "k"), e));
  }
  auto tier = OpenOrDie(o);
  absl::StatusOr<Entry> got = LookupNow(*tier, Ck("ns", "k"));
  ASSERT_OK(got);
  EXPECT_EQ(got->value, "survives");
  EXPECT_EQ(got->version, 7);
  EXPECT_EQ(got->fetched_at, e.fetched_at);
  EXPECT_EQ(got->stale_until, e.stale_until);
  EXPECT_TRUE(fs::exists(fs::path(o.path) / "FANOUT_L3"));
}

TEST(RocksDbTierTest, StoreOfAnEntryAlreadyPastStaleUntilWritesNothing) {
  TempDir dir;
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  auto tier = OpenOrDie(o);
  Entry gone = EntryNow("gone");
  gone.fetched_at -= absl::Hours(1);
  gone.fresh_until = gone.expires_at = gone.stale_until = absl::Now() - absl::Seconds(1);
  ASSERT_OK(StoreNow(*tier, Ck("ns", "gone"), gone));
  EXPECT_EQ(tier->Stats().stores, 0u);
  ASSERT_OK(tier->Flush());
  tier.reset();
  EXPECT_EQ(RawKeyCount(o.path), 0);
}

// --- Reads -------------------------------------------------------------------

TEST(RocksDbTierTest, LookupThatNeedsTheDiskNeverReadsOnTheCallersThread) {
  FaultyDisk disk;
  RocksDbTierOptions o = disk.Options();
  {
    auto tier = OpenOrDie(o);
    for (int i = 0; i < 100; ++i) {
      ASSERT_OK(StoreNow(*tier, Ck("ns", absl::StrCat("k", i)), EntryNow(std::string(100, 'v'))));
    }
    ASSERT_OK(tier->Flush());
  }
  // A fresh process: nothing in the block cache, everything on disk.
  auto tier = OpenOrDie(o);
  disk.faults->RecordReaders(true);
  const int reads_before = disk.faults->table_reads();
  ASSERT_OK(LookupNow(*tier, Ck("ns", "k42")));
  std::vector<absl::StatusOr<Entry>> many = LookupManyNow(*tier, {Ck("ns", "k7"), Ck("ns", "k8")});
  ASSERT_EQ(many.size(), 2u);
  EXPECT_OK(many[0]);
  EXPECT_OK(many[1]);
  disk.faults->RecordReaders(false);
  EXPECT_GT(disk.faults->table_reads(), reads_before) << "the lookups should have read the disk";
  EXPECT_FALSE(disk.faults->ReadOnThread(std::this_thread::get_id()));

  // Now in the block cache: answered from memory, no further disk read.
  const int reads_warm = disk.faults->table_reads();
  ASSERT_OK(LookupNow(*tier, Ck("ns", "k42")));
  EXPECT_EQ(disk.faults->table_reads(), reads_warm);
}

TEST(RocksDbTierTest, QueuedReadIsAnsweredAtItsDeadlineWhileTheDiskHangs) {
  FaultyDisk disk;
  RocksDbTierOptions o = disk.Options();
  o.read_threads = 1;
  {
    auto tier = OpenOrDie(o);
    ASSERT_OK(StoreNow(*tier, Ck("ns", "a"), EntryNow("A")));
    ASSERT_OK(StoreNow(*tier, Ck("ns", "b"), EntryNow("B")));
    ASSERT_OK(tier->Flush());
  }
  auto tier = OpenOrDie(o);
  disk.faults->read_gate.Close();
  // The only reader is now stuck on the disk with `a`...
  absl::Notification a_done;
  absl::StatusOr<Entry> a;
  tier->Lookup(Ck("ns", "a"), absl::Now() + absl::Seconds(60), [&](absl::StatusOr<Entry> e) {
    a = std::move(e);
    a_done.Notify();
  });
  ASSERT_TRUE(disk.faults->read_gate.WaitForHeld(1));
  // ...so `b` waits in the queue, and gets its answer at its deadline anyway.
  absl::Notification b_done;
  absl::StatusOr<Entry> b;
  tier->Lookup(Ck("ns", "b"), absl::Now() + absl::Milliseconds(100), [&](absl::StatusOr<Entry> e) {
    b = std::move(e);
    b_done.Notify();
  });
  ASSERT_TRUE(b_done.WaitForNotificationWithTimeout(kTierCallBound));
  EXPECT_THAT(b, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_FALSE(a_done.HasBeenNotified());
  EXPECT_EQ(tier->Stats().timeouts, 1u);

  disk.faults->read_gate.Open();
  ASSERT_TRUE(a_done.WaitForNotificationWithTimeout(kTierCallBound));
  ASSERT_OK(a);
  EXPECT_EQ(a->value, "A");
}

TEST(RocksDbTierTest, ReadsBeyondTheQueueBoundAreUnavailableAtOnce) {
  FaultyDisk disk;
  RocksDbTierOptions o = disk.Options();
  o.read_threads = 1;
  o.max_pending_reads = 1;
  {
    auto tier = OpenOrDie(o);
    for (const char* k : {"a", "b", "c"}) ASSERT_OK(StoreNow(*tier, Ck("ns", k), EntryNow(k)));
    ASSERT_OK(tier->Flush());
  }
  auto tier = OpenOrDie(o);
  disk.faults->read_gate.Close();
  std::atomic<int> answered{0};
  auto count = [&](absl::StatusOr<Entry>) { answered.fetch_add(1); };
  tier->Lookup(Ck("ns", "a"), absl::Now() + absl::Seconds(60), count);  // on the reader
  ASSERT_TRUE(disk.faults->read_gate.WaitForHeld(1));
  tier->Lookup(Ck("ns", "b"), absl::Now() + absl::Seconds(60), count);  // queued
  absl::StatusOr<Entry> c = absl::InternalError("no answer");
  tier->Lookup(Ck("ns", "c"), absl::Now() + absl::Seconds(60),
               [&](absl::StatusOr<Entry> e) { c = std::move(e); });
  EXPECT_THAT(c, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("read queue full")));
  EXPECT_EQ(answered.load(), 0);
  disk.faults->read_gate.Open();
  EXPECT_TRUE(Eventually([&] { return answered.load() == 2; }));
}

// --- Writes ------------------------------------------------------------------

TEST(RocksDbTierTest, StoreNeverWaitsAndOverflowDropsTheOldestPendingStores) {
  FaultyDisk disk;
  RocksDbTierOptions o = disk.Options();
  o.max_pending_writes = 3;
  o.max_batch = 1;
  auto tier = OpenOrDie(o);

  disk.faults->write_gate.Close();
  std::vector<absl::Status> results(6, absl::InternalError("no answer"));
  std::atomic<int> answered{0};
  auto store = [&](int i) {
    tier->Store(Ck("ns", absl::StrCat("k", i)), EntryNow(absl::StrCat("v", i)),
                [&, i](absl::Status s) {
                  results[i] = s;
                  answered.fetch_add(1);
                });
  };
  store(0);  // taken by the writer, which the disk now holds
  ASSERT_TRUE(disk.faults->write_gate.WaitForHeld(1));
  for (int i = 1; i <= 5; ++i) store(i);  // returns at once although nothing is written
  // Three fit the queue; the two oldest pending (k1, k2) were dropped.
  EXPECT_EQ(answered.load(), 2);
  EXPECT_THAT(results[1], StatusIs(absl::StatusCode::kUnavailable, HasSubstr("queue full")));
  EXPECT_THAT(results[2], StatusIs(absl::StatusCode::kUnavailable, HasSubstr("queue full")));
  EXPECT_EQ(tier->Stats().stores_dropped, 2u);
  EXPECT_EQ(tier->Stats().queue_depth, 4u);  // k0 being written, k3..k5 queued

  disk.faults->write_gate.Open();
  ASSERT_TRUE(Eventually([&] { return answered.load() == 6; }));
  for (int i : {0, 3, 4, 5}) {
    EXPECT_OK(results[i]) << i;
    EXPECT_OK(LookupNow(*tier, Ck("ns", absl::StrCat("k", i)))) << i;
  }
  for (int i : {1, 2}) {
    EXPECT_THAT(LookupNow(*tier, Ck("ns", absl::StrCat("k", i))),
                StatusIs(absl::StatusCode::kNotFound));
  }
  EXPECT_EQ(tier->Stats().queue_depth, 0u);
}

TEST(RocksDbTierTest, EraseQueuedBehindAStoreOfTheSameKeyIsAppliedAfterIt) {
  FaultyDisk disk;
  RocksDbTierOptions o = disk.Options();
  auto tier = OpenOrDie(o);
  disk.faults->write_gate.Close();
  tier->Store(Ck("ns", "held"), EntryNow("x"), [](absl::Status) {});
  ASSERT_TRUE(disk.faults->write_gate.WaitForHeld(1));
  tier->Store(Ck("ns", "k"), EntryNow("v"), [](absl::Status) {});
  absl::Notification erased;
  absl::StatusOr<uint64_t> n;
  tier->Erase({Ck("ns", "k")}, "", cache::EraseMode::kRemove, absl::Now() + absl::Seconds(60),
              [&](absl::StatusOr<uint64_t> r) {
                n = r;
                erased.Notify();
              });
  disk.faults->write_gate.Open();
  ASSERT_TRUE(erased.WaitForNotificationWithTimeout(kTierCallBound));
  ASSERT_OK(n);
  EXPECT_EQ(*n, 1u);
  EXPECT_THAT(LookupNow(*tier, Ck("ns", "k")), StatusIs(absl::StatusCode::kNotFound));
}

// An invalidation erases L1 at once and queues L3's erase behind the writer:
// a read in between must not find the old value fresh in L3 (it would put
// it back in L1 for a whole ttl).
TEST(RocksDbTierTest, LookupsApplyAnEraseStillQueuedBehindTheWriter) {
  FaultyDisk disk;
  RocksDbTierOptions o = disk.Options();
  auto tier = OpenOrDie(o);
  ASSERT_OK(StoreNow(*tier, Ck("ns", "superseded"), EntryNow("old")));
  ASSERT_OK(StoreNow(*tier, Ck("ns", "removed"), EntryNow("old")));
  ASSERT_OK(StoreNow(*tier, Ck("ns", "p/under"), EntryNow("old")));
  ASSERT_OK(StoreNow(*tier, Ck("ns", "kept"), EntryNow("old")));
  disk.faults->write_gate.Close();
  tier->Store(Ck("ns", "held"), EntryNow("x"), [](absl::Status) {});
  ASSERT_TRUE(disk.faults->write_gate.WaitForHeld(1));
  int answered = 0;
  auto count = [&answered](absl::StatusOr<uint64_t>) { ++answered; };
  const absl::Time later = absl::Now() + absl::Seconds(60);
  tier->Erase({Ck("ns", "superseded")}, "", cache::EraseMode::kSupersede, later, count);
  tier->Erase({Ck("ns", "removed")}, "", cache::EraseMode::kRemove, later, count);
  tier->Erase({}, Ck("ns", "p/"), cache::EraseMode::kSupersede, later, count);

  absl::StatusOr<Entry> superseded = LookupNow(*tier, Ck("ns", "superseded"));
  ASSERT_OK(superseded);
  EXPECT_EQ(superseded->value, "old");
  EXPECT_LE(superseded->fresh_until, absl::Now()) << "served fresh while its erase is queued";
  EXPECT_THAT(LookupNow(*tier, Ck("ns", "removed")), StatusIs(absl::StatusCode::kNotFound));
  absl::StatusOr<Entry> under = LookupNow(*tier, Ck("ns", "p/under"));
  ASSERT_OK(under);
  EXPECT_LE(under->fresh_until, absl::Now());
  absl::StatusOr<Entry> kept = LookupNow(*tier, Ck("ns", "kept"));
  ASSERT_OK(kept);
  EXPECT_GT(kept->fresh_until, absl::Now());

  disk.faults->write_gate.Open();
  ASSERT_OK(tier->Flush());
  EXPECT_EQ(answered, 3);
  // Applied: a value fetched after the erase is fresh again.
  ASSERT_OK(StoreNow(*tier, Ck("ns", "superseded"), EntryNow("new")));
  absl::StatusOr<Entry> again = LookupNow(*tier, Ck("ns", "superseded"));
  ASSERT_OK(again);
  EXPECT_EQ(again->value, "new");
  EXPECT_GT(again->fresh_until, absl::Now());
}

TEST(RocksDbTierTest, EraseStillQueuedAtItsDeadlineAnswersThenAndIsAppliedLater) {
  FaultyDisk disk;
  RocksDbTierOptions o = disk.Options();
  auto tier = OpenOrDie(o);
  ASSERT_OK(StoreNow(*tier, Ck("ns", "k"), EntryNow("v")));
  disk.faults->write_gate.Close();
  tier->Store(Ck("ns", "held"), EntryNow("x"), [](absl::Status) {});
  ASSERT_TRUE(disk.faults->write_gate.WaitForHeld(1));
  absl::StatusOr<uint64_t> n =
      EraseNow(*tier, {Ck("ns", "k")}, "", cache::EraseMode::kRemove, absl::Milliseconds(50));
  EXPECT_THAT(n, StatusIs(absl::StatusCode::kDeadlineExceeded));
  disk.faults->write_gate.Open();
  EXPECT_TRUE(Eventually([&] {
    return absl::IsNotFound(LookupNow(*tier, Ck("ns", "k")).status());
  })) << "an erase that ran past its deadline must still be applied";
}

TEST(RocksDbTierTest, DestructionAppliesTheQueuedStores) {
  TempDir dir;
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  {
    auto tier = OpenOrDie(o);
    for (int i = 0; i < 500; ++i) {
      tier->Store(Ck("ns", absl::StrCat("k", i)), EntryNow("v"), [](absl::Status) {});
    }
  }
  auto tier = OpenOrDie(o);
  for (int i = 0; i < 500; i += 50) EXPECT_OK(LookupNow(*tier, Ck("ns", absl::StrCat("k", i))));
}

// --- Housekeeping --------------------------------------------------------------

TEST(RocksDbTierTest, CompactionDropsEntriesPastStaleUntilFromTheDisk) {
  TempDir dir;
  FakeClock clock(absl::FromUnixSeconds(2'000'000'000));
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  o.clock = &clock;
  auto entry = [&](absl::Duration stale_for) {
    Entry e;
    e.value = std::string(64, 'v');
    e.fetched_at = clock.Now();
    e.fresh_until = e.expires_at = clock.Now() + stale_for / 2;
    e.stale_until = clock.Now() + stale_for;
    return e;
  };
  auto tier = OpenOrDie(o);
  for (int i = 0; i < 20; ++i) {
    ASSERT_OK(StoreNow(*tier, Ck("ns", absl::StrCat("short", i)), entry(absl::Minutes(1))));
    ASSERT_OK(StoreNow(*tier, Ck("ns", absl::StrCat("long", i)), entry(absl::Hours(10))));
  }
  ASSERT_OK(tier->Flush());
  ASSERT_OK(tier->CompactAll());
  tier.reset();
  EXPECT_EQ(RawKeyCount(o.path), 40) << "nothing has expired yet";

  tier = OpenOrDie(o);
  clock.Advance(absl::Minutes(2));
  EXPECT_THAT(LookupNow(*tier, Ck("ns", "short3")), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(tier->CompactAll());
  tier.reset();
  EXPECT_EQ(RawKeyCount(o.path), 20) << "the filter should have dropped the 20 expired entries";
}

// Values of `bytes` whose stale window ends `stale_for` after the clock.
Entry Sized(Clock& clock, size_t bytes, absl::Duration stale_for, int salt) {
  Entry e;
  std::string v(bytes, 'v');
  // Incompressible enough that the files grow with what is stored.
  uint64_t x = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(salt + 1);
  for (char& c : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  e.value = std::move(v);
  e.fetched_at = clock.Now();
  e.fresh_until = e.expires_at = clock.Now() + stale_for / 2;
  e.stale_until = clock.Now() + stale_for;
  return e;
}

TEST(RocksDbTierTest, NearTheCapStopsWritingAndResumesOnceExpiredFilesAreSwept) {
  TempDir dir;
  FakeClock clock(absl::FromUnixSeconds(2'000'000'000));
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  o.clock = &clock;
  o.max_bytes = 4 << 20;
  o.full_fraction = 0.5;
  o.resume_fraction = 0.25;
  o.retry_interval = absl::Milliseconds(20);
  auto tier = OpenOrDie(o);
  // Short-lived entries until the tier stops taking them (bounded: 8 MiB).
  int stored = 0;
  for (; stored < 1024 && tier->Stats().available; ++stored) {
    (void)StoreNow(*tier, Ck("ns", absl::StrCat("k", stored)),
                   Sized(clock, 8 << 10, absl::Minutes(1), stored));
  }
  ASSERT_FALSE(tier->Stats().available) << "never got near the cap";
  EXPECT_THAT(tier->State().read_only_reason, HasSubstr("near the disk cap"));
  EXPECT_THAT(StoreNow(*tier, Ck("ns", "more"), Sized(clock, 100, absl::Minutes(1), 0)),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_GE(tier->Stats().stores_dropped, 1u);
  EXPECT_OK(LookupNow(*tier, Ck("ns", "k0"))) << "reads go on while not writing";
  EXPECT_LT(tier->State().sst_bytes, o.max_bytes);

  // Once they expire, the sweep frees their files and writes resume.
  clock.Advance(absl::Minutes(2));
  ASSERT_TRUE(Eventually([&] { return tier->Stats().available; }))
      << tier->State().read_only_reason << ", " << tier->State().sst_bytes << " SST bytes";
  EXPECT_LT(tier->State().sst_bytes, o.max_bytes / 4);
  EXPECT_OK(StoreNow(*tier, Ck("ns", "after"), Sized(clock, 100, absl::Minutes(1), 0)));
  EXPECT_OK(LookupNow(*tier, Ck("ns", "after")));
}

TEST(RocksDbTierTest, AtTheRocksDbCapWritesFailWithSpaceLimitAndTheTierTurnsReadOnly) {
  // With the tier's own stop disabled, what RocksDB's SstFileManager does:
  // once a flush leaves the SST files at or over the cap it sets a hard
  // background error, and writes fail with it.
  TempDir dir;
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  o.max_bytes = 1 << 20;
  o.full_fraction = 1000;  // never
  o.resume_fraction = 999;
  o.retry_interval = absl::Hours(1);
  auto tier = OpenOrDie(o);
  FakeClock clock(absl::Now());
  int stored = 0;
  for (; stored < 1024 && tier->Stats().available; ++stored) {
    (void)StoreNow(*tier, Ck("ns", absl::StrCat("k", stored)),
                   Sized(clock, 8 << 10, absl::Hours(1), stored));
  }
  ASSERT_FALSE(tier->Stats().available) << "RocksDB never refused a write";
  EXPECT_THAT(tier->State().read_only_reason, HasSubstr("Max allowed space was reached"));
  EXPECT_GE(tier->State().sst_bytes, o.max_bytes);
  EXPECT_GE(tier->Stats().errors, 1u);
  EXPECT_OK(LookupNow(*tier, Ck("ns", "k0")));
}

// --- Erase -------------------------------------------------------------------

TEST(RocksDbTierTest, SupersedeIsKeptAcrossARestartAndNeverFreshAgain) {
  TempDir dir;
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  {
    auto tier = OpenOrDie(o);
    ASSERT_OK(StoreNow(*tier, Ck("ns", "flags/a"), EntryNow("a")));
    ASSERT_OK(StoreNow(*tier, Ck("ns", "flags/b"), EntryNow("b")));
    absl::StatusOr<uint64_t> n =
        EraseNow(*tier, {Ck("ns", "flags/a")}, Ck("ns", "flags/"), cache::EraseMode::kSupersede);
    ASSERT_OK(n);
    EXPECT_EQ(*n, 2u) << "a key also matched by the prefix counts once";
  }
  auto tier = OpenOrDie(o);
  for (const char* k : {"flags/a", "flags/b"}) {
    absl::StatusOr<Entry> got = LookupNow(*tier, Ck("ns", k));
    ASSERT_OK(got) << k;
    EXPECT_EQ(cache::FreshnessAt(*got, absl::Now()), cache::Freshness::kStale) << k;
  }
}

// --- Bad directories and disks -------------------------------------------------

void StoreSome(const RocksDbTierOptions& o, int n) {
  auto tier = OpenOrDie(o);
  for (int i = 0; i < n; ++i) {
    ASSERT_OK(StoreNow(*tier, Ck("ns", absl::StrCat("k", i)), EntryNow("v")));
  }
  ASSERT_OK(tier->Flush());
}

void Overwrite(const fs::path& file, absl::string_view bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << bytes;
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void ExpectMovedAsideAndFresh(RocksDbTier& tier, const std::string& path) {
  const cache::RocksDbTierState state = tier.State();
  EXPECT_THAT(state.moved_aside, HasSubstr(".corrupt-"));
  EXPECT_TRUE(fs::exists(state.moved_aside)) << state.moved_aside;
  EXPECT_FALSE(state.read_only);
  EXPECT_THAT(LookupNow(tier, Ck("ns", "k0")), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(StoreNow(tier, Ck("ns", "new"), EntryNow("works")));
  EXPECT_OK(LookupNow(tier, Ck("ns", "new")));
  EXPECT_TRUE(fs::exists(fs::path(path) / "FANOUT_L3"));
}

TEST(RocksDbTierTest, GarbageCurrentFileIsMovedAsideAndAFreshDbOpened) {
  TempDir dir;
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  StoreSome(o, 10);
  Overwrite(fs::path(o.path) / "CURRENT", "garbage, not a manifest name");
  auto tier = OpenOrDie(o);
  ASSERT_NE(tier, nullptr);
  ExpectMovedAsideAndFresh(*tier, o.path);
  EXPECT_TRUE(fs::exists(fs::path(tier->State().moved_aside) / "CURRENT"));
}

TEST(RocksDbTierTest, GarbageManifestIsMovedAsideAndAFreshDbOpened) {
  TempDir dir;
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  StoreSome(o, 10);
  int manifests = 0;
  for (const auto& e : fs::directory_iterator(o.path)) {
    if (e.path().filename().string().rfind("MANIFEST-", 0) == 0) {
      Overwrite(e.path(), std::string(4096, '\x5a'));
      ++manifests;
    }
  }
  ASSERT_GT(manifests, 0);
  auto tier = OpenOrDie(o);
  ASSERT_NE(tier, nullptr);
  ExpectMovedAsideAndFresh(*tier, o.path);
}

TEST(RocksDbTierTest, MissingTableFileIsMovedAsideAndAFreshDbOpened) {
  TempDir dir;
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  StoreSome(o, 10);
  int removed = 0;
  for (const auto& e : fs::directory_iterator(o.path)) {
    if (e.path().extension() == ".sst") removed += fs::remove(e.path()) ? 1 : 0;
  }
  ASSERT_GT(removed, 0);
  auto tier = OpenOrDie(o);
  ASSERT_NE(tier, nullptr);
  ExpectMovedAsideAndFresh(*tier, o.path);
}

TEST(RocksDbTierTest, GarbageFilesInAnL3DirectoryAreMovedAsideAndAFreshDbOpened) {
  TempDir dir;
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  StoreSome(o, 10);
  for (const auto& e : fs::directory_iterator(o.path)) {
    if (e.path().filename() != "FANOUT_L3") Overwrite(e.path(), "\x01garbage");
  }
  auto tier = OpenOrDie(o);
  ASSERT_NE(tier, nullptr);
  ExpectMovedAsideAndFresh(*tier, o.path);
}

TEST(RocksDbTierTest, DirectoryWithoutTheMarkerIsLeftAloneAndOpenFails) {
  // Most likely a mistyped path: renaming it could move anything.
  TempDir dir;
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  fs::create_directories(o.path);
  Overwrite(fs::path(o.path) / "notes.txt", "someone else's");
  EXPECT_THAT(RocksDbTier::Open(o),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("not an L3 directory")));
  EXPECT_TRUE(fs::exists(fs::path(o.path) / "notes.txt"));
  EXPECT_FALSE(fs::exists(fs::path(o.path) / "FANOUT_L3"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(RocksDbTierTest, PathThatIsAFileIsLeftAloneAndOpenFails) {
  TempDir dir;
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  Overwrite(o.path, "a file where the directory should be");
  EXPECT_THAT(RocksDbTier::Open(o),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("not a directory")));
  EXPECT_EQ(ReadFileBytes(o.path), "a file where the directory should be");
}

TEST(RocksDbTierTest, EmptyDirectoryAndLostAndFoundAreTakenOver) {
  TempDir dir;
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  fs::create_directories(fs::path(o.path) / "lost+found");
  auto tier = OpenOrDie(o);
  ASSERT_NE(tier, nullptr);
  EXPECT_TRUE(tier->State().moved_aside.empty());
  EXPECT_OK(StoreNow(*tier, Ck("ns", "k"), EntryNow("v")));
}

TEST(RocksDbTierTest, UnwritableDirectoryIsOpenedReadOnlyAndStillAnswers) {
  FaultyDisk disk;
  RocksDbTierOptions o = disk.Options();
  StoreSome(o, 10);
  const std::vector<std::string> before = [&] {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(o.path)) names.push_back(e.path().string());
    return names;
  }();

  disk.faults->read_only = true;
  auto tier = OpenOrDie(o);
  ASSERT_NE(tier, nullptr);
  const cache::RocksDbTierState state = tier->State();
  EXPECT_TRUE(state.opened_read_only);
  EXPECT_TRUE(state.moved_aside.empty());
  EXPECT_FALSE(tier->Stats().available);
  absl::StatusOr<Entry> got = LookupNow(*tier, Ck("ns", "k3"));
  ASSERT_OK(got);
  EXPECT_EQ(got->value, "v");
  EXPECT_THAT(StoreNow(*tier, Ck("ns", "new"), EntryNow("x")),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(tier->Stats().stores_dropped, 1u);

  // An erase cannot be written, but this process never serves the value
  // as fresh again.
  ASSERT_OK(EraseNow(*tier, {Ck("ns", "k3")}, "", cache::EraseMode::kSupersede));
  got = LookupNow(*tier, Ck("ns", "k3"));
  ASSERT_OK(got);
  EXPECT_EQ(cache::FreshnessAt(*got, absl::Now()), cache::Freshness::kStale);
  ASSERT_OK(EraseNow(*tier, {}, Ck("ns", "k4"), cache::EraseMode::kRemove));
  EXPECT_THAT(LookupNow(*tier, Ck("ns", "k4")), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(tier->State().remembered_erases, 2u);
  tier.reset();

  std::vector<std::string> after;
  for (const auto& e : fs::directory_iterator(o.path)) after.push_back(e.path().string());
  EXPECT_EQ(after.size(), before.size()) << "nothing may be moved or created";
}

TEST(RocksDbTierTest, UnwritableEmptyDirectoryFailsOpenWithUnavailable) {
  FaultyDisk disk;
  RocksDbTierOptions o = disk.Options();
  fs::create_directories(o.path);
  disk.faults->read_only = true;
  EXPECT_THAT(RocksDbTier::Open(o), StatusIs(absl::StatusCode::kUnavailable));
}

TEST(RocksDbTierTest, DirectoryInUseByAnotherInstanceIsOpenedReadOnlyAndLeftInPlace) {
  TempDir dir;
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  auto first = OpenOrDie(o);
  ASSERT_OK(StoreNow(*first, Ck("ns", "k"), EntryNow("v")));
  auto second = OpenOrDie(o);
  ASSERT_NE(second, nullptr);
  EXPECT_TRUE(second->State().opened_read_only);
  EXPECT_TRUE(second->State().moved_aside.empty());
  EXPECT_OK(LookupNow(*second, Ck("ns", "k")));
  EXPECT_OK(StoreNow(*first, Ck("ns", "k2"), EntryNow("still writable")));
}

TEST(RocksDbTierTest, FullDiskTurnsReadOnlyOnceAndResumesWhenSpaceReturns) {
  FaultyDisk disk;
  RocksDbTierOptions o = disk.Options();
  o.retry_interval = absl::Milliseconds(20);
  auto tier = OpenOrDie(o);
  ASSERT_OK(StoreNow(*tier, Ck("ns", "before"), EntryNow("kept")));

  disk.faults->no_space = true;
  EXPECT_THAT(StoreNow(*tier, Ck("ns", "k"), EntryNow("v")),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("space")));
  EXPECT_FALSE(tier->Stats().available);
  EXPECT_THAT(tier->State().read_only_reason, HasSubstr("space"));
  EXPECT_THAT(StoreNow(*tier, Ck("ns", "k2"), EntryNow("v")),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("read-only")));
  EXPECT_EQ(tier->Stats().stores_dropped, 1u);
  absl::StatusOr<Entry> got = LookupNow(*tier, Ck("ns", "before"));
  ASSERT_OK(got);
  EXPECT_EQ(got->value, "kept");
  // Invalidated while nothing can be written: remembered, then written.
  ASSERT_OK(EraseNow(*tier, {Ck("ns", "before")}, "", cache::EraseMode::kRemove));
  EXPECT_THAT(LookupNow(*tier, Ck("ns", "before")), StatusIs(absl::StatusCode::kNotFound));

  disk.faults->no_space = false;
  ASSERT_TRUE(Eventually([&] { return tier->Stats().available; }))
      << tier->State().read_only_reason;
  EXPECT_EQ(tier->State().remembered_erases, 0u);
  ASSERT_OK(StoreNow(*tier, Ck("ns", "k3"), EntryNow("written")));
  tier.reset();
  tier = OpenOrDie(o);
  EXPECT_OK(LookupNow(*tier, Ck("ns", "k3")));
  EXPECT_THAT(LookupNow(*tier, Ck("ns", "before")), StatusIs(absl::StatusCode::kNotFound))
      << "the erase remembered while read-only must have been written";
}

TEST(RocksDbTierTest, WriteFailureClearsWithoutWaitingForRocksDbsBackgroundWork) {
  // After a write failure the tier goes writable again as soon as RocksDB
  // takes writes, even while a background job of RocksDB's never ends.
  // Such jobs exist: on a nearly full disk a compaction that finds no room
  // is cancelled and retried every second for as long as the disk stays
  // full. And RocksDB 7.8 leaves a DB marked stopped once it has recovered
  // from a background error by itself, so that DB::Resume() then waits for
  // every background job before anything else. A tier that resumed that
  // way stayed read-only for good, and its destructor waited for it.
  TempDir dir;
  auto faults = std::make_shared<FaultFs>();
  std::unique_ptr<rocksdb::Env> env = faults->NewEnv();
  FakeClock clock(absl::Now());
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  o.env = env.get();
  o.retry_interval = absl::Milliseconds(200);
  auto tier = OpenOrDie(o);
  // Three overlapping level-0 files: the next flush makes four and starts
  // a compaction that writes a new file.
  for (int file = 0; file < 3; ++file) {
    for (const char* key : {"a", "z"}) {
      ASSERT_OK(StoreNow(*tier, Ck("ns", key), Sized(clock, 4 << 10, absl::Hours(1), file)));
    }
    ASSERT_OK(tier->Flush());
  }
  ASSERT_OK(StoreNow(*tier, Ck("ns", "in-memtable"), EntryNow("v")));
  // The next table file (RocksDB's own recovery flushes the memtable) is
  // written; the one after (that compaction's) is held.
  faults->HoldTableFilesAfter(1);
  faults->sst_gate.Close();

  faults->wal_no_space = true;
  EXPECT_THAT(StoreNow(*tier, Ck("ns", "while-full"), EntryNow("v")),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("space")));
  faults->wal_no_space = false;
  EXPECT_FALSE(tier->Stats().available);
  ASSERT_TRUE(faults->sst_gate.WaitForHeld(1)) << "RocksDB never started the compaction";

  EXPECT_TRUE(Eventually([&] { return tier->Stats().available; }, absl::Seconds(10)))
      << "still read-only while a compaction runs: " << tier->State().read_only_reason;
  EXPECT_OK(StoreNow(*tier, Ck("ns", "after"), EntryNow("written")));
  EXPECT_OK(LookupNow(*tier, Ck("ns", "in-memtable")));
  faults->sst_gate.Open();
  tier.reset();
  tier = OpenOrDie(o);
  EXPECT_OK(LookupNow(*tier, Ck("ns", "after")));
}

TEST(RocksDbTierTest, WalWriteErrorKeepsTheTierReadOnlyUntilItIsReopened) {
  // An I/O error from a WAL write is fatal to RocksDB (no Resume() clears
  // it): the tier keeps answering reads, says why it stopped writing, and
  // writes again after a restart.
  FaultyDisk disk;
  RocksDbTierOptions o = disk.Options();
  o.retry_interval = absl::Milliseconds(20);
  auto tier = OpenOrDie(o);
  ASSERT_OK(StoreNow(*tier, Ck("ns", "before"), EntryNow("kept")));
  disk.faults->wal_io_error = true;
  EXPECT_THAT(StoreNow(*tier, Ck("ns", "k"), EntryNow("v")),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("input/output error")));
  disk.faults->wal_io_error = false;
  ASSERT_TRUE(Eventually([&] {
    return absl::StrContains(tier->State().read_only_reason, "until fanoutd restarts");
  })) << tier->State().read_only_reason;
  EXPECT_FALSE(tier->Stats().available);
  EXPECT_THAT(StoreNow(*tier, Ck("ns", "k2"), EntryNow("v")),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("read-only")));
  EXPECT_OK(LookupNow(*tier, Ck("ns", "before")));
  tier.reset();
  tier = OpenOrDie(o);
  EXPECT_TRUE(tier->Stats().available);
  EXPECT_OK(StoreNow(*tier, Ck("ns", "after"), EntryNow("written")));
  EXPECT_OK(LookupNow(*tier, Ck("ns", "before")));
}

TEST(RocksDbTierTest, FullDiskDropsRocksDbsLogLinesInsteadOfAborting) {
  // RocksDB's own info logger asserts on the line after a write of its LOG
  // failed, and Debian's RocksDB keeps assertions: a full disk killed the
  // process. The tier's logger drops (and counts) what it cannot write.
  FaultyDisk disk;
  RocksDbTierOptions o = disk.Options();
  o.retry_interval = absl::Milliseconds(20);
  auto tier = OpenOrDie(o);
  ASSERT_OK(StoreNow(*tier, Ck("ns", "before"), EntryNow("kept")));
  ASSERT_THAT(ReadFileBytes(o.path + "/LOG"), HasSubstr("RocksDB version"));
  EXPECT_EQ(tier->State().log_lines_dropped, 0u);

  disk.faults->no_space = true;
  EXPECT_THAT(StoreNow(*tier, Ck("ns", "k"), EntryNow("v")),
              StatusIs(absl::StatusCode::kUnavailable));
  // RocksDB logs the error, and again while it retries: lines after a
  // failed one.
  ASSERT_TRUE(Eventually([&] { return tier->State().log_lines_dropped >= 2; }));
  EXPECT_OK(LookupNow(*tier, Ck("ns", "before")));
  disk.faults->no_space = false;
  ASSERT_TRUE(Eventually([&] { return tier->Stats().available; }))
      << tier->State().read_only_reason;
  const uint64_t dropped = tier->State().log_lines_dropped;
  ASSERT_OK(StoreNow(*tier, Ck("ns", "after"), EntryNow("written")));
  ASSERT_OK(tier->Flush());
  EXPECT_EQ(tier->State().log_lines_dropped, dropped) << "the LOG is written again";
  EXPECT_THAT(ReadFileBytes(o.path + "/LOG"), HasSubstr("Manual flush"));
}

// --- Iteration ---------------------------------------------------------------

TEST(RocksDbTierTest, ForEachVisitsLiveEntriesInKeyOrderAndStopsWhenAsked) {
  TempDir dir;
  FakeClock clock(absl::FromUnixSeconds(2'000'000'000));
  RocksDbTierOptions o;
  o.path = dir.Sub("l3");
  o.clock = &clock;
  auto tier = OpenOrDie(o);
  for (const char* k : {"c", "a", "b"}) {
    ASSERT_OK(StoreNow(*tier, Ck("ns", k), Sized(clock, 10, absl::Hours(1), 1)));
  }
  ASSERT_OK(StoreNow(*tier, Ck("ns", "expiring"), Sized(clock, 10, absl::Minutes(1), 2)));
  clock.Advance(absl::Minutes(2));
  std::vector<std::string> seen;
  ASSERT_OK(tier->ForEach(
      [&](absl::string_view key, const Entry&) {
        seen.emplace_back(key);
        return true;
      },
      absl::Now() + absl::Seconds(10)));
  EXPECT_EQ(seen, (std::vector<std::string>{Ck("ns", "a"), Ck("ns", "b"), Ck("ns", "c")}));
  seen.clear();
  ASSERT_OK(tier->ForEach(
      [&](absl::string_view key, const Entry&) {
        seen.emplace_back(key);
        return false;
      },
      absl::Now() + absl::Seconds(10)));
  EXPECT_EQ(seen.size(), 1u);
}

TEST(RocksDbTierTest, OpenRejectsBadOptionsNamingThem) {
  RocksDbTierOptions o;
  EXPECT_THAT(RocksDbTier::Open(o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.l3.path")));
  o.path = "/tmp/never-created";
  o.max_bytes = 1000;
  EXPECT_THAT(RocksDbTier::Open(o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cache.l3.max_bytes")));
}

}  // namespace
}  // namespace fanout::testing
