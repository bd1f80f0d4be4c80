// An asynchronous Redis client: a small pool of pipelined connections on an
// I/O thread of its own, a deadline on every command enforced here (hiredis's
// async API has none), reconnects with backoff that never block callers, and
// a circuit breaker that skips a Redis that keeps failing.
//
// Built on hiredis's async API (Debian's 0.14) over fanout's own epoll loop
// (event_loop.h): hiredis asks its adapter for read/write interest and the
// loop calls it back; the same loop runs the deadline timers and receives the
// commands other threads post to it. hiredis never appears in this header.
//
// Commands go to the ready connection with the fewest commands in flight,
// pipelined with whatever else is in flight on it. A command that gets no
// answer within `command_timeout` fails with Unavailable and its connection is
// closed and reconnected: a late reply could still be matched (async replies
// arrive in order), but a connection that stopped answering is more likely
// frozen or cut than slow, and closing it fails everything queued behind it at
// once instead of one timeout at a time.
//
// Threading: every public method is thread-safe and returns at once. Callbacks
// run exactly once, either inline (refused at once: circuit open, no ready
// connection, deadline already passed) or on the client's I/O thread; they
// must not block, and must not destroy the client. Destruction fails whatever
// is still in flight with Unavailable and joins the I/O thread; it must not
// run on that thread.
#ifndef FANOUT_CACHE_TIERS_REDIS_REDIS_CLIENT_H_
#define FANOUT_CACHE_TIERS_REDIS_REDIS_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cache/tiers/redis/circuit_breaker.h"
#include "cache/tiers/redis/redis_address.h"
#include "cache/tiers/redis/redis_reply.h"

namespace fanout::cache {

struct RedisClientOptions {
  RedisAddress address;
  std::string password;  // empty: no AUTH
  int db = 0;            // SELECTed on every connection
  // Longest a command may wait for its answer (the caller's deadline may be
  // shorter).
  absl::Duration command_timeout = absl::Milliseconds(50);
  // Longest a connection attempt may take, from connect to the handshake's
  // last answer (AUTH, SELECT, PING).
  absl::Duration connect_timeout = absl::Seconds(1);
  int connections = 2;
  // Delay before reconnecting a lost connection: min, doubling to max, with
  // ±20% jitter; back to min once a connection is ready.
  absl::Duration reconnect_min = absl::Milliseconds(50);
  absl::Duration reconnect_max = absl::Seconds(1);
  CircuitBreakerOptions breaker;
  // Create() waits up to this long for the first connection's handshake, to
  // report a refused AUTH or SELECT at start-up. Zero: do not wait.
  absl::Duration start_wait = absl::Seconds(1);
  // Names the client in log lines and its thread.
  std::string name = "redis";
};

struct RedisClientStats {
  uint64_t commands = 0;           // commands sent to Redis
  uint64_t refused = 0;            // calls failed at once (circuit open, no ready connection)
  uint64_t timeouts = 0;           // commands without an answer within command_timeout
  uint64_t deadline_exceeded = 0;  // calls whose caller's deadline passed first
  uint64_t connection_losses = 0;  // ready connections lost or closed after a timeout
  uint64_t connect_failures = 0;   // connection attempts that failed (refused, timed out, AUTH)
  uint64_t circuit_opens = 0;
  int ready_connections = 0;
  CircuitBreaker::State circuit = CircuitBreaker::State::kClosed;
};

class RedisClient {
 public:
  using Command = std::vector<std::string>;  // binary-safe arguments
  using CommandDone = absl::AnyInvocable<void(absl::StatusOr<RedisReply>) &&>;
  using PipelineDone = absl::AnyInvocable<void(absl::StatusOr<std::vector<RedisReply>>) &&>;

  // Starts the I/O thread and the connections, then waits up to
  // options.start_wait for the first handshake:
  //   PermissionDenied  Redis refused AUTH (wrong or missing password)
  //   InvalidArgument   Redis refused SELECT (db out of range) or bad options
  //   FailedPrecondition  what answers at the address is not Redis
  // An unreachable Redis is not an error: the client starts, answers
  // Unavailable, and keeps reconnecting in the background.
  static absl::StatusOr<std::shared_ptr<RedisClient>> Create(RedisClientOptions options);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Runs one command. The status is OK when Redis answered, even with an
  // error reply (RedisReply::Type::kError); otherwise
  //   Unavailable       not sent (circuit open, no ready connection) or no
  //                     answer within command_timeout (IsRedisTimeout), or
  //                     the connection was lost
  //   DeadlineExceeded  `deadline` passed first
  //   InvalidArgument   an empty command
  void Run(Command command, absl::Time deadline, CommandDone done);

  // Runs `commands` back to back on one connection, in one write; `done`
  // gets their replies in order, or one status for the whole pipeline.
  void RunPipeline(std::vector<Command> commands, absl::Time deadline, PipelineDone done);

  // Runs `task` on the I/O thread after `delay`; pending tasks run at once
  // when the client is destroyed (whatever they call then fails fast).
  void RunAfter(absl::Duration delay, absl::AnyInvocable<void() &&> task);

  // False while calls are refused at once: circuit open or no ready
  // connection.
  bool Available() const;
  RedisClientStats Stats() const;
  const RedisClientOptions& options() const;

 private:
  class Impl;
  explicit RedisClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Whether `status` is the Unavailable of a command that got no answer within
// the client's command_timeout.
bool IsRedisTimeout(const absl::Status& status);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_TIERS_REDIS_REDIS_CLIENT_H_
