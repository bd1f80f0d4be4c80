// Helpers for tests of the Redis client and tier against a real
// redis-server (tests/testing/redis_server.h).
#ifndef FANOUT_TESTS_CACHE_TIERS_REDIS_REDIS_TEST_ENV_H_
#define FANOUT_TESTS_CACHE_TIERS_REDIS_REDIS_TEST_ENV_H_

#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "cache/tiers/redis/redis_client.h"
#include "gtest/gtest.h"
#include "tests/testing/redis_server.h"

namespace fanout::testing {

// One redis-server for the whole test process, started on first use;
// nullptr (and a failed test) if it cannot start.
inline RedisServer* SharedRedis() {
  // Destroyed (and the server killed) when the process exits.
  static std::unique_ptr<RedisServer> server = [] {
    std::string error;
    std::unique_ptr<RedisServer> s = RedisServer::Start(&error);
    if (s == nullptr) ADD_FAILURE() << "redis-server did not start: " << error;
    return s;
  }();
  return server.get();
}

// A key prefix no other test in this process uses, so a tier on a shared
// server starts empty.
inline std::string UniquePrefix() {
  static std::atomic<int> n{0};
  return absl::StrCat("test", ::getpid(), "-", n.fetch_add(1), ":");
}

// Client options for `address` with generous timeouts: contract tests are
// about semantics, not speed, on a loaded machine.
inline cache::RedisClientOptions ClientOptions(const std::string& address,
                                               absl::Duration timeout = absl::Seconds(5)) {
  cache::RedisClientOptions o;
  absl::StatusOr<cache::RedisAddress> a = cache::ParseRedisAddress(address);
  EXPECT_TRUE(a.ok()) << a.status();
  if (a.ok()) o.address = *a;
  o.command_timeout = timeout;
  o.connect_timeout = std::max(absl::Seconds(1), timeout);
  o.start_wait = absl::Seconds(5);
  return o;
}

// Runs one command and waits (bounded) for its answer.
inline absl::StatusOr<cache::RedisReply> RunNow(cache::RedisClient& client,
                                                cache::RedisClient::Command cmd,
                                                absl::Duration timeout = absl::Seconds(5)) {
  absl::Notification done;
  absl::StatusOr<cache::RedisReply> out = absl::InternalError("no answer");
  client.Run(std::move(cmd), absl::Now() + timeout, [&](absl::StatusOr<cache::RedisReply> r) {
    out = std::move(r);
    done.Notify();
  });
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20))) << "Run never answered";
  return out;
}

// Polls `pred` every 10 ms until it holds or `bound` passes; returns whether it held.
template <typename Pred>
bool PollUntil(Pred pred, absl::Duration bound = absl::Seconds(10)) {
  const absl::Time give_up = absl::Now() + bound;
  while (absl::Now() < give_up) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return pred();
}

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_CACHE_TIERS_REDIS_REDIS_TEST_ENV_H_
