#include "cache/tiers/redis/redis_fill_lease.h"

#include <algorithm>
#include <cstring>

#include "absl/random/random.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cache/tiers/envelope.h"

namespace fanout::cache {
namespace {

constexpr char kReleaseScript[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) "
    "else return 0 end";

std::string NewToken() {
  thread_local absl::BitGen gen;
  const uint64_t a = absl::Uniform<uint64_t>(gen);
  const uint64_t b = absl::Uniform<uint64_t>(gen);
  char raw[16];
  std::memcpy(raw, &a, 8);
  std::memcpy(raw + 8, &b, 8);
  return absl::BytesToHexString(absl::string_view(raw, 16));
}

int64_t CeilMillis(absl::Duration d) {
  return std::max<int64_t>(1, absl::ToInt64Milliseconds(absl::Ceil(d, absl::Milliseconds(1))));
}

}  // namespace

struct RedisFillLease::Wait {
  std::string value_key;
  std::string lease_key;
  absl::Time newer_than;
  absl::Time deadline;
  absl::Duration next_delay;
  AwaitDone done;
};

RedisFillLease::RedisFillLease(std::shared_ptr<RedisClient> client, RedisFillLeaseOptions options,
                               Clock* clock)
    : options_(std::move(options)),
      keys_(options_.key_prefix),
      clock_(clock),
      client_(std::move(client)) {}

RedisFillLease::~RedisFillLease() {
  absl::MutexLock l(&mu_);
  closing_ = true;
  mu_.Await(absl::Condition(
      +[](int* n) { return *n == 0; }, &in_flight_));
}

bool RedisFillLease::Enter() {
  absl::MutexLock l(&mu_);
  if (closing_) return false;
  ++in_flight_;
  return true;
}

void RedisFillLease::Leave() {
  absl::MutexLock l(&mu_);
  --in_flight_;
}

bool RedisFillLease::Closing() {
  absl::MutexLock l(&mu_);
  return closing_;
}

void RedisFillLease::Acquire(absl::string_view key, absl::Duration ttl, absl::Time deadline,
                             AcquireDone done) {
  if (key.empty() || ttl <= absl::ZeroDuration()) {
    std::move(done)(absl::InvalidArgumentError("a lease needs a key and a positive ttl"));
    return;
  }
  if (!Enter()) {
    std::move(done)(absl::UnavailableError("fill lease closing"));
    return;
  }
  std::string token = NewToken();
  const std::string lease_key = keys_.Lease(key);
  std::vector<RedisClient::Command> cmds = {
      {"SET", lease_key, token, "NX", "PX", std::to_string(CeilMillis(ttl))}, {"PTTL", lease_key}};
  client_->RunPipeline(std::move(cmds), deadline,
                       [this, token = std::move(token),
                        done = std::move(done)](absl::StatusOr<std::vector<RedisReply>> r) mutable {
                         absl::StatusOr<LeaseGrant> out;
                         if (!r.ok()) {
                           errors_.fetch_add(1, std::memory_order_relaxed);
                           out = r.status();
                         } else if ((*r)[0].is_error()) {
                           errors_.fetch_add(1, std::memory_order_relaxed);
                           out =
                               absl::UnavailableError(absl::StrCat("Redis answered ", (*r)[0].str));
                         } else {
                           LeaseGrant g;
                           if ((*r)[0].type == RedisReply::Type::kStatus) {
                             g.acquired = true;
                             g.token = std::move(token);
                             acquired_.fetch_add(1, std::memory_order_relaxed);
                           } else {
                             contended_.fetch_add(1, std::memory_order_relaxed);
                             const RedisReply& pttl = (*r)[1];
                             if (pttl.type == RedisReply::Type::kInteger && pttl.integer > 0) {
                               g.holder_remaining = absl::Milliseconds(pttl.integer);
                             }
                           }
                           out = std::move(g);
                         }
                         Deliver([this, done = std::move(done), out = std::move(out)]() mutable {
                           std::move(done)(std::move(out));
                           Leave();
                         });
                       });
}

void RedisFillLease::Release(absl::string_view key, absl::string_view token, absl::Time deadline,
                             ReleaseDone done) {
  if (key.empty() || token.empty()) {
    std::move(done)(absl::InvalidArgumentError("a release needs a key and a token"));
    return;
  }
  if (!Enter()) {
    std::move(done)(absl::UnavailableError("fill lease closing"));
    return;
  }
  client_->Run({"EVAL", kReleaseScript, "1", keys_.Lease(key), std::string(token)}, deadline,
               [this, done = std::move(done)](absl::StatusOr<RedisReply> r) mutable {
                 absl::Status out;
                 if (!r.ok()) {
                   errors_.fetch_add(1, std::memory_order_relaxed);
                   out = r.status();
                 } else if (r->is_error() || r->type != RedisReply::Type::kInteger) {
                   errors_.fetch_add(1, std::memory_order_relaxed);
                   out = absl::UnavailableError(absl::StrCat("Redis answered ", r->str));
                 } else if (r->integer == 1) {
                   released_.fetch_add(1, std::memory_order_relaxed);
                 } else {
                   release_refused_.fetch_add(1, std::memory_order_relaxed);
                   out = absl::FailedPreconditionError(
                       "the lease is not held by this token (it expired, or another holder has "
                       "it)");
                 }
                 std::move(done)(std::move(out));
                 Leave();
               });
}

void RedisFillLease::AwaitFill(absl::string_view key, absl::Time newer_than, absl::Time deadline,
                               AwaitDone done) {
  if (key.empty()) {
    std::move(done)(absl::InvalidArgumentError("AwaitFill needs a key"));
    return;
  }
  if (!Enter()) {
    std::move(done)(absl::UnavailableError("fill lease closing"));
    return;
  }
  waits_.fetch_add(1, std::memory_order_relaxed);
  auto wait = std::make_shared<Wait>();
  wait->value_key = keys_.Value(key);
  wait->lease_key = keys_.Lease(key);
  wait->newer_than = newer_than;
  wait->deadline = deadline;
  wait->next_delay = options_.poll_min;
  wait->done = std::move(done);
  Poll(std::move(wait));
}

void RedisFillLease::Poll(std::shared_ptr<Wait> wait) {
  if (Closing()) {
    FinishWait(wait, absl::UnavailableError("fill lease closing"));
    return;
  }
  if (absl::Now() >= wait->deadline) {
    FinishWait(wait, absl::DeadlineExceededError("the lease holder did not write in time"));
    return;
  }
  polls_.fetch_add(1, std::memory_order_relaxed);
  // EXISTS first: a lease seen gone means the holder's write, made before
  // its release, is visible to the GET that follows.
  std::vector<RedisClient::Command> cmds = {{"EXISTS", wait->lease_key}, {"GET", wait->value_key}};
  client_->RunPipeline(
      std::move(cmds), wait->deadline,
      [this, wait](absl::StatusOr<std::vector<RedisReply>> r) mutable {
        if (!r.ok()) {
          FinishWait(wait, r.status());
          return;
        }
        const RedisReply& exists = (*r)[0];
        const RedisReply& value = (*r)[1];
        if (exists.is_error()) {
          FinishWait(wait, absl::UnavailableError(absl::StrCat("Redis answered ", exists.str)));
          return;
        }
        const absl::Time now = clock_->Now();
        if (value.type == RedisReply::Type::kString) {
          absl::StatusOr<Envelope> env = DecodeEnvelope(value.str);
          if (env.ok() && !env->superseded && env->entry.fetched_at > wait->newer_than &&
              now < env->entry.stale_until) {
            FinishWait(wait, std::move(env->entry));
            return;
          }
        }
        if (exists.type == RedisReply::Type::kInteger && exists.integer == 0) {
          FinishWait(wait, absl::NotFoundError("the lease is gone and no newer value was written"));
          return;
        }
        absl::Duration delay = wait->next_delay;
        {
          thread_local absl::BitGen gen;
          delay *= absl::Uniform(gen, 0.8, 1.2);
        }
        wait->next_delay = std::min(wait->next_delay * 2, options_.poll_max);
        // Wake at the deadline at the latest, to report it.
        delay = std::min(delay, std::max(absl::ZeroDuration(), wait->deadline - absl::Now()));
        client_->RunAfter(delay, [this, wait]() mutable { Poll(std::move(wait)); });
      });
}

void RedisFillLease::FinishWait(const std::shared_ptr<Wait>& wait, absl::StatusOr<Entry> result) {
  if (result.ok()) {
    waits_filled_.fetch_add(1, std::memory_order_relaxed);
  } else if (result.status().code() == absl::StatusCode::kNotFound) {
    waits_vacant_.fetch_add(1, std::memory_order_relaxed);
  } else if (result.status().code() == absl::StatusCode::kDeadlineExceeded) {
    waits_timed_out_.fetch_add(1, std::memory_order_relaxed);
  } else {
    errors_.fetch_add(1, std::memory_order_relaxed);
  }
  Deliver([this, done = std::move(wait->done), result = std::move(result)]() mutable {
    std::move(done)(std::move(result));
    Leave();
  });
}

void RedisFillLease::Deliver(absl::AnyInvocable<void() &&> task) {
  if (options_.executor != nullptr) {
    options_.executor->Schedule(std::move(task));
  } else {
    std::move(task)();
  }
}

FillLeaseStats RedisFillLease::Stats() const {
  FillLeaseStats s;
  s.acquired = acquired_.load(std::memory_order_relaxed);
  s.contended = contended_.load(std::memory_order_relaxed);
  s.released = released_.load(std::memory_order_relaxed);
  s.release_refused = release_refused_.load(std::memory_order_relaxed);
  s.waits = waits_.load(std::memory_order_relaxed);
  s.waits_filled = waits_filled_.load(std::memory_order_relaxed);
  s.waits_vacant = waits_vacant_.load(std::memory_order_relaxed);
  s.waits_timed_out = waits_timed_out_.load(std::memory_order_relaxed);
  s.polls = polls_.load(std::memory_order_relaxed);
  s.errors = errors_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace fanout::cache
