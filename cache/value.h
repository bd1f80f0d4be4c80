// An immutable value shared by every holder: the L1 entry, a fill's waiters,
// a stale fallback and the answer being built. Copies share one buffer, so a
// hot 1 MiB key read by a thousand waiting callers is held once, not a
// thousand times.
#ifndef FANOUT_CACHE_VALUE_H_
#define FANOUT_CACHE_VALUE_H_

#include <cstddef>
#include <memory>
#include <ostream>
#include <string>

#include "absl/strings/string_view.h"

namespace fanout::cache {

// Thread-safe to copy and read from many threads: the bytes never change.
class SharedValue {
 public:
  SharedValue() = default;
  // Takes the bytes over (implicit, so tests and origins can assign strings).
  SharedValue(std::string bytes)  // NOLINT(google-explicit-constructor)
      : rep_(std::make_shared<const std::string>(std::move(bytes))) {}
  SharedValue(const char* bytes) : SharedValue(std::string(bytes)) {}  // NOLINT

  absl::string_view view() const { return rep_ ? absl::string_view(*rep_) : absl::string_view(); }
  size_t size() const { return rep_ ? rep_->size() : 0; }
  bool empty() const { return size() == 0; }
  // A copy of the bytes, for APIs that must own them (protobuf fields).
  std::string ToString() const { return std::string(view()); }

  friend bool operator==(const SharedValue& a, absl::string_view b) { return a.view() == b; }
  friend bool operator==(const SharedValue& a, const char* b) { return a.view() == b; }
  friend bool operator==(const SharedValue& a, const std::string& b) { return a.view() == b; }
  friend bool operator==(const SharedValue& a, const SharedValue& b) {
    return a.view() == b.view();
  }
  friend std::ostream& operator<<(std::ostream& os, const SharedValue& v) { return os << v.view(); }

 private:
  std::shared_ptr<const std::string> rep_;
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_VALUE_H_
