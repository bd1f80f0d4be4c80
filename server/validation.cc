#include "server/validation.h"

#include "absl/strings/str_cat.h"

namespace fanout::server {
namespace {

absl::Status CheckBytes(absl::string_view field, absl::string_view value, uint64_t max,
                        absl::string_view limit_name) {
  if (value.size() > max) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is ", value.size(),
                                                   " bytes, over the limit of ", max, " (",
                                                   limit_name, ")"));
  }
  if (value.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must not contain a NUL byte"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateKey(absl::string_view field, absl::string_view key,
                         const LimitsSection& limits) {
  if (key.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  return CheckBytes(field, key, limits.max_key_bytes, "limits.max_key_bytes");
}

absl::Status ValidateNamespace(absl::string_view ns, const LimitsSection& limits) {
  return CheckBytes("namespace", ns, limits.max_namespace_bytes, "limits.max_namespace_bytes");
}

absl::Status ValidatePrefix(absl::string_view prefix, const LimitsSection& limits) {
  return CheckBytes("prefix", prefix, limits.max_key_bytes, "limits.max_key_bytes");
}

absl::Status ValidateBatchSize(absl::string_view field, size_t count,
                               const LimitsSection& limits, bool allow_empty) {
  if (count == 0 && !allow_empty) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  }
  if (count > static_cast<size_t>(limits.max_batch_keys)) {
    return absl::InvalidArgumentError(absl::StrCat(field, " has ", count,
                                                   " entries, over the limit of ",
                                                   limits.max_batch_keys,
                                                   " (limits.max_batch_keys)"));
  }
  return absl::OkStatus();
}

}  // namespace fanout::server
