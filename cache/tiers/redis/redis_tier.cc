#include "cache/tiers/redis/redis_tier.h"

#include <algorithm>
#include <utility>

#include "absl/base/internal/endian.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cache/tiers/envelope.h"
#include "common/log.h"

namespace fanout::cache {
namespace {

// Rewrites each envelope in KEYS as EraseMode::kSupersede leaves it (envelope.cc's
// Supersede): expires_at = max(fetched_at, min(expires_at, now)), fresh_until
// = min(fresh_until, expires_at), flags |= superseded; the value and the
// key's expiry are kept. ARGV[1] is now, 8 bytes little-endian (µs). The
// times are compared as signed 64-bit little-endian byte strings, exactly,
// without Lua's doubles. Keys that hold no format-1 envelope are skipped.
// Returns how many envelopes it rewrote.
constexpr char kSupersedeScript[] = R"lua(
local function less(a, b)
  local x, y = string.byte(a, 8), string.byte(b, 8)
  if x ~= y then return (x + 128) % 256 < (y + 128) % 256 end
  for i = 7, 1, -1 do
    x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return false
end
local now = ARGV[1]
local n = 0
for _, k in ipairs(KEYS) do
  local v = redis.pcall('GET', k)
  if type(v) == 'string' and #v >= 54 and string.byte(v, 1) == 1 then
    local fetched = string.sub(v, 11, 18)
    local fresh = string.sub(v, 19, 26)
    local expires = string.sub(v, 27, 34)
    if less(now, expires) then expires = now end
    if less(expires, fetched) then expires = fetched end
    if less(expires, fresh) then fresh = expires end
    local flags = string.byte(v, 2)
    if flags % 2 == 0 then flags = flags + 1 end
    redis.call('SET', k, string.sub(v, 1, 1) .. string.char(flags) .. string.sub(v, 3, 18) ..
               fresh .. expires .. string.sub(v, 35), 'KEEPTTL')
    n = n + 1
  end
end
return n
)lua";

}  // namespace

struct RedisTier::EraseJob {
  std::vector<std::string> keys;  // Redis keys named by the caller
  std::string pattern;            // SCAN MATCH pattern; empty: no prefix
  EraseMode mode = EraseMode::kRemove;
  absl::Time deadline;
  uint64_t erased = 0;
  EraseDone done;
};

RedisTier::RedisTier(std::shared_ptr<RedisClient> client, RedisTierOptions options, Clock* clock)
    : options_(std::move(options)),
      keys_(options_.key_prefix),
      clock_(clock),
      client_(std::move(client)) {}

RedisTier::~RedisTier() {
  absl::MutexLock l(&mu_);
  closing_ = true;
  mu_.Await(absl::Condition(
      +[](int* n) { return *n == 0; }, &in_flight_));
}

bool RedisTier::Enter() {
  absl::MutexLock l(&mu_);
  if (closing_) return false;
  ++in_flight_;
  return true;
}

void RedisTier::Leave() {
  absl::MutexLock l(&mu_);
  --in_flight_;
}

void RedisTier::CountFailure(const absl::Status& status) {
  if (status.code() == absl::StatusCode::kDeadlineExceeded || IsRedisTimeout(status)) {
    timeouts_.fetch_add(1, std::memory_order_relaxed);
  } else {
    errors_.fetch_add(1, std::memory_order_relaxed);
  }
}

void RedisTier::Undecodable(absl::string_view key, absl::string_view why) {
  undecodable_.fetch_add(1, std::memory_order_relaxed);
  if (!logged_undecodable_.exchange(true)) {
    FANOUT_LOG(WARNING) << "L2: the value of \"" << absl::CHexEscape(key) << "\" does not decode ("
                        << why
                        << "); treated as a miss. Further ones are only counted (undecodable).";
  }
}

absl::StatusOr<Entry> RedisTier::Decode(absl::string_view key, const RedisReply& reply,
                                        absl::Time now) {
  switch (reply.type) {
    case RedisReply::Type::kNil:
      misses_.fetch_add(1, std::memory_order_relaxed);
      return absl::NotFoundError("miss");
    case RedisReply::Type::kString: {
      absl::StatusOr<Envelope> env = DecodeEnvelope(reply.str);
      if (!env.ok()) {
        Undecodable(key, env.status().message());
        break;
      }
      if (now >= env->entry.stale_until) {
        misses_.fetch_add(1, std::memory_order_relaxed);
        return absl::NotFoundError("miss (past stale_until)");
      }
      hits_.fetch_add(1, std::memory_order_relaxed);
      return std::move(env->entry);
    }
    case RedisReply::Type::kError:
      if (absl::StartsWith(reply.str, "WRONGTYPE")) {
        Undecodable(key, reply.str);
        break;
      }
      errors_.fetch_add(1, std::memory_order_relaxed);
      return absl::UnavailableError(absl::StrCat("Redis answered ", reply.str));
    default:
      Undecodable(key, "not a string reply");
      break;
  }
  misses_.fetch_add(1, std::memory_order_relaxed);
  return absl::NotFoundError("miss (undecodable)");
}

void RedisTier::Deliver(size_t bytes, absl::AnyInvocable<void() &&> task) {
  if (options_.executor != nullptr && bytes > options_.inline_bytes) {
    options_.executor->Schedule(std::move(task));
  } else {
    std::move(task)();
  }
}

void RedisTier::Lookup(absl::string_view key, absl::Time deadline, LookupDone done) {
  if (!Enter()) {
    std::move(done)(absl::UnavailableError("L2 tier closing"));
    return;
  }
  client_->Run({"GET", keys_.Value(key)}, deadline,
               [this, key = std::string(key),
                done = std::move(done)](absl::StatusOr<RedisReply> reply) mutable {
                 const size_t bytes = reply.ok() ? reply->str.size() : 0;
                 Deliver(bytes, [this, key = std::move(key), done = std::move(done),
                                 reply = std::move(reply)]() mutable {
                   absl::StatusOr<Entry> result;
                   if (!reply.ok()) {
                     CountFailure(reply.status());
                     result = reply.status();
                   } else {
                     result = Decode(key, *reply, clock_->Now());
                   }
                   std::move(done)(std::move(result));
                   Leave();
                 });
               });
}

void RedisTier::LookupMany(std::vector<std::string> keys, absl::Time deadline,
                           LookupManyDone done) {
  if (keys.empty()) {
    std::move(done)({});
    return;
  }
  if (!Enter()) {
    std::move(done)(
        std::vector<absl::StatusOr<Entry>>(keys.size(), absl::UnavailableError("L2 tier closing")));
    return;
  }
  RedisClient::Command mget;
  mget.reserve(keys.size() + 1);
  mget.push_back("MGET");
  for (const std::string& k : keys) mget.push_back(keys_.Value(k));
  client_->Run(std::move(mget), deadline,
               [this, keys = std::move(keys),
                done = std::move(done)](absl::StatusOr<RedisReply> reply) mutable {
                 size_t bytes = 0;
                 if (reply.ok()) {
                   for (const RedisReply& e : reply->elements) bytes += e.str.size();
                 }
                 Deliver(bytes, [this, keys = std::move(keys), done = std::move(done),
                                 reply = std::move(reply)]() mutable {
                   std::vector<absl::StatusOr<Entry>> out;
                   out.reserve(keys.size());
                   if (reply.ok() && (reply->type != RedisReply::Type::kArray ||
                                      reply->elements.size() != keys.size())) {
                     reply = absl::UnavailableError(
                         reply->is_error() ? absl::StrCat("Redis answered MGET with ", reply->str)
                                           : std::string("unexpected MGET reply"));
                   }
                   if (!reply.ok()) {
                     for (size_t i = 0; i < keys.size(); ++i) CountFailure(reply.status());
                     out.assign(keys.size(), reply.status());
                   } else {
                     const absl::Time now = clock_->Now();
                     for (size_t i = 0; i < keys.size(); ++i) {
                       out.push_back(Decode(keys[i], reply->elements[i], now));
                     }
                   }
                   std::move(done)(std::move(out));
                   Leave();
                 });
               });
}

void RedisTier::Store(absl::string_view key, const Entry& entry, StoreDone done) {
  if (!client_->Available()) {
    stores_dropped_.fetch_add(1, std::memory_order_relaxed);
    std::move(done)(absl::UnavailableError("L2 unavailable; write dropped"));
    return;
  }
  if (!Enter()) {
    std::move(done)(absl::UnavailableError("L2 tier closing"));
    return;
  }
  const absl::Time now = clock_->Now();
  RedisClient::Command cmd;
  const bool write = entry.stale_until > now;
  if (!write) {
    // Nothing to keep, but what the key held before is replaced: by nothing.
    cmd = {"UNLINK", keys_.Value(key)};
  } else {
    cmd = {"SET", keys_.Value(key), EncodeEnvelope(entry)};
    if (entry.stale_until != absl::InfiniteFuture()) {
      const int64_t ms = std::max<int64_t>(
          1, absl::ToInt64Milliseconds(absl::Ceil(entry.stale_until - now, absl::Milliseconds(1))));
      cmd.push_back("PX");
      cmd.push_back(std::to_string(ms));
    }
  }
  client_->Run(std::move(cmd), absl::InfiniteFuture(),
               [this, write, done = std::move(done)](absl::StatusOr<RedisReply> reply) mutable {
                 absl::Status status;
                 if (!reply.ok()) {
                   status = reply.status();
                 } else if (reply->is_error()) {
                   status = absl::UnavailableError(absl::StrCat("Redis answered ", reply->str));
                 }
                 if (!status.ok()) {
                   CountFailure(status);
                 } else if (write) {
                   stores_.fetch_add(1, std::memory_order_relaxed);
                 }
                 std::move(done)(std::move(status));
                 Leave();
               });
}

RedisClient::Command RedisTier::SupersedeCommand(const std::vector<std::string>& redis_keys) const {
  RedisClient::Command cmd;
  cmd.reserve(redis_keys.size() + 4);
  cmd.push_back("EVAL");
  cmd.push_back(kSupersedeScript);
  cmd.push_back(std::to_string(redis_keys.size()));
  cmd.insert(cmd.end(), redis_keys.begin(), redis_keys.end());
  char now[8];
  absl::little_endian::Store64(now, static_cast<uint64_t>(absl::ToUnixMicros(clock_->Now())));
  cmd.push_back(std::string(now, 8));
  return cmd;
}

void RedisTier::Erase(std::vector<std::string> keys, std::string prefix, EraseMode mode,
                      absl::Time deadline, EraseDone done) {
  if (!Enter()) {
    std::move(done)(absl::UnavailableError("L2 tier closing"));
    return;
  }
  auto job = std::make_shared<EraseJob>();
  job->mode = mode;
  job->deadline = deadline;
  job->done = std::move(done);
  if (!prefix.empty()) job->pattern = keys_.ValuePattern(prefix);

  std::vector<RedisClient::Command> commands;
  const size_t batch = static_cast<size_t>(std::max(1, options_.batch));
  for (size_t i = 0; i < keys.size(); i += batch) {
    std::vector<std::string> chunk;
    for (size_t j = i; j < std::min(keys.size(), i + batch); ++j) {
      chunk.push_back(keys_.Value(keys[j]));
    }
    if (mode == EraseMode::kSupersede) {
      commands.push_back(SupersedeCommand(chunk));
    } else {
      chunk.insert(chunk.begin(), "UNLINK");
      commands.push_back(std::move(chunk));
    }
  }
  if (!job->pattern.empty()) {
    commands.push_back({"SCAN", "0", "MATCH", job->pattern, "COUNT", std::to_string(batch)});
  }
  if (commands.empty()) {
    EraseFinish(job, uint64_t{0});
    return;
  }
  EraseStep(std::move(job), std::move(commands));
}

// One round trip: the erasures found so far and the next SCAN, pipelined.
void RedisTier::EraseStep(std::shared_ptr<EraseJob> job,
                          std::vector<RedisClient::Command> commands) {
  bool closing;
  {
    absl::MutexLock l(&mu_);
    closing = closing_;
  }
  if (closing) {
    EraseFinish(job, absl::UnavailableError("L2 tier closing"));
    return;
  }
  client_->RunPipeline(
      std::move(commands), job->deadline,
      [this, job](absl::StatusOr<std::vector<RedisReply>> replies) mutable {
        if (!replies.ok()) {
          EraseFinish(job, replies.status());
          return;
        }
        std::vector<RedisClient::Command> next;
        for (const RedisReply& r : *replies) {
          if (r.is_error()) {
            EraseFinish(job, absl::UnavailableError(absl::StrCat("Redis answered ", r.str)));
            return;
          }
          if (r.type == RedisReply::Type::kInteger) {
            job->erased += static_cast<uint64_t>(std::max<int64_t>(0, r.integer));
            continue;
          }
          // SCAN: [cursor, [keys...]]
          if (r.type != RedisReply::Type::kArray || r.elements.size() != 2) {
            EraseFinish(job, absl::UnavailableError("unexpected SCAN reply"));
            return;
          }
          std::vector<std::string> found;
          for (const RedisReply& k : r.elements[1].elements) found.push_back(k.str);
          if (!found.empty()) {
            if (job->mode == EraseMode::kSupersede) {
              next.push_back(SupersedeCommand(found));
            } else {
              found.insert(found.begin(), "UNLINK");
              next.push_back(std::move(found));
            }
          }
          if (r.elements[0].str != "0") {
            next.push_back({"SCAN", r.elements[0].str, "MATCH", job->pattern, "COUNT",
                            std::to_string(std::max(1, options_.batch))});
          }
        }
        if (next.empty()) {
          EraseFinish(job, job->erased);
          return;
        }
        EraseStep(std::move(job), std::move(next));
      });
}

void RedisTier::EraseFinish(const std::shared_ptr<EraseJob>& job, absl::StatusOr<uint64_t> result) {
  if (result.ok()) {
    erased_.fetch_add(*result, std::memory_order_relaxed);
  } else {
    // What was erased before the failure is erased all the same.
    erased_.fetch_add(job->erased, std::memory_order_relaxed);
    CountFailure(result.status());
  }
  EraseDone done = std::move(job->done);
  std::move(done)(std::move(result));
  Leave();
}

TierStats RedisTier::Stats() const {
  TierStats s;
  s.hits = hits_.load(std::memory_order_relaxed);
  s.misses = misses_.load(std::memory_order_relaxed);
  s.errors = errors_.load(std::memory_order_relaxed);
  s.timeouts = timeouts_.load(std::memory_order_relaxed);
  s.stores = stores_.load(std::memory_order_relaxed);
  s.stores_dropped = stores_dropped_.load(std::memory_order_relaxed);
  s.erased = erased_.load(std::memory_order_relaxed);
  s.undecodable = undecodable_.load(std::memory_order_relaxed);
  s.queue_depth = 0;  // writes go out at once; nothing is queued in the tier
  s.available = client_->Available();
  return s;
}

absl::StatusOr<std::unique_ptr<RedisTier>> NewRedisTier(RedisClientOptions client,
                                                        RedisTierOptions tier, Clock* clock) {
  absl::StatusOr<std::shared_ptr<RedisClient>> c = RedisClient::Create(std::move(client));
  if (!c.ok()) return c.status();
  return std::make_unique<RedisTier>(*std::move(c), std::move(tier), clock);
}

}  // namespace fanout::cache
