// A Redis reply owned by fanout (hiredis frees its own as soon as the reply
// callback returns).
#ifndef FANOUT_CACHE_TIERS_REDIS_REDIS_REPLY_H_
#define FANOUT_CACHE_TIERS_REDIS_REDIS_REPLY_H_

#include <cstdint>
#include <string>
#include <vector>

namespace fanout::cache {

struct RedisReply {
  enum class Type { kNil, kString, kStatus, kInteger, kArray, kError };
  Type type = Type::kNil;
  std::string str;  // kString (binary-safe), kStatus ("OK"), kError ("WRONGTYPE ...")
  int64_t integer = 0;
  std::vector<RedisReply> elements;  // kArray

  bool is_error() const { return type == Type::kError; }
  bool is_nil() const { return type == Type::kNil; }
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_TIERS_REDIS_REDIS_REPLY_H_
