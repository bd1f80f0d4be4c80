// W3C Trace Context (https://www.w3.org/TR/trace-context/): fanout carries a
// caller's `traceparent` on to the calls it makes for it (origin fetches,
// Route's backend calls) unchanged, so that a tracing system sees them as
// part of the caller's trace. fanout itself records no spans.
#ifndef FANOUT_COMMON_TRACE_CONTEXT_H_
#define FANOUT_COMMON_TRACE_CONTEXT_H_

#include <cstddef>

#include "absl/strings/string_view.h"

namespace fanout {

// The gRPC metadata key (gRPC keys are lower case).
inline constexpr char kTraceparentKey[] = "traceparent";

// The longest traceparent passed on: version 00 is 55 characters; later
// versions may append fields, up to this.
inline constexpr size_t kMaxTraceparentBytes = 256;

// Whether `value` is a traceparent to pass on: "VV-TRACEID-PARENTID-FF" in
// lower-case hex (2-32-16-2 digits), version not "ff", trace id and parent id
// not all zeros; version 00 has nothing after the flags, later versions may
// have "-..." (at most kMaxTraceparentBytes in all). Anything else is
// dropped, as the specification asks of a malformed header.
bool IsValidTraceparent(absl::string_view value);

}  // namespace fanout

#endif  // FANOUT_COMMON_TRACE_CONTEXT_H_
