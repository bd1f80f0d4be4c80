#include "common/trace_context.h"

namespace fanout {
namespace {

bool IsLowerHex(absl::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool AllZeros(absl::string_view s) { return s.find_first_not_of('0') == absl::string_view::npos; }

}  // namespace

bool IsValidTraceparent(absl::string_view value) {
  // 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
  constexpr size_t kVersion00Size = 55;
  if (value.size() < kVersion00Size || value.size() > kMaxTraceparentBytes) return false;
  if (value[2] != '-' || value[35] != '-' || value[52] != '-') return false;
  const absl::string_view version = value.substr(0, 2);
  const absl::string_view trace_id = value.substr(3, 32);
  const absl::string_view parent_id = value.substr(36, 16);
  const absl::string_view flags = value.substr(53, 2);
  if (!IsLowerHex(version) || !IsLowerHex(trace_id) || !IsLowerHex(parent_id) ||
      !IsLowerHex(flags)) {
    return false;
  }
  if (version == "ff" || AllZeros(trace_id) || AllZeros(parent_id)) return false;
  if (value.size() == kVersion00Size) return true;
  // Only a later version may carry more, after a dash, in printable ASCII.
  if (version == "00" || value[kVersion00Size] != '-') return false;
  for (char c : value.substr(kVersion00Size)) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

}  // namespace fanout
