// Text from elsewhere (caller input, backend error messages) made fit for
// status messages and proto3 `string` fields: valid UTF-8, bounded length.
#ifndef FANOUT_ROUTER_BOUNDED_TEXT_H_
#define FANOUT_ROUTER_BOUNDED_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace fanout::router {

// `text` with every byte that is not part of a well-formed UTF-8 sequence
// replaced by '?', cut at a character boundary to at most `max_bytes` bytes;
// a cut text ends with "…" (U+2026, counted in max_bytes when max_bytes >= 3).
std::string BoundedText(absl::string_view text, size_t max_bytes);

}  // namespace fanout::router

#endif  // FANOUT_ROUTER_BOUNDED_TEXT_H_
