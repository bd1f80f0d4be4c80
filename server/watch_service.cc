#include "server/watch_service.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/grpc_status.h"
#include "server/validation.h"

namespace fanout::server {

using fanout::v1::WatchEvent;

namespace {

// Bytes an event is charged in a stream's buffer.
uint64_t Charge(const WatchEvent& e) { return e.ByteSizeLong() + 64; }

WatchEvent Event(fanout::v1::EventKind kind) {
  WatchEvent e;
  e.set_kind(kind);
  return e;
}

}  // namespace

// What the streams share with the service and outlive it with: the set of
// open streams and the counters. A stream unregisters here in OnDone; reads
// for UPDATED events answer here, whenever they finish.
class WatchHub {
 public:
  explicit WatchHub(uint64_t buffer_bytes, absl::Duration stall)
      : buffer_bytes_(buffer_bytes), stall_(stall) {}

  absl::Mutex mu;
  absl::flat_hash_set<WatchStream*> streams ABSL_GUARDED_BY(mu);
  bool shut_down ABSL_GUARDED_BY(mu) = false;
  WatchStats stats ABSL_GUARDED_BY(mu);

  uint64_t buffer_bytes() const { return buffer_bytes_; }
  absl::Duration stall() const { return stall_; }

  void Unregister(WatchStream* s) {
    absl::MutexLock l(&mu);
    streams.erase(s);
    stats.open = static_cast<int64_t>(streams.size());
  }
  // Lock-free: called with a stream's lock held, which may itself be taken
  // under mu.
  void CountEvent() { events_.fetch_add(1, std::memory_order_relaxed); }
  void CountCutOff() { cut_off_.fetch_add(1, std::memory_order_relaxed); }
  WatchStats Stats() {
    absl::MutexLock l(&mu);
    WatchStats s = stats;
    s.events = events_.load(std::memory_order_relaxed);
    s.cut_off = cut_off_.load(std::memory_order_relaxed);
    return s;
  }
  // UPDATED for `key` of `ns` to the value streams that watch it.
  void Updated(const std::string& ns, const std::string& key,
               const absl::StatusOr<cache::ReadResult>& result);

 private:
  const uint64_t buffer_bytes_;
  const absl::Duration stall_;
  std::atomic<uint64_t> events_{0};
  std::atomic<uint64_t> cut_off_{0};
};

// One Watch call. Events queue in a bounded buffer and are written one at a
// time; the reactor deletes itself in OnDone.
class WatchStream final : public grpc::ServerWriteReactor<WatchEvent> {
 public:
  WatchStream(std::shared_ptr<WatchHub> hub, grpc::CallbackServerContext* context,
              const fanout::v1::WatchRequest& request)
      : hub_(std::move(hub)),
        context_(context),
        ns_(request.namespace_()),
        keys_(request.keys().begin(), request.keys().end()),
        values_(request.values()) {
    for (const std::string& p : request.prefixes()) {
      if (p.empty()) {
        all_ = true;
      } else {
        prefixes_.push_back(p);
      }
    }
    if (keys_.empty() && prefixes_.empty()) all_ = true;
  }

  const std::string& ns() const { return ns_; }
  bool values() const { return values_; }
  const absl::flat_hash_set<std::string>& keys() const { return keys_; }

  // Whether `key` is watched.
  bool Watches(absl::string_view key) const {
    if (all_ || keys_.contains(key)) return true;
    for (const std::string& p : prefixes_) {
      if (absl::StartsWith(key, p)) return true;
    }
    return false;
  }
  // Whether some watched key may start with `prefix`.
  bool Overlaps(absl::string_view prefix) const {
    if (all_) return true;
    for (const std::string& p : prefixes_) {
      if (absl::StartsWith(prefix, p) || absl::StartsWith(p, prefix)) return true;
    }
    return false;
  }

  // Queues `event`; cuts the stream off when its buffer would pass the
  // budget. A heartbeat is not queued behind other events (they show the
  // stream is alive already).
  void Push(WatchEvent event) {
    bool start = false;
    std::optional<grpc::Status> end;
    {
      absl::MutexLock l(&mu_);
      if (finished_) return;
      if (event.kind() == fanout::v1::HEARTBEAT && (writing_ || !queue_.empty())) return;
      const uint64_t charge = Charge(event);
      if (queued_bytes_ + charge > hub_->buffer_bytes()) {
        end = CutOffLocked(absl::StrCat(
            "this stream's consumer fell behind by more than watch.buffer_bytes (",
            hub_->buffer_bytes(), " bytes) of events; watch again and re-read the keys"));
      } else {
        queued_bytes_ += charge;
        queue_.push_back(std::move(event));
        start = TakeNextLocked();
      }
    }
    if (start) StartWrite(&current_);
    if (end.has_value()) End(*std::move(end), /*cancel_held=*/true);
  }

  // Ends the stream with `status` now. With `cancel_held`, a write still in
  // flight (held by a consumer that does not read: a cut-off) is cancelled
  // first, since gRPC would wait for it before sending the status; that
  // consumer then sees CANCELLED. Without, the status follows the write in
  // flight (the drain's timeout bounds that wait at shutdown). Cancelling
  // before Finish keeps `this` alive: OnDone cannot run before Finish.
  void End(grpc::Status status, bool cancel_held = false) {
    bool cancel;
    {
      absl::MutexLock l(&mu_);
      if (finish_called_) return;
      finish_called_ = true;
      finished_ = true;
      queue_.clear();
      queued_bytes_ = 0;
      cancel = cancel_held && writing_;
    }
    if (cancel) context_->TryCancel();
    Finish(std::move(status));
  }

  // Called at each heartbeat: cuts off a stream whose write has been held
  // longer than the hub's stall limit.
  void CheckStall(absl::Time now) {
    std::optional<grpc::Status> end;
    {
      absl::MutexLock l(&mu_);
      if (finished_ || !writing_ || now - write_started_ < hub_->stall()) return;
      end = CutOffLocked(absl::StrCat("this stream's consumer has not read for ",
                                      absl::FormatDuration(now - write_started_),
                                      "; watch again and re-read the keys"));
    }
    End(*std::move(end), /*cancel_held=*/true);
  }

  void OnWriteDone(bool ok) override {
    bool start = false;
    bool end = false;
    {
      absl::MutexLock l(&mu_);
      writing_ = false;
      if (ok && !finished_) {
        start = TakeNextLocked();
      } else if (!ok) {
        end = true;
      }
    }
    if (ok) hub_->CountEvent();
    if (start) StartWrite(&current_);
    if (end) End(grpc::Status(grpc::StatusCode::CANCELLED, "the stream broke"));
  }

  void OnCancel() override { End(grpc::Status::CANCELLED); }

  void OnDone() override {
    hub_->Unregister(this);
    delete this;
  }

 private:
  bool TakeNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || queue_.empty()) return false;
    current_ = std::move(queue_.front());
    queue_.pop_front();
    queued_bytes_ -= Charge(current_);
    writing_ = true;
    write_started_ = absl::Now();
    return true;
  }
  grpc::Status CutOffLocked(const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    finished_ = true;
    queue_.clear();
    queued_bytes_ = 0;
    hub_->CountCutOff();
    return ToGrpcStatus(absl::ResourceExhaustedError(why));
  }

  const std::shared_ptr<WatchHub> hub_;
  grpc::CallbackServerContext* const context_;
  const std::string ns_;
  const absl::flat_hash_set<std::string> keys_;
  std::vector<std::string> prefixes_;
  bool all_ = false;
  const bool values_;

  absl::Mutex mu_;
  std::deque<WatchEvent> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  WatchEvent current_;  // owned by the write in flight while writing_
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time write_started_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // no more events
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
};

void WatchHub::Updated(const std::string& ns, const std::string& key,
                       const absl::StatusOr<cache::ReadResult>& result) {
  // A key gone, an origin down (a stale answer is not the new value): the
  // INVALIDATED already said what is known.
  if (!result.ok() || result->stale) return;
  WatchEvent e = Event(fanout::v1::UPDATED);
  e.set_key(key);
  e.set_version(result->version);
  e.set_value(result->value.ToString());
  absl::MutexLock l(&mu);
  for (WatchStream* s : streams) {
    if (s->values() && s->ns() == ns && s->Watches(key)) s->Push(e);
  }
}

// Invalidations, link changes and gaps waiting to be sent to the streams.
struct WatchPosts {
  absl::Mutex mu;
  std::deque<absl::AnyInvocable<void() &&>> queue ABSL_GUARDED_BY(mu);
  bool scheduled ABSL_GUARDED_BY(mu) = false;  // a Drain task is queued or running
  bool running ABSL_GUARDED_BY(mu) = false;    // ... and is running a send
  bool stopped ABSL_GUARDED_BY(mu) = false;    // the service is going
};

// The heartbeat timer's state, shared with its task so that a tick running
// as the service goes finds it stopped.
struct WatchTimer {
  absl::Mutex mu;
  bool stopped ABSL_GUARDED_BY(mu) = false;
  TimerId id ABSL_GUARDED_BY(mu) = kNoTimer;
};

namespace {

// Arms the next heartbeat of `timer` on `executor`.
void ArmHeartbeat(const std::shared_ptr<WatchTimer>& timer, const std::shared_ptr<WatchHub>& hub,
                  Executor* executor, absl::Duration period);

}  // namespace

WatchService::WatchService(const Config& config, cache::ReadPath* read_path,
                           cache::Invalidator* invalidator, Executor* executor)
    : config_(config),
      read_path_(read_path),
      invalidator_(invalidator),
      executor_(executor),
      timer_(std::make_shared<WatchTimer>()),
      hub_(std::make_shared<WatchHub>(config.watch.buffer_bytes, config.watch.heartbeat * 3)),
      posts_(std::make_shared<WatchPosts>()) {
  invalidator_->AddListener(this);
  ArmHeartbeat(timer_, hub_, executor_, config_.watch.heartbeat);
}

WatchService::~WatchService() {
  Shutdown();
  invalidator_->RemoveListener(this);
  // A send running on the executor finishes before the read path it may
  // read through goes; one not started yet never starts.
  absl::MutexLock l(&posts_->mu);
  posts_->stopped = true;
  posts_->queue.clear();
  posts_->mu.Await(absl::Condition(
      +[](bool* running) { return !*running; }, &posts_->running));
}

namespace {

// Runs what is queued in `posts`, in order, until nothing is (or the
// service is gone).
void Drain(const std::shared_ptr<WatchPosts>& posts) {
  for (;;) {
    absl::AnyInvocable<void() &&> send;
    {
      absl::MutexLock l(&posts->mu);
      posts->running = false;
      if (posts->queue.empty() || posts->stopped) {
        posts->scheduled = false;
        return;
      }
      send = std::move(posts->queue.front());
      posts->queue.pop_front();
      posts->running = true;
    }
    std::move(send)();
  }
}

}  // namespace

void WatchService::Post(absl::AnyInvocable<void() &&> send) {
  {
    absl::MutexLock l(&posts_->mu);
    if (posts_->stopped) return;
    posts_->queue.push_back(std::move(send));
    if (posts_->scheduled) return;
    posts_->scheduled = true;
  }
  executor_->Schedule([posts = posts_] { Drain(posts); });
}

namespace {

void Heartbeat(WatchHub& hub) {
  const absl::Time now = absl::Now();
  absl::MutexLock l(&hub.mu);
  for (WatchStream* s : hub.streams) {
    s->CheckStall(now);
    s->Push(Event(fanout::v1::HEARTBEAT));
  }
}

void ArmHeartbeat(const std::shared_ptr<WatchTimer>& timer, const std::shared_ptr<WatchHub>& hub,
                  Executor* executor, absl::Duration period) {
  absl::MutexLock l(&timer->mu);
  if (timer->stopped) return;
  timer->id = executor->ScheduleAfter(period, [timer, hub, executor, period] {
    {
      absl::MutexLock l(&timer->mu);
      if (timer->stopped) return;
      timer->id = kNoTimer;
    }
    Heartbeat(*hub);
    ArmHeartbeat(timer, hub, executor, period);
  });
}

}  // namespace

void WatchService::Shutdown() {
  TimerId id;
  {
    absl::MutexLock l(&timer_->mu);
    timer_->stopped = true;
    id = timer_->id;
    timer_->id = kNoTimer;
  }
  if (id != kNoTimer) executor_->CancelTimer(id);
  absl::MutexLock l(&hub_->mu);
  hub_->shut_down = true;
  for (WatchStream* s : hub_->streams) {
    s->End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "fanoutd is shutting down"));
  }
}

WatchStats WatchService::Stats() const { return hub_->Stats(); }

grpc::ServerWriteReactor<WatchEvent>* WatchService::Open(grpc::CallbackServerContext* context,
                                                         const fanout::v1::WatchRequest* request) {
  const LimitsSection& limits = config_.limits;
  absl::Status valid = ValidateNamespace(request->namespace_(), limits);
  if (valid.ok()) {
    valid = ValidateBatchSize("keys", request->keys_size(), limits, /*allow_empty=*/true);
  }
  if (valid.ok()) {
    valid = ValidateBatchSize("prefixes", request->prefixes_size(), limits, /*allow_empty=*/true);
  }
  for (int i = 0; valid.ok() && i < request->keys_size(); ++i) {
    valid = ValidateKey(absl::StrCat("keys[", i, "]"), request->keys(i), limits);
  }
  for (int i = 0; valid.ok() && i < request->prefixes_size(); ++i) {
    // An empty prefix watches every key.
    if (!request->prefixes(i).empty()) {
      valid = ValidateKey(absl::StrCat("prefixes[", i, "]"), request->prefixes(i), limits);
    }
  }
  auto* stream = new WatchStream(hub_, context, *request);
  if (!valid.ok()) {
    stream->End(ToGrpcStatus(valid));
    return stream;
  }
  absl::Status refused;
  {
    absl::MutexLock l(&hub_->mu);
    if (hub_->shut_down) {
      refused = absl::UnavailableError("fanoutd is shutting down");
    } else if (static_cast<int64_t>(hub_->streams.size()) >= config_.watch.max_streams) {
      ++hub_->stats.refused;
      refused = absl::ResourceExhaustedError(absl::StrCat(
          config_.watch.max_streams, " Watch streams are open on this pod (watch.max_streams)"));
    } else {
      hub_->streams.insert(stream);
      ++hub_->stats.opened;
      hub_->stats.open = static_cast<int64_t>(hub_->streams.size());
      // Registered: what is applied from now on reaches the stream.
      stream->Push(Event(fanout::v1::HEARTBEAT));
      if (invalidator_->link_state() == cache::LinkState::kDegraded) {
        WatchEvent e = Event(fanout::v1::DEGRADED);
        e.set_detail("the link to the other pods' invalidations is down");
        stream->Push(std::move(e));
      }
    }
  }
  if (!refused.ok()) stream->End(ToGrpcStatus(refused));
  return stream;
}

void WatchService::OnInvalidation(const cache::Invalidation& inv) {
  Post([this, inv] { SendInvalidation(inv); });
}

void WatchService::OnLinkState(cache::LinkState state) {
  Post([this, state] { SendLinkState(state); });
}

void WatchService::OnGap() {
  Post([this] { SendGap(); });
}

void WatchService::SendInvalidation(const cache::Invalidation& inv) {
  absl::btree_set<std::string> updates;
  {
    absl::MutexLock l(&hub_->mu);
    for (WatchStream* s : hub_->streams) {
      if (s->ns() != inv.ns) continue;
      absl::flat_hash_set<std::string> sent;
      for (const std::string& k : inv.keys) {
        if (!s->Watches(k) || !sent.insert(k).second) continue;
        WatchEvent e = Event(fanout::v1::INVALIDATED);
        e.set_key(k);
        s->Push(std::move(e));
        if (s->values()) updates.insert(k);
      }
      if (inv.prefix.empty()) continue;
      if (s->Overlaps(inv.prefix)) {
        WatchEvent e = Event(fanout::v1::INVALIDATED);
        e.set_prefix(inv.prefix);
        s->Push(std::move(e));
      }
      for (const std::string& w : s->keys()) {
        if (!absl::StartsWith(w, inv.prefix) || !sent.insert(w).second) continue;
        WatchEvent e = Event(fanout::v1::INVALIDATED);
        e.set_key(w);
        s->Push(std::move(e));
        if (s->values()) updates.insert(w);
      }
    }
  }
  for (const std::string& k : updates) Update(inv.ns, k);
}

void WatchService::SendLinkState(cache::LinkState state) {
  WatchEvent e;
  if (state == cache::LinkState::kDegraded) {
    e = Event(fanout::v1::DEGRADED);
    e.set_detail(absl::StrCat(
        "the link to the other pods' invalidations is down: they may arrive late; cached "
        "values are answered for at most ",
        absl::FormatDuration(config_.invalidation.max_local_ttl), " (invalidation.max_local_ttl)"));
  } else {
    e = Event(fanout::v1::RECOVERED);
    e.set_detail("the link is back; invalidations missed meanwhile were applied");
  }
  absl::MutexLock l(&hub_->mu);
  for (WatchStream* s : hub_->streams) s->Push(e);
}

void WatchService::SendGap() {
  std::vector<std::pair<std::string, std::string>> updates;
  {
    WatchEvent e = Event(fanout::v1::INVALIDATED);
    e.set_all_keys(true);
    e.set_detail(
        "invalidations were missed and cannot be replayed: this pod dropped its cached values");
    absl::MutexLock l(&hub_->mu);
    for (WatchStream* s : hub_->streams) {
      s->Push(e);
      if (!s->values()) continue;
      for (const std::string& k : s->keys()) updates.emplace_back(s->ns(), k);
    }
  }
  std::sort(updates.begin(), updates.end());
  updates.erase(std::unique(updates.begin(), updates.end()), updates.end());
  for (const auto& [ns, key] : updates) Update(ns, key);
}

void WatchService::Update(const std::string& ns, const std::string& key) {
  {
    absl::MutexLock l(&hub_->mu);
    if (hub_->shut_down) return;
    ++hub_->stats.updates;
  }
  cache::ReadOptions o;
  o.deadline = absl::Now() + config_.limits.request_timeout;
  read_path_->Get(ns, key, o, [hub = hub_, ns, key](absl::StatusOr<cache::ReadResult> result) {
    hub->Updated(ns, key, result);
  });
}

}  // namespace fanout::server
