// The child of rocksdb_tier_crash_test: stores entries into the survival
// tier as fast as its queue takes them and appends the key of every store
// the tier acknowledged to a file outside the DB, until it is killed.
//
//   rocksdb_tier_crash_child DIR ACKS FIRST
//
// Keys are "k%010d" from FIRST up; the value of key k is CrashValue(k).
// Each acknowledgement is one write(2) of the key and a newline, in the OS
// once it returns, so a kill -9 of this process cannot lose it.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "cache/tiers/rocksdb/rocksdb_tier.h"
#include "tests/cache/tiers/rocksdb/rocksdb_crash_value.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s DIR ACKS FIRST\n", argv[0]);
    return 2;
  }
  int64_t first = 0;
  if (!absl::SimpleAtoi(argv[3], &first)) return 2;
  const int acks = ::open(argv[2], O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (acks < 0) return 3;

  fanout::cache::RocksDbTierOptions options;
  options.path = argv[1];
  auto tier = fanout::cache::RocksDbTier::Open(options);
  if (!tier.ok()) {
    std::fprintf(stderr, "open: %s\n", std::string(tier.status().message()).c_str());
    return 4;
  }
  std::fprintf(stderr, "opened\n");

  // Never outlives the test: gone a minute after it started or as soon as
  // its parent is.
  const pid_t parent = ::getppid();
  const absl::Time give_up = absl::Now() + absl::Minutes(1);
  std::atomic<int> outstanding{0};
  for (int64_t i = first;; ++i) {
    if (i % 1024 == 0 && (::getppid() != parent || absl::Now() > give_up)) std::_Exit(5);
    // Keep the queue short of its bound: a dropped store is not an answer
    // this test is about.
    while (outstanding.load() > 2000) absl::SleepFor(absl::Microseconds(50));
    const std::string key = fanout::testing::CrashKey(i);
    fanout::cache::Entry e;
    const absl::Time now = absl::Now();
    e.value = fanout::testing::CrashValue(i);
    e.version = i;
    e.fetched_at = now;
    e.fresh_until = now + absl::Hours(1);
    e.expires_at = now + absl::Hours(2);
    e.stale_until = now + absl::Hours(24);
    outstanding.fetch_add(1);
    (*tier)->Store(key, e, [acks, i, &outstanding](absl::Status s) {
      if (s.ok()) {
        const std::string line = absl::StrFormat("%010d\n", i);
        if (::write(acks, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
          std::abort();
        }
      }
      outstanding.fetch_sub(1);
    });
  }
}
