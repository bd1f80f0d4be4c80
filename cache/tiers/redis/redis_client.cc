#include "cache/tiers/redis/redis_client.h"

#include <arpa/inet.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "cache/tiers/redis/event_loop.h"
#include "common/log.h"

namespace fanout::cache {
namespace {

constexpr char kTimeoutPayload[] = "type.fanout/redis.command_timeout";

RedisReply Convert(const redisReply* r) {
  RedisReply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::kError;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(Convert(r->element[i]));
      break;
    default:
      out.type = RedisReply::Type::kNil;
  }
  return out;
}

// Error replies that say Redis cannot serve right now, as opposed to errors
// about the command or the data.
bool IsAvailabilityError(const RedisReply& r) {
  if (!r.is_error()) return false;
  for (const char* p : {"LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOAUTH"}) {
    if (absl::StartsWith(r.str, p)) return true;
  }
  return false;
}

const char* ReplyTypeName(RedisReply::Type t) {
  switch (t) {
    case RedisReply::Type::kNil:
      return " nil";
    case RedisReply::Type::kString:
      return " string";
    case RedisReply::Type::kStatus:
      return " status";
    case RedisReply::Type::kInteger:
      return "n integer";
    case RedisReply::Type::kArray:
      return "n array";
    case RedisReply::Type::kError:
      return "n error";
  }
  return " strange";
}

// A command in the Redis protocol (RESP): "*<argc>\r\n" then "$<len>\r\n<arg>\r\n"
// per argument. hiredis's own formatter builds it with sdscatfmt, several
// times slower; this is the hot path of every call.
void FormatCommand(const RedisClient::Command& args, std::string* out) {
  size_t size = 16;
  for (const std::string& a : args) size += a.size() + 24;
  out->clear();
  out->reserve(size);
  absl::StrAppend(out, "*", args.size(), "\r\n");
  for (const std::string& a : args) {
    absl::StrAppend(out, "$", a.size(), "\r\n");
    out->append(a);
    out->append("\r\n");
  }
}

bool IsNumericHost(const std::string& host) {
  in6_addr buf;
  return ::inet_pton(AF_INET, host.c_str(), &buf) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), &buf) == 1;
}

absl::Status Timeout(absl::string_view what) {
  absl::Status s = absl::UnavailableError(what);
  s.SetPayload(kTimeoutPayload, absl::Cord("1"));
  return s;
}

// Resolves host names on a thread of its own, so that a slow DNS server never
// stalls the I/O thread (whose timers enforce every deadline). Started only
// for a host that is not a numeric address.
class Resolver {
 public:
  using Done = absl::AnyInvocable<void(absl::StatusOr<std::string>) &&>;
  Resolver() : thread_([this] { Loop(); }) {}
  ~Resolver() {
    {
      absl::MutexLock l(&mu_);
      stop_ = true;
    }
    thread_.join();
  }
  // `done` runs on the resolver thread with the first address found.
  void Resolve(std::string host, Done done) {
    absl::MutexLock l(&mu_);
    queue_.emplace_back(std::move(host), std::move(done));
  }

 private:
  void Loop() {
    for (;;) {
      std::pair<std::string, Done> job;
      {
        absl::MutexLock l(&mu_);
        mu_.Await(absl::Condition(this, &Resolver::HasWork));
        if (stop_ && queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* res = nullptr;
      const int rc = ::getaddrinfo(job.first.c_str(), nullptr, &hints, &res);
      if (rc != 0 || res == nullptr) {
        std::move(job.second)(absl::UnavailableError(
            absl::StrCat("cannot resolve ", job.first, ": ", gai_strerror(rc))));
        continue;
      }
      // Prefer IPv4: "localhost" often lists ::1 first, and Redis's default
      // bind is 127.0.0.1.
      addrinfo* pick = res;
      for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
          pick = a;
          break;
        }
      }
      char buf[INET6_ADDRSTRLEN] = {0};
      const void* addr =
          pick->ai_family == AF_INET6
              ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(pick->ai_addr)->sin6_addr)
              : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(pick->ai_addr)->sin_addr);
      ::inet_ntop(pick->ai_family, addr, buf, sizeof(buf));
      ::freeaddrinfo(res);
      std::move(job.second)(std::string(buf));
    }
  }

  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); }

  absl::Mutex mu_;
  std::deque<std::pair<std::string, Done>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace

bool IsRedisTimeout(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable &&
         status.GetPayload(kTimeoutPayload).has_value();
}

// Everything below runs on the I/O thread unless it says otherwise.
class RedisClient::Impl {
 public:
  Impl(RedisClientOptions options, std::unique_ptr<EventLoop> loop)
      : options_(std::move(options)),
        where_(absl::StrCat("redis at ", options_.address.ToString())),
        loop_(std::move(loop)),
        breaker_(options_.breaker) {
    conns_.resize(options_.connections);
    for (int i = 0; i < options_.connections; ++i) {
      conns_[i] = std::make_unique<Conn>();
      conns_[i]->index = i;
      conns_[i]->backoff = options_.reconnect_min;
    }
    if (!options_.address.is_unix() && !IsNumericHost(options_.address.host)) {
      resolver_ = std::make_unique<Resolver>();
    }
  }

  // Any thread but the I/O thread.
  void Shutdown() {
    absl::Notification closed;
    loop_->Post([this, &closed] {
      shutting_down_ = true;
      loop_->CancelTimer(probe_timer_);
      for (auto& c : conns_) {
        loop_->CancelTimer(c->reconnect_timer);
        CloseConn(c.get(), "client shutting down");
      }
      closed.Notify();
    });
    closed.WaitForNotification();
    resolver_.reset();
    loop_.reset();  // runs what is still posted or pending: it all fails fast now
  }

  // Any thread.
  void Start() {
    loop_->Post([this] {
      for (auto& c : conns_) Connect(c.get());
    });
  }

  // Any thread: waits (bounded) for the first handshake's outcome.
  absl::Status WaitForStart(absl::Duration timeout) {
    absl::MutexLock l(&mu_);
    mu_.AwaitWithTimeout(
        absl::Condition(
            +[](std::optional<absl::Status>* s) { return s->has_value(); }, &start_outcome_),
        timeout);
    if (!start_outcome_.has_value()) {
      FANOUT_LOG(WARNING) << where_ << ": no connection within " << absl::FormatDuration(timeout)
                          << " at start; calls fail at once until it answers";
      return absl::OkStatus();
    }
    return *start_outcome_;
  }

  // Any thread.
  void Submit(std::vector<Command> commands, absl::Time deadline, PipelineDone done) {
    if (commands.empty() ||
        std::any_of(commands.begin(), commands.end(), [](const Command& c) { return c.empty(); })) {
      std::move(done)(absl::InvalidArgumentError("empty Redis command"));
      return;
    }
    if (!breaker_.Allows()) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      std::move(done)(absl::UnavailableError(
          absl::StrCat(where_, ": circuit open (last failure: ", LastError(), ")")));
      return;
    }
    if (ready_count_.load(std::memory_order_acquire) == 0) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      std::move(done)(absl::UnavailableError(
          absl::StrCat(where_, ": not connected (last error: ", LastError(), ")")));
      return;
    }
    if (deadline <= absl::Now()) {
      deadline_exceeded_.fetch_add(1, std::memory_order_relaxed);
      std::move(done)(absl::DeadlineExceededError("deadline passed before the Redis call"));
      return;
    }
    auto req = std::make_unique<Request>();
    req->kind = Request::Kind::kUser;
    req->commands = std::move(commands);
    req->deadline = deadline;
    req->done = std::move(done);
    loop_->Post([this, req = std::move(req)]() mutable { Dispatch(req.release()); });
  }

  // Any thread.
  void RunAfter(absl::Duration delay, absl::AnyInvocable<void() &&> task) {
    loop_->Post([this, delay, task = std::move(task)]() mutable {
      loop_->AddTimer(delay, std::move(task));
    });
  }

  bool Available() const {
    return breaker_.Allows() && ready_count_.load(std::memory_order_acquire) > 0;
  }

  RedisClientStats Stats() const {
    RedisClientStats s;
    s.commands = commands_.load(std::memory_order_relaxed);
    s.refused = refused_.load(std::memory_order_relaxed);
    s.timeouts = timeouts_.load(std::memory_order_relaxed);
    s.deadline_exceeded = deadline_exceeded_.load(std::memory_order_relaxed);
    s.connection_losses = connection_losses_.load(std::memory_order_relaxed);
    s.connect_failures = connect_failures_.load(std::memory_order_relaxed);
    s.circuit_opens = circuit_opens_.load(std::memory_order_relaxed);
    s.ready_connections = ready_count_.load(std::memory_order_relaxed);
    s.circuit = breaker_.state();
    return s;
  }

  const RedisClientOptions& options() const { return options_; }

 private:
  struct Conn;
  struct Request;

  // One hiredis context and its registration with the loop. hiredis's event
  // hooks get a Socket; it outlives the context by one loop turn, so that an
  // event collected before the context was freed finds it marked dead.
  struct Socket {
    Impl* impl;
    Conn* conn;
    redisAsyncContext* ac;
    EventLoop::WatchId watch = 0;
    bool read = false;
    bool write = false;
    bool dead = false;
  };

  struct Conn {
    enum class State { kDown, kConnecting, kReady };
    int index = 0;
    State state = State::kDown;
    redisAsyncContext* ac = nullptr;  // null while down or being closed by us
    uint64_t generation = 0;          // one per connection attempt
    size_t in_flight = 0;             // commands awaiting their reply
    // Requests sent on it (handshake aside), oldest first, with the monotonic
    // time their answer is due. Redis answers a connection in order and
    // every request gets the same command_timeout, so only the oldest can be
    // late: one timer per connection, armed for it, instead of one per
    // request.
    std::deque<std::pair<absl::Duration, Request*>> waiting;
    EventLoop::TimerId due_timer = EventLoop::kNoTimer;
    EventLoop::TimerId connect_timer = EventLoop::kNoTimer;
    EventLoop::TimerId reconnect_timer = EventLoop::kNoTimer;
    absl::Duration backoff;
    std::string close_reason;  // why we closed it, for the calls it fails
  };

  struct Slot {
    Request* req;
    size_t index;
  };

  // A pipeline in flight. Owned by the loop: freed once finished and every
  // hiredis callback registered for it has run (a reply, or NULL when its
  // context is freed).
  struct Request {
    enum class Kind { kUser, kHandshake, kProbe };
    Kind kind = Kind::kUser;
    std::vector<Command> commands;
    std::vector<RedisReply> replies;
    std::vector<Slot> slots;
    PipelineDone done;
    absl::Time deadline = absl::InfiniteFuture();
    Conn* conn = nullptr;
    uint64_t conn_generation = 0;
    size_t outstanding = 0;
    size_t received = 0;
    bool finished = false;
    bool timed_out = false;
    bool unwell_reply = false;  // an availability error reply (LOADING, BUSY, ...)
    bool waiting = false;       // in conn->waiting
    EventLoop::TimerId caller_timer = EventLoop::kNoTimer;
  };

  std::string LastError() const {
    absl::MutexLock l(&mu_);
    return last_error_.empty() ? "none" : last_error_;
  }
  void SetLastError(const std::string& e) {
    absl::MutexLock l(&mu_);
    last_error_ = e;
  }

  absl::Duration Jitter(absl::Duration d) { return d * absl::Uniform(rng_, 0.8, 1.2); }

  // ---- Connections ---------------------------------------------------------

  // The one place connections are built (a TLS or Cluster build changes this).
  void Connect(Conn* c) {
    if (shutting_down_ || c->state != Conn::State::kDown) return;
    ++c->generation;
    c->state = Conn::State::kConnecting;
    c->close_reason.clear();
    const uint64_t gen = c->generation;
    c->connect_timer = loop_->AddTimer(options_.connect_timeout, [this, c, gen] {
      c->connect_timer = EventLoop::kNoTimer;
      if (c->generation != gen || c->state != Conn::State::kConnecting) return;
      AttemptFailed(
          c, absl::StrCat("no handshake within ", absl::FormatDuration(options_.connect_timeout)));
    });
    if (resolver_ != nullptr) {
      resolver_->Resolve(options_.address.host, [this, c, gen](absl::StatusOr<std::string> ip) {
        loop_->Post([this, c, gen, ip = std::move(ip)] {
          if (c->generation != gen || c->state != Conn::State::kConnecting || c->ac != nullptr) {
            return;
          }
          if (!ip.ok()) {
            AttemptFailed(c, std::string(ip.status().message()));
            return;
          }
          ConnectTo(c, *ip);
        });
      });
      return;
    }
    ConnectTo(c, options_.address.host);
  }

  void ConnectTo(Conn* c, const std::string& host) {
    if (shutting_down_) return;
    redisAsyncContext* ac = options_.address.is_unix()
                                ? redisAsyncConnectUnix(options_.address.unix_path.c_str())
                                : redisAsyncConnect(host.c_str(), options_.address.port);
    if (ac == nullptr) {
      AttemptFailed(c, "out of memory");
      return;
    }
    if (ac->err) {
      std::string reason = ac->errstr ? ac->errstr : "connect failed";
      redisAsyncFree(ac);
      AttemptFailed(c, reason);
      return;
    }
    auto* s = new Socket{this, c, ac};
    s->watch = loop_->WatchFd(ac->c.fd, [s](uint32_t events) { s->impl->OnEvents(s, events); });
    ac->ev.data = s;
    ac->ev.addRead = [](void* p) { Interest(p, +1, 0); };
    ac->ev.delRead = [](void* p) { Interest(p, -1, 0); };
    ac->ev.addWrite = [](void* p) { Interest(p, 0, +1); };
    ac->ev.delWrite = [](void* p) { Interest(p, 0, -1); };
    ac->ev.cleanup = [](void* p) {
      auto* sock = static_cast<Socket*>(p);
      sock->impl->OnContextGone(sock);
    };
    c->ac = ac;

    // The handshake is queued at once; hiredis writes it when the connect
    // completes. Its answers make the connection ready.
    std::vector<Command> hello;
    if (!options_.password.empty()) hello.push_back({"AUTH", options_.password});
    if (options_.db != 0) hello.push_back({"SELECT", std::to_string(options_.db)});
    hello.push_back({"PING"});
    auto* req = new Request();
    req->kind = Request::Kind::kHandshake;
    req->commands = std::move(hello);
    const uint64_t gen = c->generation;
    req->done = [this, c, gen, has_auth = !options_.password.empty(),
                 has_select = options_.db != 0](absl::StatusOr<std::vector<RedisReply>> r) {
      OnHandshake(c, gen, has_auth, has_select, std::move(r));
    };
    Send(req, c);
  }

  static void Interest(void* p, int read, int write) {
    auto* s = static_cast<Socket*>(p);
    if (s->dead) return;
    if (read != 0) s->read = read > 0;
    if (write != 0) s->write = write > 0;
    s->impl->loop_->SetInterest(s->watch, s->read, s->write);
  }

  void OnEvents(Socket* s, uint32_t events) {
    // hiredis may free the context (and mark the socket dead) in either call.
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && s->read) redisAsyncHandleRead(s->ac);
    if (!s->dead && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && s->write) {
      redisAsyncHandleWrite(s->ac);
    }
  }

  // hiredis is freeing `s->ac`: on our request (CloseConn cleared conn->ac
  // first) or on its own after an error (connect refused, reset, EOF).
  void OnContextGone(Socket* s) {
    s->dead = true;
    loop_->Unwatch(s->watch);
    Conn* c = s->conn;
    if (c->ac == s->ac) {
      c->ac = nullptr;
      std::string reason = s->ac->errstr && *s->ac->errstr ? s->ac->errstr : "connection closed";
      ConnDown(c, reason);
    }
    loop_->Post([s] { delete s; });
  }

  void OnHandshake(Conn* c, uint64_t gen, bool has_auth, bool has_select,
                   absl::StatusOr<std::vector<RedisReply>> replies) {
    if (c->generation != gen || c->ac == nullptr || c->state != Conn::State::kConnecting) return;
    if (!replies.ok()) return;  // the context is going; OnContextGone or the timer reports it
    size_t i = 0;
    absl::Status refused;
    if (has_auth) {
      const RedisReply& r = (*replies)[i++];
      if (r.is_error() && absl::StrContains(r.str, "without any password configured")) {
        // A password fanout has and Redis does not: harmless (Redis is
        // being moved to a password, or away from one), worth a word.
        if (!warned_no_password_) {
          FANOUT_LOG(WARNING) << where_ << " has no password but one is configured: " << r.str;
          warned_no_password_ = true;
        }
      } else if (r.is_error()) {
        refused = absl::PermissionDeniedError(absl::StrCat(where_, " refused AUTH: ", r.str));
      }
    }
    if (refused.ok() && has_select) {
      const RedisReply& r = (*replies)[i++];
      if (r.is_error()) {
        refused = absl::InvalidArgumentError(
            absl::StrCat(where_, " refused SELECT ", options_.db, ": ", r.str));
      }
    }
    if (refused.ok()) {
      const RedisReply& r = (*replies)[i];
      if (r.is_error() && absl::StartsWith(r.str, "NOAUTH")) {
        refused =
            absl::PermissionDeniedError(absl::StrCat(where_, " requires a password: ", r.str));
      } else if (IsAvailabilityError(r)) {
        // LOADING, BUSY, ...: Redis, but not ready yet. Not a start-up error.
        refused = absl::UnavailableError(absl::StrCat(where_, " answered PING with ", r.str));
      } else if (r.type != RedisReply::Type::kStatus || r.str != "PONG") {
        refused = absl::FailedPreconditionError(
            absl::StrCat(where_, " answered PING with ",
                         r.is_error() ? r.str : absl::StrCat("a", ReplyTypeName(r.type), " reply"),
                         ", not PONG: is it a Redis server?"));
      }
    }
    if (!refused.ok()) {
      // Inside a hiredis callback: close after it returns.
      loop_->Post([this, c, gen, refused] {
        if (c->generation != gen || c->state != Conn::State::kConnecting) return;
        if (refused.code() != absl::StatusCode::kUnavailable) SetStartOutcome(refused);
        CloseConn(c, std::string(refused.message()));
      });
      return;
    }
    loop_->CancelTimer(c->connect_timer);
    c->connect_timer = EventLoop::kNoTimer;
    c->state = Conn::State::kReady;
    c->backoff = options_.reconnect_min;
    ready_count_.fetch_add(1, std::memory_order_acq_rel);
    if (failure_streak_ > 0) {
      FANOUT_LOG(INFO) << where_ << ": connected (connection " << c->index << ") after "
                       << failure_streak_ << " failures";
    }
    failure_streak_ = 0;
    last_logged_.clear();
    SetStartOutcome(absl::OkStatus());
    if (breaker_.state() == CircuitBreaker::State::kOpen) {
      loop_->CancelTimer(probe_timer_);
      probe_timer_ = EventLoop::kNoTimer;
      loop_->Post([this] { Probe(); });
    }
  }

  void SetStartOutcome(absl::Status s) {
    absl::MutexLock l(&mu_);
    if (!start_outcome_.has_value()) start_outcome_ = std::move(s);
  }

  // A connection attempt failed before hiredis had a context, or timed out.
  void AttemptFailed(Conn* c, const std::string& reason) {
    if (c->ac != nullptr) {
      CloseConn(c, reason);
      return;
    }
    ConnDown(c, reason);
  }

  // Closes a connection we no longer trust. Must not run inside a hiredis
  // callback of the same context.
  void CloseConn(Conn* c, const std::string& reason, bool count_failure = true) {
    if (c->ac == nullptr) {
      if (c->state == Conn::State::kConnecting) ConnDown(c, reason, count_failure);
      return;
    }
    redisAsyncContext* ac = c->ac;
    c->ac = nullptr;
    c->close_reason = reason;
    // Fails every request still on it (NULL replies), then OnContextGone.
    redisAsyncFree(ac);
    ConnDown(c, reason, count_failure);
  }

  // `c` has no context any more: count, log, reconnect later. A close after
  // a command timed out was already counted as that command's failure.
  void ConnDown(Conn* c, const std::string& reason, bool count_failure = true) {
    // Its requests were failed (and maybe freed) with the context.
    c->waiting.clear();
    loop_->CancelTimer(c->due_timer);
    c->due_timer = EventLoop::kNoTimer;
    if (c->state == Conn::State::kDown) return;
    const bool was_ready = c->state == Conn::State::kReady;
    c->state = Conn::State::kDown;
    c->in_flight = 0;
    loop_->CancelTimer(c->connect_timer);
    c->connect_timer = EventLoop::kNoTimer;
    if (was_ready) ready_count_.fetch_sub(1, std::memory_order_acq_rel);
    if (shutting_down_) return;
    if (was_ready) {
      connection_losses_.fetch_add(1, std::memory_order_relaxed);
    } else {
      connect_failures_.fetch_add(1, std::memory_order_relaxed);
    }
    SetLastError(reason);
    // An unreachable Redis at start is not a start-up error; something that
    // does not speak Redis's protocol at that address is.
    if (!was_ready && absl::StartsWith(reason, "Protocol error")) {
      SetStartOutcome(absl::FailedPreconditionError(
          absl::StrCat(where_, " does not speak the Redis protocol: ", reason)));
    } else if (!was_ready) {
      SetStartOutcome(absl::OkStatus());
    }
    ++failure_streak_;
    if (reason != last_logged_ || absl::Now() - last_log_time_ > absl::Seconds(30)) {
      FANOUT_LOG(WARNING) << where_ << ": " << (was_ready ? "connection lost" : "cannot connect")
                          << " (connection " << c->index << "): " << reason
                          << "; reconnecting in the background";
      last_logged_ = reason;
      last_log_time_ = absl::Now();
    }
    if (count_failure) Failure();
    const absl::Duration delay = Jitter(c->backoff);
    c->backoff = std::min(c->backoff * 2, options_.reconnect_max);
    c->reconnect_timer = loop_->AddTimer(delay, [this, c] {
      c->reconnect_timer = EventLoop::kNoTimer;
      Connect(c);
    });
  }

  // ---- Circuit breaker -----------------------------------------------------

  void Failure() { OnTransition(breaker_.RecordFailure()); }

  void OnTransition(CircuitBreaker::Transition t) {
    switch (t) {
      case CircuitBreaker::Transition::kNone:
        return;
      case CircuitBreaker::Transition::kOpened:
        circuit_opens_.fetch_add(1, std::memory_order_relaxed);
        opened_at_ = absl::Now();
        FANOUT_LOG(WARNING) << where_ << ": circuit open (last failure: " << LastError()
                            << "); calls fail at once while probes run";
        ScheduleProbe();
        return;
      case CircuitBreaker::Transition::kHalfOpened:
        FANOUT_LOG(INFO) << where_ << ": answers again; trying calls (circuit half-open)";
        return;
      case CircuitBreaker::Transition::kClosed:
        FANOUT_LOG(INFO) << where_ << ": circuit closed after "
                         << absl::FormatDuration(
                                absl::Trunc(absl::Now() - opened_at_, absl::Milliseconds(1)));
        return;
    }
  }

  void ScheduleProbe() {
    if (shutting_down_ || probe_timer_ != EventLoop::kNoTimer) return;
    probe_timer_ = loop_->AddTimer(Jitter(breaker_.ProbeDelay()), [this] {
      probe_timer_ = EventLoop::kNoTimer;
      Probe();
    });
  }

  void Probe() {
    if (shutting_down_ || breaker_.state() != CircuitBreaker::State::kOpen) return;
    Conn* c = PickConn();
    if (c == nullptr) {  // reconnects are under way; a ready one probes at once
      ScheduleProbe();
      return;
    }
    auto* req = new Request();
    req->kind = Request::Kind::kProbe;
    req->commands = {{"PING"}};
    req->deadline = absl::Now() + options_.command_timeout;
    req->done = [this](absl::StatusOr<std::vector<RedisReply>> r) {
      const bool ok = r.ok() && !r->empty() && !(*r)[0].is_error();
      const CircuitBreaker::Transition t = breaker_.RecordProbe(ok);
      OnTransition(t);
      if (t == CircuitBreaker::Transition::kNone) ScheduleProbe();
    };
    Send(req, c);
  }

  // ---- Requests ------------------------------------------------------------

  Conn* PickConn() {
    Conn* best = nullptr;
    for (auto& c : conns_) {
      if (c->state != Conn::State::kReady || c->ac == nullptr) continue;
      if (best == nullptr || c->in_flight < best->in_flight) best = c.get();
    }
    return best;
  }

  void Dispatch(Request* req) {
    if (shutting_down_) {
      Finish(req, absl::UnavailableError(absl::StrCat(where_, ": client shutting down")));
      MaybeDelete(req);
      return;
    }
    Conn* c = PickConn();
    if (c == nullptr) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      Finish(req, absl::UnavailableError(
                      absl::StrCat(where_, ": not connected (last error: ", LastError(), ")")));
      MaybeDelete(req);
      return;
    }
    Send(req, c);
  }

  // Queues `req` on `c` and arms its timers.
  void Send(Request* req, Conn* c) {
    const absl::Duration remaining = req->deadline - absl::Now();
    if (req->kind != Request::Kind::kHandshake && remaining <= absl::ZeroDuration()) {
      deadline_exceeded_.fetch_add(1, std::memory_order_relaxed);
      Finish(req, absl::DeadlineExceededError("deadline passed before the Redis call was sent"));
      MaybeDelete(req);
      return;
    }
    req->conn = c;
    req->conn_generation = c->generation;
    const size_t n = req->commands.size();
    req->replies.resize(n);
    req->slots.resize(n);
    size_t sent = 0;
    std::string resp;
    for (size_t i = 0; i < n; ++i) {
      req->slots[i] = Slot{req, i};
      FormatCommand(req->commands[i], &resp);
      if (redisAsyncFormattedCommand(c->ac, &Impl::OnReply, &req->slots[i], resp.data(),
                                     resp.size()) != REDIS_OK) {
        break;
      }
      ++sent;
      ++req->outstanding;
      ++c->in_flight;
    }
    commands_.fetch_add(sent, std::memory_order_relaxed);
    if (sent < n) {
      Finish(req, absl::UnavailableError(absl::StrCat(where_, ": connection is closing")));
      MaybeDelete(req);
      return;
    }
    // The arguments are in hiredis's buffer now.
    req->commands.clear();
    req->commands.shrink_to_fit();
    if (req->kind == Request::Kind::kHandshake) return;  // the connect timer bounds it
    if (remaining < options_.command_timeout) {
      req->caller_timer = loop_->AddTimer(remaining, [this, req] { OnCallerDeadline(req); });
    }
    c->waiting.emplace_back(EventLoop::MonotonicNow() + options_.command_timeout, req);
    req->waiting = true;
    if (c->due_timer == EventLoop::kNoTimer) ArmDue(c);
  }

  // Arms `c`'s timer for its oldest request. A request answered meanwhile
  // leaves the timer as it is: it fires, finds a later head, and re-arms.
  void ArmDue(Conn* c) {
    if (c->waiting.empty()) return;
    const uint64_t gen = c->generation;
    c->due_timer =
        loop_->AddTimer(c->waiting.front().first - EventLoop::MonotonicNow(), [this, c, gen] {
          c->due_timer = EventLoop::kNoTimer;
          if (c->generation != gen || c->waiting.empty()) return;
          if (c->waiting.front().first > EventLoop::MonotonicNow()) {
            ArmDue(c);
            return;
          }
          OnOwnTimeout(c->waiting.front().second);
        });
  }

  void Unwait(Request* req) {
    if (!req->waiting) return;
    req->waiting = false;
    auto& w = req->conn->waiting;
    if (!w.empty() && w.front().second == req) {
      w.pop_front();
      return;
    }
    for (auto it = w.begin(); it != w.end(); ++it) {
      if (it->second == req) {
        w.erase(it);
        return;
      }
    }
  }

  static void OnReply(redisAsyncContext* ac, void* reply, void* privdata) {
    auto* slot = static_cast<Slot*>(privdata);
    Request* req = slot->req;
    Impl* self = static_cast<Socket*>(ac->ev.data)->impl;
    self->HandleReply(ac, req, slot->index, static_cast<redisReply*>(reply));
  }

  void HandleReply(redisAsyncContext* ac, Request* req, size_t index, redisReply* reply) {
    --req->outstanding;
    Conn* c = req->conn;
    if (c->in_flight > 0 && c->generation == req->conn_generation) --c->in_flight;
    if (reply == nullptr) {
      if (!req->finished) {
        std::string reason = !c->close_reason.empty() && c->generation == req->conn_generation
                                 ? c->close_reason
                                 : (ac->errstr && *ac->errstr ? ac->errstr : "connection closed");
        Finish(req, absl::UnavailableError(absl::StrCat(where_, ": ", reason)));
      }
      MaybeDelete(req);
      return;
    }
    RedisReply& r = req->replies[index];
    r = Convert(reply);
    if (IsAvailabilityError(r)) req->unwell_reply = true;
    if (++req->received == req->slots.size()) {
      Unwait(req);
      if (req->kind == Request::Kind::kUser && !req->timed_out) {
        if (req->unwell_reply) {
          SetLastError(absl::StrCat("Redis answered ", r.str));
          Failure();
        } else {
          OnTransition(breaker_.RecordSuccess());
        }
      }
      if (!req->finished) Finish(req, std::move(req->replies));
    }
    MaybeDelete(req);
  }

  void OnCallerDeadline(Request* req) {
    req->caller_timer = EventLoop::kNoTimer;
    if (req->finished) return;
    deadline_exceeded_.fetch_add(1, std::memory_order_relaxed);
    // The command stays in flight until its own timeout: a slow answer is
    // not a reason to drop a connection others share.
    Finish(req, absl::DeadlineExceededError("deadline passed before Redis answered"));
  }

  void OnOwnTimeout(Request* req) {
    req->timed_out = true;
    timeouts_.fetch_add(1, std::memory_order_relaxed);
    const std::string reason =
        absl::StrCat("no answer within ", absl::FormatDuration(options_.command_timeout));
    SetLastError(reason);
    Failure();
    // The caller hears of the timeout after the connection is closed (and
    // counted), not of the close it caused.
    PipelineDone done;
    if (!req->finished) {
      req->finished = true;
      loop_->CancelTimer(req->caller_timer);
      req->caller_timer = EventLoop::kNoTimer;
      done = std::move(req->done);
    }
    Conn* c = req->conn;
    // Closing fails what is still outstanding, which may free `req`.
    if (c->ac != nullptr) {
      CloseConn(c, absl::StrCat("closed after a command got ", reason), /*count_failure=*/false);
    } else {
      Unwait(req);
      MaybeDelete(req);
    }
    if (done) std::move(done)(Timeout(absl::StrCat(where_, ": ", reason)));
  }

  void Finish(Request* req, absl::StatusOr<std::vector<RedisReply>> result) {
    req->finished = true;
    loop_->CancelTimer(req->caller_timer);
    req->caller_timer = EventLoop::kNoTimer;
    PipelineDone done = std::move(req->done);
    if (done) std::move(done)(std::move(result));
  }

  void MaybeDelete(Request* req) {
    if (!req->finished || req->outstanding > 0) return;
    loop_->CancelTimer(req->caller_timer);
    delete req;
  }

  const RedisClientOptions options_;
  const std::string where_;  // "redis at 127.0.0.1:6379", for messages
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<Resolver> resolver_;
  CircuitBreaker breaker_;

  mutable absl::Mutex mu_;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> start_outcome_ ABSL_GUARDED_BY(mu_);

  std::atomic<int> ready_count_{0};
  std::atomic<uint64_t> commands_{0};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> timeouts_{0};
  std::atomic<uint64_t> deadline_exceeded_{0};
  std::atomic<uint64_t> connection_losses_{0};
  std::atomic<uint64_t> connect_failures_{0};
  std::atomic<uint64_t> circuit_opens_{0};

  // I/O thread only.
  std::vector<std::unique_ptr<Conn>> conns_;
  bool shutting_down_ = false;
  EventLoop::TimerId probe_timer_ = EventLoop::kNoTimer;
  absl::Time opened_at_;
  int failure_streak_ = 0;
  bool warned_no_password_ = false;
  std::string last_logged_;
  absl::Time last_log_time_ = absl::InfinitePast();
  absl::BitGen rng_;
};

absl::StatusOr<std::shared_ptr<RedisClient>> RedisClient::Create(RedisClientOptions options) {
  if (options.connections < 1) return absl::InvalidArgumentError("connections must be at least 1");
  if (options.command_timeout <= absl::ZeroDuration() ||
      options.connect_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeouts must be more than zero");
  }
  if (!options.address.is_unix() && (options.address.host.empty() || options.address.port <= 0)) {
    return absl::InvalidArgumentError("no Redis address");
  }
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Start(options.name);
  if (!loop.ok()) return loop.status();
  const absl::Duration wait = options.start_wait;
  auto impl = std::make_unique<Impl>(std::move(options), *std::move(loop));
  impl->Start();
  std::shared_ptr<RedisClient> client(new RedisClient(std::move(impl)));
  if (wait > absl::ZeroDuration()) {
    absl::Status s = client->impl_->WaitForStart(wait);
    if (!s.ok()) return s;
  }
  return client;
}

RedisClient::RedisClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RedisClient::~RedisClient() { impl_->Shutdown(); }

void RedisClient::Run(Command command, absl::Time deadline, CommandDone done) {
  std::vector<Command> one;
  one.push_back(std::move(command));
  impl_->Submit(std::move(one), deadline,
                [done = std::move(done)](absl::StatusOr<std::vector<RedisReply>> r) mutable {
                  if (!r.ok()) {
                    std::move(done)(r.status());
                    return;
                  }
                  std::move(done)(std::move(r->front()));
                });
}

void RedisClient::RunPipeline(std::vector<Command> commands, absl::Time deadline,
                              PipelineDone done) {
  impl_->Submit(std::move(commands), deadline, std::move(done));
}

void RedisClient::RunAfter(absl::Duration delay, absl::AnyInvocable<void() &&> task) {
  impl_->RunAfter(delay, std::move(task));
}

bool RedisClient::Available() const { return impl_->Available(); }
RedisClientStats RedisClient::Stats() const { return impl_->Stats(); }
const RedisClientOptions& RedisClient::options() const { return impl_->options(); }

}  // namespace fanout::cache
