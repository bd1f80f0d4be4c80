// The keys and values rocksdb_tier_crash_test's child stores, shared by both.
#ifndef FANOUT_TESTS_CACHE_TIERS_ROCKSDB_CRASH_VALUE_H_
#define FANOUT_TESTS_CACHE_TIERS_ROCKSDB_CRASH_VALUE_H_

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache/entry.h"

namespace fanout::testing {

inline std::string CrashKey(int64_t i) {
  return cache::CompositeKey("crash", absl::StrFormat("k%010d", i));
}

// 20 to 1000 bytes that name their key, so a value under the wrong key or
// cut short is seen.
inline std::string CrashValue(int64_t i) {
  const std::string unit = absl::StrCat("value-of-", i, ";");
  std::string v;
  const size_t size = 20 + static_cast<size_t>((i * 7919) % 981);
  while (v.size() < size) v += unit;
  v.resize(size);
  return v;
}

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_CACHE_TIERS_ROCKSDB_CRASH_VALUE_H_
