#include "cache/read_path.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <random>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace fanout::cache {
namespace {

std::string Describe(absl::string_view ns, absl::string_view key) {
  return ns.empty() ? absl::StrCat("key \"", key, "\"")
                    : absl::StrCat("key \"", key, "\" in namespace \"", ns, "\"");
}

// Failures that say the origin could not answer now, as opposed to an answer
// about the key (NotFound, InvalidArgument, FailedPrecondition) or a stop
// (Cancelled): a held copy may stand in for the answer.
bool OriginDown(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kAborted:
      return true;
    default:
      return false;
  }
}

absl::Status ShuttingDown() { return absl::UnavailableError("fanoutd is shutting down"); }

// How many times one fill asks for the lease: a wait that finds the lease
// gone without a value asks once more (so that one of the pods that waited
// fetches, not all of them); after that it fetches without one.
constexpr int kLeaseRounds = 2;

// -ln(U) for the draws XFetchNow makes (53-bit U in (0, 1]) is at most
// 53 ln 2 = 36.7: an entry further from expiry than this many scaled fill
// times cannot be due, and needs no draw.
constexpr double kMaxXFetchDraw = 37.0;

}  // namespace

bool XFetchDue(const Entry& e, absl::Time now, double beta, double u) {
  if (beta <= 0 || e.fill_time <= absl::ZeroDuration() || u <= 0) return false;
  return now + e.fill_time * (beta * -std::log(u)) >= e.expires_at;
}

// Counts the read path's outstanding asynchronous work so that Shutdown can
// wait for it, and turns work that finishes after a Shutdown gave up waiting
// into a no-op. Shared with every callback, so it outlives the read path.
class ReadPath::Tracker {
 public:
  void Begin() {
    absl::MutexLock l(&mu_);
    ++pending_;
  }
  void End() {
    absl::MutexLock l(&mu_);
    --pending_;
  }
  // True (and counted as running until Exit) unless closed: then the
  // caller must not touch the read path.
  bool Enter() {
    absl::MutexLock l(&mu_);
    if (closed_) return false;
    ++active_;
    return true;
  }
  void Exit() {
    absl::MutexLock l(&mu_);
    --active_;
  }
  bool WaitIdle(absl::Time deadline) {
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pending_ == 0; };
    absl::MutexLock l(&mu_);
    return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
  }
  // Refuses Enter from now on and waits for the callbacks already running.
  void Close() {
    auto quiet = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return active_ == 0; };
    absl::MutexLock l(&mu_);
    closed_ = true;
    mu_.Await(absl::Condition(&quiet));
  }
  int64_t pending() const {
    absl::MutexLock l(&mu_);
    return pending_;
  }

 private:
  mutable absl::Mutex mu_;
  int64_t pending_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t active_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

// One unit of outstanding work, held by the callback that finishes it: it
// is pending from construction until the callback is destroyed (run or
// dropped), and Run executes the callback's body only while the read path
// may be used. An uncounted one (a wait for another pod's fill, which
// Shutdown does not wait for) only guards Run.
class ReadPath::PendingOp {
 public:
  explicit PendingOp(std::shared_ptr<Tracker> tracker, bool counted = true)
      : tracker_(std::move(tracker)), counted_(counted) {
    if (counted_) tracker_->Begin();
  }
  PendingOp(PendingOp&& other) noexcept
      : tracker_(std::move(other.tracker_)), counted_(other.counted_) {}
  PendingOp& operator=(PendingOp&&) = delete;
  ~PendingOp() {
    if (tracker_ != nullptr && counted_) tracker_->End();
  }

  template <typename F>
  void Run(F&& body) {
    if (!tracker_->Enter()) return;
    std::forward<F>(body)();
    tracker_->Exit();
  }

 private:
  std::shared_ptr<Tracker> tracker_;
  bool counted_;
};

// A read waiting for a fill. Owned by its flight until taken out (under mu_)
// by whoever answers it: the fill's end, its deadline, its cancellation or
// Shutdown.
struct ReadPath::Waiter {
  GetDone done;
  absl::Duration max_stale;
  // The L1 copy: stale, or of any freshness for a bypass_cache read.
  std::optional<Entry> held;
  absl::Time deadline = absl::InfiniteFuture();
  // Set under mu_ while in the flight; released by Disarm.
  TimerId timer = kNoTimer;
  std::unique_ptr<CancellationCallback> on_cancel;
};

// One fill of one key, shared by every reader waiting for it.
struct ReadPath::Flight {
  std::string ckey;
  std::string ns;
  std::string key;
  bool refresh = false;     // started by a refresh-ahead read
  bool bypass = false;      // skips the lower tiers
  std::string traceparent;  // of the read that started the fill
  // Guarded by ReadPath::mu_.
  // When the fill ends at the latest if the tiers, the lease and the origin
  // keep their deadlines; waiters with an earlier deadline get a timer.
  // Moved later (ExtendFill) when the fill waits for another pod's.
  absl::Time ends_by = absl::InfiniteFuture();
  bool asks_origin = false;  // the origin has been asked
  bool detached = false;     // by Invalidate or a bypass_cache read: caches nothing
  bool shared_only = false;  // under way at DropL1: writes only the shared tier
  absl::flat_hash_map<uint64_t, std::unique_ptr<Waiter>> waiters;
  // The freshest stale copy a lower tier held.
  std::optional<Fallback> lower_stale;
  // Touched only by the fill's own steps, one after another.
  // The newest fetched_at among the copies this fill has seen (L1's, the
  // lower tiers'): a refresh wants a newer one, and so does a wait for
  // another pod's fill.
  absl::Time seen = absl::InfinitePast();
  bool shared_down = false;  // the shared tier failed its lookup: no lease either
  int lease_rounds = 0;      // Acquire calls made
  bool waited = false;       // waited for another pod's fill
  std::string lease_token;   // the lease held, given back once the value is written
};

ReadPath::ReadPath(const ReadPathOptions& options, std::unique_ptr<L1Cache> l1,
                   std::vector<std::unique_ptr<Tier>> lower, Origin* origin, Executor* executor,
                   std::unique_ptr<FillLease> lease)
    : options_(options),
      tracker_(std::make_shared<Tracker>()),
      l1_(std::move(l1)),
      lower_(std::move(lower)),
      // A lease guards writes to the shared tier: none without one.
      lease_(lower_.empty() ? nullptr : std::move(lease)),
      origin_(origin),
      executor_(executor),
      clock_(executor->clock()),
      fetch_latency_((options.metrics != nullptr ? options.metrics : DiscardMetrics())
                         ->GetHistogram("fanout_origin_fetch_duration_seconds",
                                        "Time the origin took to answer a fill's fetch (values, "
                                        "NotFound and failures alike)",
                                        {}, LatencyBuckets())),
      tuned_(options),
      random_state_(options.random_seed != 0
                        ? options.random_seed
                        : (uint64_t{std::random_device()()} << 32) ^ std::random_device()()) {}

ReadPath::~ReadPath() {
  // Without a Shutdown: answer the waiters and drop what is outstanding.
  Shutdown(absl::ZeroDuration());
}

void ReadPath::Get(absl::string_view ns, absl::string_view key, const ReadOptions& options,
                   GetDone done) {
  std::variant<ReadResult, PendingRead> first = ReadL1(ns, key, options);
  if (ReadResult* hit = std::get_if<ReadResult>(&first)) {
    std::move(done)(std::move(*hit));
    return;
  }
  PendingRead read = std::get<PendingRead>(std::move(first));
  read.traceparent_ = options.traceparent;
  ReadBelowL1(std::move(read), options.deadline, options.cancel, std::move(done));
}

std::variant<ReadResult, ReadPath::PendingRead> ReadPath::ReadL1(absl::string_view ns,
                                                                 absl::string_view key,
                                                                 const ReadOptions& options) {
  const absl::Time now = clock_->Now();
  std::string ckey = CompositeKey(ns, key);
  Entry e;
  std::optional<Freshness> freshness = l1_->Lookup(ckey, now, &e);
  if (freshness.has_value() && !TrustedInL1(e, now)) freshness = Freshness::kStale;
  if (freshness.has_value() && !options.bypass_cache && *freshness != Freshness::kStale) {
    // In the refresh window, or picked by XFetch: refresh in the background.
    const bool xfetch = *freshness == Freshness::kFresh && XFetchNow(e, now);
    if (xfetch || *freshness == Freshness::kRefreshAhead) {
      // The refresh has its own copy of ns and key (the caller's request
      // may end as soon as it has the answer) and starts on the executor,
      // so the caller's thread answers first and does no more.
      if (std::shared_ptr<Flight> refresh =
              StartRefresh(std::move(ckey), ns, key, e, xfetch, now)) {
        executor_->Schedule([this, op = PendingOp(tracker_), refresh]() mutable {
          op.Run([&] { LookupLower(0, std::move(refresh)); });
        });
      }
    }
    return ToResult(std::move(e), TierId::kL1, /*stale=*/false, now);
  }
  PendingRead read;
  read.ckey_ = std::move(ckey);
  read.ns_size_ = ns.size();
  if (freshness.has_value()) read.held_ = std::move(e);
  read.max_stale_ =
      options.max_stale > absl::ZeroDuration() ? options.max_stale : Tuned().default_max_stale;
  read.bypass_ = options.bypass_cache;
  return read;
}

bool ReadPath::XFetchNow(const Entry& e, absl::Time now) {
  const double beta = options_.xfetch_beta;
  if (beta <= 0 || e.fill_time <= absl::ZeroDuration()) return false;
  // The hot path: far from expiry, no draw.
  if (e.expires_at - now > e.fill_time * (beta * kMaxXFetchDraw)) return false;
  // splitmix64 over an atomic counter: lock-free, and repeatable for a seed.
  uint64_t z =
      random_state_.fetch_add(0x9e3779b97f4a7c15, std::memory_order_relaxed) + 0x9e3779b97f4a7c15;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  z ^= z >> 31;
  const double u = static_cast<double>((z >> 11) + 1) * 0x1.0p-53;  // (0, 1]
  return XFetchDue(e, now, beta, u);
}

std::shared_ptr<ReadPath::Flight> ReadPath::StartRefresh(std::string ckey, absl::string_view ns,
                                                         absl::string_view key, const Entry& held,
                                                         bool xfetch, absl::Time now) {
  absl::MutexLock l(&mu_);
  if (shutting_down_) return nullptr;
  if (!records_.empty()) {
    auto r = records_.find(ckey);
    if (r != records_.end() && now < r->second.retry_after) return nullptr;
  }
  auto [it, inserted] = flights_.try_emplace(ckey);
  // One fill per key: the one under way refreshes the entry.
  if (!inserted) return nullptr;
  if (background_refreshes_ >= Tuned().max_background_refreshes) {
    flights_.erase(it);
    ++stats_.refreshes_skipped;
    return nullptr;
  }
  auto flight = std::make_shared<Flight>();
  flight->ckey = std::move(ckey);
  flight->ns = std::string(ns);
  flight->key = std::string(key);
  flight->refresh = true;
  flight->ends_by = FillEndsBy(/*bypass=*/false, now);
  flight->seen = held.fetched_at;
  it->second = flight;
  ++background_refreshes_;
  ++stats_.refreshes_ahead;
  if (xfetch) ++stats_.xfetch_refreshes;
  return flight;
}

absl::Time ReadPath::FillEndsBy(bool bypass, absl::Time now) const {
  if (bypass) return now + options_.origin_timeout;
  absl::Duration longest = options_.origin_timeout * static_cast<int64_t>(lower_.size() + 1);
  // The lease's Acquire (a wait for another pod's fill moves the end later:
  // ExtendFill).
  if (lease_ != nullptr) longest += options_.lease_margin;
  return now + longest;
}

void ReadPath::ReadBelowL1(PendingRead read, absl::Time deadline, const CancellationToken& cancel,
                           GetDone done) {
  if (std::shared_ptr<Flight> flight = Enlist(std::move(read), deadline, cancel, std::move(done))) {
    LookupLower(0, std::move(flight));
  }
}

void ReadPath::ReadManyBelowL1(std::vector<BatchRead> reads, absl::Time deadline,
                               const CancellationToken& cancel) {
  std::vector<std::shared_ptr<Flight>> batched;
  for (BatchRead& r : reads) {
    std::shared_ptr<Flight> flight = Enlist(std::move(r.read), deadline, cancel, std::move(r.done));
    if (flight == nullptr) continue;
    if (flight->bypass || lower_.empty()) {
      LookupLower(0, std::move(flight));
    } else {
      batched.push_back(std::move(flight));
    }
  }
  if (batched.size() < 2) {
    for (auto& flight : batched) LookupLower(0, std::move(flight));
    return;
  }
  {
    absl::MutexLock l(&mu_);
    ++stats_.batch_lookups;
  }
  std::vector<std::string> keys;
  keys.reserve(batched.size());
  for (const auto& flight : batched) keys.push_back(flight->ckey);
  lower_[0]->LookupMany(std::move(keys), clock_->Now() + options_.origin_timeout,
                        [this, op = PendingOp(tracker_), batched = std::move(batched)](
                            std::vector<absl::StatusOr<Entry>> found) mutable {
                          op.Run([&] {
                            for (size_t i = 0; i < batched.size(); ++i) {
                              absl::StatusOr<Entry> one =
                                  i < found.size()
                                      ? std::move(found[i])
                                      : absl::StatusOr<Entry>(absl::InternalError(
                                            "the tier answered a LookupMany with too few results"));
                              OnLowerAnswer(0, std::move(batched[i]), std::move(one));
                            }
                          });
                        });
}

std::shared_ptr<ReadPath::Flight> ReadPath::Enlist(PendingRead read, absl::Time deadline,
                                                   const CancellationToken& cancel, GetDone done) {
  if (cancel.cancelled()) {
    std::move(done)(absl::CancelledError("the caller cancelled the read"));
    return nullptr;
  }
  const absl::Time now = clock_->Now();
  const absl::string_view ns = read.ns();
  const absl::string_view key = read.key();
  std::shared_ptr<Flight> flight;
  bool start = false;
  uint64_t id = 0;
  absl::Time ends_by;
  absl::Status refused;
  {
    absl::MutexLock l(&mu_);
    if (shutting_down_) {
      refused = ShuttingDown();
    } else if (!read.bypass_ && !records_.empty()) {
      auto r = records_.find(read.ckey_);
      if (r != records_.end() && now < r->second.negative_until) {
        ++stats_.negative_hits;
        refused = absl::NotFoundError(absl::StrCat(Describe(ns, key), " not found"));
      }
    }
    if (refused.ok()) {
      auto it = flights_.find(read.ckey_);
      if (it != flights_.end() && read.bypass_ && !it->second->asks_origin) {
        // A bypass_cache read must reach the origin: it does not wait for
        // a fill that may still answer from a lower tier.
        DetachLocked(it->second);
        it = flights_.end();
      }
      if (it != flights_.end()) {
        flight = it->second;
        ++stats_.coalesced;
      } else {
        flight = std::make_shared<Flight>();
        flight->ckey = read.ckey_;
        flight->ns = std::string(ns);
        flight->key = std::string(key);
        flight->bypass = read.bypass_;
        flight->traceparent = std::move(read.traceparent_);
        flight->asks_origin = flight->bypass;  // it goes straight there
        flight->ends_by = FillEndsBy(flight->bypass, now);
        if (read.held_.has_value()) flight->seen = read.held_->fetched_at;
        flights_.emplace(read.ckey_, flight);
        start = true;
      }
      auto waiter = std::make_unique<Waiter>();
      waiter->done = std::move(done);
      waiter->max_stale = read.max_stale_;
      waiter->held = std::move(read.held_);
      waiter->deadline = deadline;
      id = next_waiter_id_++;
      flight->waiters.emplace(id, std::move(waiter));
      ends_by = flight->ends_by;
    }
  }
  if (!refused.ok()) {
    std::move(done)(std::move(refused));
    return nullptr;
  }
  Arm(flight, id, deadline, ends_by, cancel);
  return start ? flight : nullptr;
}

TimerId ReadPath::StartTimer(const std::shared_ptr<Flight>& flight, uint64_t id,
                             absl::Time deadline) {
  const absl::Duration left = std::max(absl::ZeroDuration(), deadline - clock_->Now());
  const absl::Time at = deadline - std::min(options_.deadline_margin, left / 2);
  return executor_->ScheduleAt(at, [this, op = PendingOp(tracker_), flight, id]() mutable {
    op.Run([&] {
      AnswerEarly(flight, id,
                  absl::DeadlineExceededError(absl::StrCat(
                      "no answer for ", Describe(flight->ns, flight->key),
                      " within the call's deadline, and no value within max_stale held")));
    });
  });
}

void ReadPath::ExtendFill(const std::shared_ptr<Flight>& flight, absl::Time ends_by) {
  std::vector<std::pair<uint64_t, absl::Time>> late;
  {
    absl::MutexLock l(&mu_);
    if (ends_by <= flight->ends_by) return;
    flight->ends_by = ends_by;
    for (const auto& [id, w] : flight->waiters) {
      if (w->timer == kNoTimer && w->deadline < ends_by) late.emplace_back(id, w->deadline);
    }
  }
  for (const auto& [id, deadline] : late) {
    const TimerId timer = StartTimer(flight, id, deadline);
    bool kept = false;
    {
      absl::MutexLock l(&mu_);
      auto it = flight->waiters.find(id);
      if (it != flight->waiters.end() && it->second->timer == kNoTimer) {
        it->second->timer = timer;
        kept = true;
      }
    }
    if (!kept) executor_->CancelTimer(timer);
  }
}

void ReadPath::Arm(const std::shared_ptr<Flight>& flight, uint64_t id, absl::Time deadline,
                   absl::Time ends_by, const CancellationToken& cancel) {
  const TimerId timer = deadline < ends_by ? StartTimer(flight, id, deadline) : kNoTimer;
  std::unique_ptr<CancellationCallback> on_cancel;
  if (cancel.can_be_cancelled()) {
    // Runs inline if the token is already cancelled. Unregistered (by
    // Disarm) before the waiter is answered, so it never outlives the read
    // path.
    on_cancel = std::make_unique<CancellationCallback>(
        cancel, [this, weak = std::weak_ptr<Flight>(flight), id] {
          if (std::shared_ptr<Flight> f = weak.lock()) {
            AnswerEarly(f, id, absl::CancelledError("the caller cancelled the read"));
          }
        });
  }
  bool kept = false;
  {
    absl::MutexLock l(&mu_);
    auto it = flight->waiters.find(id);
    if (it != flight->waiters.end()) {
      // ExtendFill may have given it a timer meanwhile.
      if (it->second->timer == kNoTimer) {
        it->second->timer = timer;
        kept = true;
      }
      it->second->on_cancel = std::move(on_cancel);
    }
  }
  // Answered already (on another thread, or by the cancellation above).
  if (!kept && timer != kNoTimer) executor_->CancelTimer(timer);
}

void ReadPath::Disarm(Waiter& w) {
  if (w.timer != kNoTimer) executor_->CancelTimer(w.timer);
  w.timer = kNoTimer;
  // Waits for the callback if it is running on another thread; it finds the
  // waiter gone and returns.
  w.on_cancel.reset();
}

void ReadPath::AnswerEarly(const std::shared_ptr<Flight>& flight, uint64_t id, absl::Status why) {
  const bool cancelled = why.code() == absl::StatusCode::kCancelled;
  const absl::Time now = clock_->Now();
  std::unique_ptr<Waiter> w;
  std::optional<Fallback> lower;
  {
    absl::MutexLock l(&mu_);
    auto it = flight->waiters.find(id);
    if (it == flight->waiters.end()) return;
    w = std::move(it->second);
    flight->waiters.erase(it);
    if (!cancelled) lower = flight->lower_stale;
    ++(cancelled ? stats_.cancelled : stats_.deadline_answers);
  }
  Disarm(*w);
  if (!cancelled) {
    if (std::optional<ReadResult> stale = StaleFallback(*w, lower, now)) {
      {
        absl::MutexLock l(&mu_);
        ++stats_.stale_served;
      }
      std::move(w->done)(*std::move(stale));
      return;
    }
  }
  std::move(w->done)(std::move(why));
}

std::optional<ReadResult> ReadPath::StaleFallback(const Waiter& w,
                                                  const std::optional<Fallback>& lower,
                                                  absl::Time now) {
  auto usable = [&](const Entry& e) {
    return now < e.stale_until && now - e.expires_at <= w.max_stale;
  };
  const Entry* best = nullptr;
  TierId tier = TierId::kL1;
  if (w.held.has_value() && usable(*w.held)) best = &*w.held;
  if (lower.has_value() && usable(lower->entry) &&
      (best == nullptr || lower->entry.fetched_at > best->fetched_at)) {
    best = &lower->entry;
    tier = lower->tier;
  }
  if (best == nullptr) return std::nullopt;
  return ToResult(*best, tier, /*stale=*/true, now);
}

void ReadPath::LookupLower(size_t index, std::shared_ptr<Flight> flight) {
  if (flight->bypass || index >= lower_.size()) {
    FetchOrigin(std::move(flight));
    return;
  }
  Tier* tier = lower_[index].get();
  const std::string& ckey = flight->ckey;
  tier->Lookup(ckey, clock_->Now() + options_.origin_timeout,
               [this, op = PendingOp(tracker_), index,
                flight = std::move(flight)](absl::StatusOr<Entry> found) mutable {
                 op.Run([&] { OnLowerAnswer(index, std::move(flight), std::move(found)); });
               });
}

void ReadPath::OnLowerAnswer(size_t index, std::shared_ptr<Flight> flight,
                             absl::StatusOr<Entry> found) {
  const TierId tier = lower_[index]->id();
  if (found.ok()) {
    // Not expired answers (its refresh, if due, is L1's business), but a
    // refresh wants a copy newer than the one L1 holds.
    if (FreshnessAt(*found, clock_->Now()) != Freshness::kStale &&
        (!flight->refresh || found->fetched_at > flight->seen)) {
      Complete(flight, std::move(found), tier, /*origin_failed=*/false);
      return;
    }
    flight->seen = std::max(flight->seen, found->fetched_at);
    absl::MutexLock l(&mu_);
    if (!flight->lower_stale.has_value() ||
        found->fetched_at > flight->lower_stale->entry.fetched_at) {
      flight->lower_stale = Fallback{*std::move(found), tier};
    }
  } else if (index == 0 && found.status().code() != absl::StatusCode::kNotFound) {
    // The shared tier could not answer: its lease would cost another
    // timeout and settle nothing.
    flight->shared_down = true;
  }
  // A miss, a failure or an old copy: the next tier decides.
  LookupLower(index + 1, std::move(flight));
}

void ReadPath::FetchOrigin(std::shared_ptr<Flight> flight) {
  const absl::Time start = clock_->Now();
  absl::Status refused;
  {
    absl::MutexLock l(&mu_);
    if (shutting_down_) {
      refused = ShuttingDown();
    } else if (!flight->bypass && !records_.empty()) {
      // A bypass_cache read is an explicit request for the origin's answer:
      // the backoff that spares the origin from ordinary reads does not hold it.
      auto r = records_.find(flight->ckey);
      if (r != records_.end() && start < r->second.retry_after) {
        // In backoff after a failure: answer as that failure did, without
        // asking the origin again.
        const KeyRecord& rec = r->second;
        const std::string note =
            absl::StrCat("not asked again for ", absl::FormatDuration(rec.retry_after - start),
                         " after ", rec.failures, " failure", rec.failures == 1 ? "" : "s",
                         " in a row (cache.retry_backoff)");
        refused = OriginDown(rec.last_error)
                      ? absl::UnavailableError(absl::StrCat("the origin failed for ",
                                                            Describe(flight->ns, flight->key), " (",
                                                            rec.last_error.message(), "); ", note))
                      : absl::Status(rec.last_error.code(),
                                     absl::StrCat(rec.last_error.message(), "; ", note));
        stats_.backoff_answers += flight->waiters.size();
      }
    }
  }
  if (!refused.ok()) {
    Complete(flight, std::move(refused), TierId::kOrigin, /*origin_failed=*/false);
    return;
  }
  if (lease_ != nullptr && !flight->bypass && !flight->shared_down &&
      flight->lease_rounds < kLeaseRounds) {
    ++flight->lease_rounds;
    const Flight* f = flight.get();
    lease_->Acquire(f->ckey, options_.origin_timeout + options_.lease_margin,
                    clock_->Now() + options_.origin_timeout,
                    [this, op = PendingOp(tracker_),
                     flight = std::move(flight)](absl::StatusOr<LeaseGrant> grant) mutable {
                      op.Run([&] { OnLease(std::move(flight), std::move(grant)); });
                    });
    return;
  }
  AskOrigin(std::move(flight));
}

void ReadPath::OnLease(std::shared_ptr<Flight> flight, absl::StatusOr<LeaseGrant> grant) {
  if (!grant.ok() || grant->acquired) {
    {
      absl::MutexLock l(&mu_);
      ++(grant.ok() ? stats_.lease_acquired : stats_.lease_unavailable);
    }
    if (grant.ok()) {
      flight->lease_token = std::move(grant->token);
    } else {
      flight->lease_rounds = kLeaseRounds;  // Redis is unwell: a local single flight
    }
    AskOrigin(std::move(flight));
    return;
  }
  {
    absl::MutexLock l(&mu_);
    ++stats_.lease_waits;
  }
  flight->waited = true;
  // The holder writes its value before its lease ends (it fetches within
  // origin_timeout, its lease runs lease_margin longer), or gave up. A lease
  // that claims longer than this pod's own would run (a stray key, a pod with
  // a far longer origin timeout) is waited for only that long, and then this
  // pod asks the origin itself: a lease never keeps a key unanswerable.
  const absl::Duration own = options_.origin_timeout + options_.lease_margin;
  const absl::Duration holder =
      grant->holder_remaining > absl::ZeroDuration() ? std::min(grant->holder_remaining, own) : own;
  if (grant->holder_remaining > own) flight->lease_rounds = kLeaseRounds;
  const absl::Time wait_until = clock_->Now() + holder + options_.lease_margin;
  // After the wait: maybe one more round (an Acquire and a wait), then the
  // origin.
  absl::Duration after = options_.lease_margin + options_.origin_timeout;
  if (flight->lease_rounds < kLeaseRounds) {
    after += options_.lease_margin + options_.origin_timeout + 2 * options_.lease_margin;
  }
  ExtendFill(flight, wait_until + after);
  const Flight* f = flight.get();
  // Uncounted: Shutdown does not wait for another pod's fill.
  lease_->AwaitFill(f->ckey, f->seen, wait_until,
                    [this, op = PendingOp(tracker_, /*counted=*/false),
                     flight = std::move(flight)](absl::StatusOr<Entry> filled) mutable {
                      op.Run([&] { OnAwaited(std::move(flight), std::move(filled)); });
                    });
}

void ReadPath::OnAwaited(std::shared_ptr<Flight> flight, absl::StatusOr<Entry> filled) {
  const TierId shared = lower_[0]->id();
  if (filled.ok() && FreshnessAt(*filled, clock_->Now()) != Freshness::kStale) {
    {
      absl::MutexLock l(&mu_);
      ++stats_.lease_wait_filled;
    }
    Complete(flight, std::move(filled), shared, /*origin_failed=*/false);
    return;
  }
  const absl::StatusCode code = filled.ok() ? absl::StatusCode::kNotFound : filled.status().code();
  {
    absl::MutexLock l(&mu_);
    switch (code) {
      case absl::StatusCode::kNotFound:
        ++stats_.lease_wait_vacant;
        break;
      case absl::StatusCode::kDeadlineExceeded:
        ++stats_.lease_wait_timed_out;
        break;
      default:
        ++stats_.lease_wait_failed;
    }
    // A value already expired is no answer, but a fallback.
    if (filled.ok() && (!flight->lower_stale.has_value() ||
                        filled->fetched_at > flight->lower_stale->entry.fetched_at)) {
      flight->lower_stale = Fallback{*filled, shared};
    }
  }
  if (code != absl::StatusCode::kNotFound && code != absl::StatusCode::kDeadlineExceeded) {
    flight->lease_rounds = kLeaseRounds;
  }
  // The lease once more (one of the pods that waited fetches), else the origin.
  FetchOrigin(std::move(flight));
}

void ReadPath::AskOrigin(std::shared_ptr<Flight> flight) {
  const absl::Time start = clock_->Now();
  {
    absl::MutexLock l(&mu_);
    flight->asks_origin = true;
    ++stats_.origin_fetches;
    if (flight->waited) ++stats_.lease_fetched_self;
  }
  const Flight* f = flight.get();
  FetchContext fetch{.deadline = start + options_.origin_timeout,
                     .cancel = shutdown_.token(),
                     .traceparent = f->traceparent};
  origin_->Fetch(f->ns, f->key, std::move(fetch),
                 [this, op = PendingOp(tracker_), start,
                  flight = std::move(flight)](absl::StatusOr<OriginValue> value) mutable {
                   op.Run([&] {
                     const absl::Time now = clock_->Now();
                     fetch_latency_->Observe(now - start);
                     if (!value.ok()) {
                       absl::Status status = value.status();
                       if (status.code() == absl::StatusCode::kNotFound) {
                         status = absl::NotFoundError(
                             absl::StrCat(Describe(flight->ns, flight->key), " not found"));
                       }
                       const bool failed = status.code() != absl::StatusCode::kNotFound &&
                                           status.code() != absl::StatusCode::kCancelled;
                       Complete(flight, std::move(status), TierId::kOrigin, failed);
                       return;
                     }
                     Entry entry = MakeEntry(*std::move(value), now);
                     entry.fill_time = now - start;
                     Complete(flight, std::move(entry), TierId::kOrigin, /*origin_failed=*/false);
                   });
                 });
}

void ReadPath::Complete(const std::shared_ptr<Flight>& flight, absl::StatusOr<Entry> result,
                        TierId source, bool origin_failed) {
  const absl::Time now = clock_->Now();
  const ReadPathOptions tuned = Tuned();
  const std::string& ckey = flight->ckey;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Waiter>> waiters;
  std::optional<Fallback> lower;
  bool store = false;
  bool shared_only = false;
  {
    absl::MutexLock l(&mu_);
    if (flight->detached) {
      detached_.erase(flight);
    } else {
      flights_.erase(ckey);
      shared_only = flight->shared_only;
      // Under mu_, so that an Invalidate (which detaches under mu_) either
      // comes first and nothing is cached, or after and erases what was;
      // and so that DropL1 either marks the fill first or drops its entry.
      if (result.ok()) {
        if (!shared_only) l1_->Insert(ckey, *result);
        records_.erase(ckey);
        store = source == TierId::kOrigin;
      } else if (source == TierId::kOrigin &&
                 result.status().code() == absl::StatusCode::kNotFound) {
        // Only the origin's explicit "no such key" removes a cached value.
        l1_->Erase(ckey);
        if (tuned.negative_ttl > absl::ZeroDuration() && !shared_only) {
          if (KeyRecord* r = Record(ckey, now)) {
            *r = KeyRecord{};
            r->negative_until = now + tuned.negative_ttl;
          }
        } else {
          records_.erase(ckey);
        }
      } else if (origin_failed && tuned.retry_backoff > absl::ZeroDuration()) {
        if (KeyRecord* r = Record(ckey, now)) {
          r->failures = std::min(r->failures + 1, 30);
          // Doubling up to max_retry_backoff, and never past a ttl: a key
          // is asked again at least once a ttl, so values are fresh again
          // within a ttl of the origin's return.
          const absl::Duration cap =
              std::min(tuned.max_retry_backoff, std::max(tuned.ttl, tuned.retry_backoff));
          absl::Duration backoff = tuned.retry_backoff;
          for (int i = 1; i < r->failures && backoff < cap; ++i) backoff *= 2;
          r->retry_after = now + Jittered(std::min(backoff, cap));
          r->last_error = result.status();
        }
      }
    }
    if (flight->refresh) --background_refreshes_;
    if (origin_failed) ++stats_.origin_failures;
    waiters.swap(flight->waiters);
    lower = std::move(flight->lower_stale);
  }
  // The lease is given back once the shared tier has the value (a pod that
  // sees the lease gone then finds the value), or at once if there is none.
  std::string token = std::move(flight->lease_token);
  if (store) {
    for (size_t i = 0; i < lower_.size(); ++i) {
      if (shared_only && lower_[i]->id() != TierId::kL2) continue;
      if (i == 0 && !token.empty()) {
        lower_[i]->Store(
            ckey, *result,
            [this, op = PendingOp(tracker_), ckey, token = std::move(token)](absl::Status) mutable {
              op.Run([&] { ReleaseLease(ckey, std::move(token)); });
            });
        token.clear();
        continue;
      }
      lower_[i]->Store(ckey, *result, [op = PendingOp(tracker_)](absl::Status) {});
    }
  }
  if (!token.empty()) ReleaseLease(ckey, std::move(token));

  const bool down = !result.ok() && OriginDown(result.status());
  uint64_t stale_served = 0;
  for (auto& [id, w] : waiters) {
    Disarm(*w);
    if (result.ok()) {
      // Shares the value: no copy per waiter.
      std::move(w->done)(ToResult(*result, source, /*stale=*/false, now));
      continue;
    }
    if (down) {
      if (std::optional<ReadResult> stale = StaleFallback(*w, lower, now)) {
        ++stale_served;
        std::move(w->done)(*std::move(stale));
        continue;
      }
      std::move(w->done)(absl::UnavailableError(absl::StrCat(
          "origin unavailable and no value within max_stale: ", result.status().message())));
      continue;
    }
    std::move(w->done)(result.status());
  }
  if (stale_served > 0) {
    absl::MutexLock l(&mu_);
    stats_.stale_served += stale_served;
  }
}

void ReadPath::ReleaseLease(const std::string& ckey, std::string token) {
  lease_->Release(ckey, token, clock_->Now() + options_.origin_timeout,
                  [op = PendingOp(tracker_)](absl::Status) {});
}

ReadPath::KeyRecord* ReadPath::Record(const std::string& ckey, absl::Time now) {
  auto it = records_.find(ckey);
  if (it != records_.end()) return &it->second;
  if (records_.size() >= options_.max_key_records) {
    // Drop the records that no longer hold anything back.
    absl::erase_if(records_, [now](const auto& kv) {
      return kv.second.negative_until <= now && kv.second.retry_after <= now;
    });
    if (records_.size() >= options_.max_key_records) return nullptr;
  }
  return &records_[ckey];
}

void ReadPath::DetachLocked(const std::shared_ptr<Flight>& flight) {
  if (flight->detached) return;
  auto it = flights_.find(flight->ckey);
  if (it != flights_.end() && it->second == flight) flights_.erase(it);
  flight->detached = true;
  detached_.insert(flight);
  ++stats_.detached_fills;
}

Entry ReadPath::MakeEntry(OriginValue value, absl::Time fetched_at) const {
  const ReadPathOptions tuned = Tuned();
  const absl::Duration ttl = Jittered(value.ttl > absl::ZeroDuration() ? value.ttl : tuned.ttl);
  Entry e;
  e.value = std::move(value.value);
  e.version = value.version;
  e.fetched_at = fetched_at;
  e.expires_at = fetched_at + ttl;
  // With XFetch an entry is fresh until it expires: reads pick when to
  // refresh it. Else the fixed refresh window.
  e.fresh_until = options_.xfetch_beta > 0 ? e.expires_at : fetched_at + ttl * tuned.refresh_ahead;
  e.stale_until = e.expires_at + tuned.stale_ttl;
  return e;
}

ReadPathOptions ReadPath::Tuned() const {
  absl::MutexLock l(&tune_mu_);
  return tuned_;
}

void ReadPath::Retune(const ReadPathOptions& options) {
  absl::MutexLock l(&tune_mu_);
  tuned_.ttl = options.ttl;
  tuned_.refresh_ahead = options.refresh_ahead;
  tuned_.stale_ttl = options.stale_ttl;
  tuned_.default_max_stale = options.default_max_stale;
  tuned_.negative_ttl = options.negative_ttl;
  tuned_.retry_backoff = options.retry_backoff;
  tuned_.max_retry_backoff = options.max_retry_backoff;
  tuned_.max_background_refreshes = options.max_background_refreshes;
}

absl::Duration ReadPath::Jittered(absl::Duration d) const {
  if (options_.ttl_jitter <= 0) return d;
  thread_local std::minstd_rand gen{std::random_device()()};
  std::uniform_real_distribution<double> factor(1.0 - options_.ttl_jitter,
                                                1.0 + options_.ttl_jitter);
  return d * factor(gen);
}

ReadResult ReadPath::ToResult(Entry e, TierId tier, bool stale, absl::Time now) {
  ReadResult r;
  r.value = std::move(e.value);
  r.version = e.version;
  r.served_by = tier;
  r.stale = stale;
  r.age = now > e.fetched_at ? now - e.fetched_at : absl::ZeroDuration();
  return r;
}

bool ReadPath::TrustedInL1(const Entry& e, absl::Time now) const {
  // Only what would be answered fresh is in question: a stale entry is a
  // fallback either way.
  return options_.link_guard == nullptr || now >= e.expires_at ||
         options_.link_guard->TrustL1(e, now);
}

void ReadPath::Invalidate(absl::string_view ns, const std::vector<std::string>& keys,
                          absl::string_view prefix, InvalidateScope scope,
                          InvalidateOutcomeDone done) {
  absl::flat_hash_set<std::string> ckeys;
  for (const std::string& k : keys) ckeys.insert(CompositeKey(ns, k));
  const std::string cprefix = prefix.empty() ? std::string() : CompositeKey(ns, prefix);
  auto matches = [&](const std::string& ckey) {
    return ckeys.contains(ckey) || (!cprefix.empty() && absl::StartsWith(ckey, cprefix));
  };

  // The lower tiers are asked first: a tier that applies its erase later
  // (L3's writer) answers lookups as if applied from the call on. Then a
  // read that misses L1 after the purge below cannot find the old value
  // there, and a fill that looked before is detached.
  std::vector<Tier*> tiers;
  for (const auto& tier : lower_) {
    const bool shared = tier->id() == TierId::kL2;
    if (scope.tiers == InvalidateTiers::kAll ||
        (scope.tiers == InvalidateTiers::kLocal && !shared)) {
      tiers.push_back(tier.get());
    }
  }
  struct Join {
    std::atomic<size_t> pending;
    absl::Mutex mu;
    InvalidateOutcome outcome ABSL_GUARDED_BY(mu);
    InvalidateOutcomeDone done;
  };
  auto join = std::make_shared<Join>();
  join->pending = tiers.size() + 1;  // + this pod's own purge, below
  join->done = std::move(done);
  auto finish_one = [](const std::shared_ptr<Join>& join) {
    if (join->pending.fetch_sub(1) != 1) return;
    InvalidateOutcome result;
    {
      absl::MutexLock l(&join->mu);
      result = std::move(join->outcome);
    }
    std::move(join->done)(std::move(result));
  };
  const absl::Time deadline = clock_->Now() + options_.origin_timeout;
  const std::vector<std::string> erase_keys(ckeys.begin(), ckeys.end());
  for (Tier* tier : tiers) {
    // The survival tier keeps invalidated values for outages unless purged.
    const EraseMode mode = tier->id() == TierId::kL3 && !scope.purge_survival
                               ? EraseMode::kSupersede
                               : EraseMode::kRemove;
    const bool shared = tier->id() == TierId::kL2;
    tier->Erase(erase_keys, cprefix, mode, deadline,
                [join, shared, id = tier->id(), finish_one](absl::StatusOr<uint64_t> n) {
                  if (!n.ok()) {
                    absl::MutexLock l(&join->mu);
                    absl::Status& first = shared ? join->outcome.shared : join->outcome.local;
                    if (first.ok()) {
                      first = absl::Status(n.status().code(),
                                           absl::StrCat(id == TierId::kL2 ? "L2" : "L3", ": ",
                                                        n.status().message()));
                    }
                  }
                  finish_one(join);
                });
  }

  {
    absl::MutexLock l(&mu_);
    std::vector<std::shared_ptr<Flight>> doomed;
    for (const auto& [ckey, flight] : flights_) {
      if (matches(ckey)) doomed.push_back(flight);
    }
    for (const auto& flight : doomed) DetachLocked(flight);
    for (const std::string& ckey : ckeys) records_.erase(ckey);
    if (!cprefix.empty()) {
      auto it = records_.lower_bound(cprefix);
      while (it != records_.end() && absl::StartsWith(it->first, cprefix)) it = records_.erase(it);
    }
  }
  uint64_t evicted = 0;
  for (const std::string& ckey : ckeys) evicted += l1_->Erase(ckey) ? 1 : 0;
  if (!cprefix.empty()) evicted += l1_->ErasePrefix(cprefix);
  {
    absl::MutexLock l(&join->mu);
    join->outcome.evicted = evicted;
  }
  finish_one(join);
}

void ReadPath::Invalidate(absl::string_view ns, const std::vector<std::string>& keys,
                          absl::string_view prefix, bool purge_survival, InvalidateDone done) {
  Invalidate(ns, keys, prefix,
             InvalidateScope{.tiers = InvalidateTiers::kAll, .purge_survival = purge_survival},
             [done = std::move(done)](InvalidateOutcome outcome) mutable {
               if (!outcome.local.ok()) {
                 FANOUT_LOG(WARNING)
                     << "invalidate: " << outcome.local.message() << " (applied later)";
               }
               if (!outcome.shared.ok()) {
                 std::move(done)(absl::Status(
                     outcome.shared.code(),
                     absl::StrCat("erased ", outcome.evicted,
                                  " entries from this pod's cache, but not from the shared "
                                  "tier, where other pods may still read them: ",
                                  outcome.shared.message())));
                 return;
               }
               std::move(done)(outcome.evicted);
             });
}

uint64_t ReadPath::DropL1() {
  {
    absl::MutexLock l(&mu_);
    for (const auto& [ckey, flight] : flights_) flight->shared_only = true;
  }
  return l1_->ErasePrefix("");
}

uint64_t ReadPath::InvalidateAll() {
  {
    absl::MutexLock l(&mu_);
    std::vector<std::shared_ptr<Flight>> doomed;
    doomed.reserve(flights_.size());
    for (const auto& [ckey, flight] : flights_) doomed.push_back(flight);
    for (const auto& flight : doomed) DetachLocked(flight);
    records_.clear();
  }
  return l1_->ErasePrefix("");
}

bool ReadPath::Shutdown(absl::Duration timeout) {
  // Real time: what is waited for runs on real threads.
  const absl::Time deadline = absl::Now() + timeout;
  std::vector<std::unique_ptr<Waiter>> waiting;
  {
    absl::MutexLock l(&mu_);
    shutting_down_ = true;
    auto take = [&](Flight& f) {
      for (auto& [id, w] : f.waiters) waiting.push_back(std::move(w));
      f.waiters.clear();
    };
    for (auto& [ckey, flight] : flights_) take(*flight);
    for (const auto& flight : detached_) take(*flight);
  }
  for (auto& w : waiting) {
    Disarm(*w);
    std::move(w->done)(ShuttingDown());
  }
  shutdown_.Cancel();
  const bool idle = tracker_->WaitIdle(deadline);
  if (!idle && timeout > absl::ZeroDuration()) {
    FANOUT_LOG(ERROR) << "read path: " << tracker_->pending()
                      << " tier or origin calls still outstanding after "
                      << absl::FormatDuration(timeout) << "; their answers will be dropped";
  }
  // Whatever finishes from now on does not touch the read path.
  tracker_->Close();
  return idle;
}

ReadPathStats ReadPath::Stats() const {
  absl::MutexLock l(&mu_);
  return stats_;
}

}  // namespace fanout::cache
