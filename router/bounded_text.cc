#include "router/bounded_text.h"

#include <algorithm>
#include <cstdint>

namespace fanout::router {
namespace {

constexpr absl::string_view kEllipsis = "\xE2\x80\xA6";  // U+2026

// Length of the well-formed UTF-8 sequence at the start of `s` (RFC 3629:
// no overlong forms, no surrogates, nothing above U+10FFFF); 0 if none.
size_t SequenceLength(absl::string_view s) {
  const auto byte = [&s](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t b0 = byte(0);
  if (b0 < 0x80) return 1;
  size_t n;
  uint8_t lo = 0x80, hi = 0xBF;  // range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (s.size() < n) return 0;
  if (byte(1) < lo || byte(1) > hi) return 0;
  for (size_t i = 2; i < n; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xBF) return 0;
  }
  return n;
}

}  // namespace

std::string BoundedText(absl::string_view text, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes));
  // Room for the text when it has to be cut: the ellipsis takes 3 bytes.
  const size_t cut_room = max_bytes >= kEllipsis.size() ? max_bytes - kEllipsis.size() : max_bytes;
  size_t cut_at = 0;  // out.size() at the last boundary within cut_room
  for (size_t i = 0; i < text.size();) {
    const size_t n = SequenceLength(text.substr(i));
    const size_t width = n == 0 ? 1 : n;
    if (out.size() + width > max_bytes) {
      out.resize(cut_at);
      if (max_bytes >= kEllipsis.size()) out.append(kEllipsis.data(), kEllipsis.size());
      return out;
    }
    if (n == 0) {
      out.push_back('?');
    } else {
      out.append(text.data() + i, n);
    }
    if (out.size() <= cut_room) cut_at = out.size();
    i += width;
  }
  return out;
}

}  // namespace fanout::router
