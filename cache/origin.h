// The source of truth behind the cache tiers.
#ifndef FANOUT_CACHE_ORIGIN_H_
#define FANOUT_CACHE_ORIGIN_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fanout::cache {

struct OriginValue {
  std::string value;
  int64_t version = 0;
  // How long the origin says the value may be cached; zero = the cache's default.
  absl::Duration ttl = absl::ZeroDuration();
};

// Fetch returns at once and calls `done` exactly once, on any thread,
// possibly inline. Status meanings:
//   NotFound          the origin has no such key
//   Unavailable       the origin could not answer (down, refused, overloaded)
//   DeadlineExceeded  no answer before `deadline`
//   InvalidArgument   the key cannot exist at this origin (e.g. a bad path)
// Thread-safe.
class Origin {
 public:
  using FetchDone = absl::AnyInvocable<void(absl::StatusOr<OriginValue>) &&>;

  virtual ~Origin() = default;
  Origin() = default;
  Origin(const Origin&) = delete;
  Origin& operator=(const Origin&) = delete;

  virtual void Fetch(absl::string_view ns, absl::string_view key, absl::Time deadline,
                     FetchDone done) = 0;
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_ORIGIN_H_
