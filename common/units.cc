#include "common/units.h"

#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fanout {

absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  absl::Duration d;
  if (text == "0") return absl::ZeroDuration();
  if (text.empty() || text[0] == '-' || text[0] == '+' || !absl::ParseDuration(text, &d) ||
      d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\" is not a duration (examples: 300ms, 2s, 1m30s)"));
  }
  return d;
}

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  size_t digits = 0;
  while (digits < text.size() && absl::ascii_isdigit(static_cast<unsigned char>(text[digits]))) {
    ++digits;
  }
  uint64_t number = 0;
  if (digits == 0 || !absl::SimpleAtoi(text.substr(0, digits), &number)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" is not a byte size (examples: 4096, 64KiB, 256MiB)"));
  }
  absl::string_view unit = absl::StripAsciiWhitespace(text.substr(digits));
  uint64_t scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "KB") scale = 1000;
  else if (unit == "MB") scale = 1000 * 1000;
  else if (unit == "GB") scale = 1000 * 1000 * 1000;
  else if (unit == "KiB") scale = 1024;
  else if (unit == "MiB") scale = 1024 * 1024;
  else if (unit == "GiB") scale = 1024ull * 1024 * 1024;
  else {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\" has an unknown unit \"", unit, "\" (use B, KB, MB, GB, KiB, MiB, GiB)"));
  }
  if (number > std::numeric_limits<uint64_t>::max() / scale) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is too large"));
  }
  return number * scale;
}

}  // namespace fanout
