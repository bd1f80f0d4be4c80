// Checks of request fields against the configured limits. Every error is
// InvalidArgument (or ResourceExhausted for sizes) and names the field and
// the limit, so a caller can fix the request without reading the source.
#ifndef FANOUT_SERVER_VALIDATION_H_
#define FANOUT_SERVER_VALIDATION_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/config.h"

namespace fanout::server {

// A key: non-empty, at most limits.max_key_bytes, no NUL byte.
absl::Status ValidateKey(absl::string_view field, absl::string_view key,
                         const LimitsSection& limits);

// A namespace: may be empty, at most limits.max_namespace_bytes, no NUL byte.
absl::Status ValidateNamespace(absl::string_view ns, const LimitsSection& limits);

// A prefix: may be empty, at most limits.max_key_bytes, no NUL byte.
absl::Status ValidatePrefix(absl::string_view prefix, const LimitsSection& limits);

// A batch of `count` keys in `field`: 1 to limits.max_batch_keys (0 allowed
// when `allow_empty`).
absl::Status ValidateBatchSize(absl::string_view field, size_t count,
                               const LimitsSection& limits, bool allow_empty = false);

}  // namespace fanout::server

#endif  // FANOUT_SERVER_VALIDATION_H_
