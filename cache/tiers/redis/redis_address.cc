#include "cache/tiers/redis/redis_address.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace fanout::cache {

std::string RedisAddress::ToString() const {
  if (is_unix()) return absl::StrCat("unix://", unix_path);
  if (absl::StrContains(host, ':')) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<RedisAddress> ParseRedisAddress(absl::string_view text) {
  RedisAddress a;
  if (absl::ConsumePrefix(&text, "unix://")) {
    if (text.empty() || text[0] != '/') {
      return absl::InvalidArgumentError(
          "a Unix socket address must be an absolute path: unix:///path/to/redis.sock");
    }
    a.unix_path = std::string(text);
    return a;
  }
  const size_t colon = text.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" has no port: write host:port or unix:///path"));
  }
  absl::string_view host = text.substr(0, colon);
  const absl::string_view port = text.substr(colon + 1);
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  } else if (absl::StrContains(host, ':')) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\": write an IPv6 host in brackets, [::1]:6379"));
  }
  if (host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" has no host"));
  }
  int p = 0;
  if (!absl::SimpleAtoi(port, &p) || p < 1 || p > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\": port \"", port, "\" is not from 1 to 65535"));
  }
  a.host = std::string(host);
  a.port = p;
  return a;
}

}  // namespace fanout::cache
