#include "cache/tiers/redis/redis_keys.h"

#include "absl/strings/str_cat.h"

namespace fanout::cache {

std::string RedisKeys::Value(absl::string_view ckey) const {
  return absl::StrCat(prefix_, "v:", ckey);
}

std::string RedisKeys::Lease(absl::string_view ckey) const {
  return absl::StrCat(prefix_, "l:", ckey);
}

std::string RedisKeys::InvalidationStream() const { return absl::StrCat(prefix_, "inv"); }

std::string RedisKeys::KeyFence(absl::string_view ckey) const {
  return absl::StrCat(prefix_, "fk:", ckey);
}

std::string RedisKeys::PrefixFence(absl::string_view cprefix) const {
  return absl::StrCat(prefix_, "fp:", cprefix);
}

std::string RedisKeys::AnyPrefixFence() const { return absl::StrCat(prefix_, "fp*"); }

std::string RedisKeys::ValuePattern(absl::string_view cprefix) const {
  return absl::StrCat(EscapeGlob(prefix_), "v:", EscapeGlob(cprefix), "*");
}

std::string EscapeGlob(absl::string_view literal) {
  std::string out;
  out.reserve(literal.size() + 8);
  for (char c : literal) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

}  // namespace fanout::cache
