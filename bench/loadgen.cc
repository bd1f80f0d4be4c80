#include "bench/loadgen.h"

#include <grpcpp/grpcpp.h>
#include <sys/prctl.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <limits>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/workload.h"
#include "fanout/v1/sidecar.grpc.pb.h"

namespace fanout::bench {
namespace {

constexpr int64_t kLateSendNanos = 1'000'000;

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Sleeps until `when` on the steady clock (CLOCK_MONOTONIC on Linux).
void SleepUntilNanos(int64_t when) {
  timespec ts;
  ts.tv_sec = when / 1'000'000'000;
  ts.tv_nsec = when % 1'000'000'000;
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

// When calls may start and which of them are measured.
struct Window {
  int64_t measure_from_ns;
  int64_t end_ns;  // no call starts at or after this
  int64_t count;   // measured calls at most; 0 = no bound
};

Window WindowFor(const BenchOptions& o, int64_t start_ns) {
  Window w;
  w.measure_from_ns = start_ns + absl::ToInt64Nanoseconds(o.warmup);
  w.end_ns = o.duration == absl::ZeroDuration()
                 ? std::numeric_limits<int64_t>::max()
                 : w.measure_from_ns + absl::ToInt64Nanoseconds(o.duration);
  w.count = o.count;
  return w;
}

// `concurrency` chains of calls; each answer starts the chain's next call.
class ClosedLoop : public std::enable_shared_from_this<ClosedLoop> {
 public:
  ClosedLoop(const BenchOptions& o, Window window, CallSender* sender, Recorder* recorder)
      : window_(window), sender_(sender), recorder_(recorder), slots_(o.concurrency) {
    for (int i = 0; i < o.concurrency; ++i) slots_[i].channel = i % o.channels;
    active_ = o.concurrency;
  }

  void Run() {
    for (Slot& s : slots_) Chain(&s);
    absl::MutexLock l(&mu_);
    mu_.Await(absl::Condition(
        +[](int* active) { return *active == 0; }, &active_));
  }

 private:
  // A chain's call is kSending until both Send has returned and the answer
  // has arrived; whichever of the two comes second starts the next call.
  // This keeps a sender that answers inline from recursing.
  enum State { kSending, kSendReturned, kAnsweredFirst };
  struct Slot {
    std::atomic<int> state{kSending};
    int channel = 0;
  };

  // Whether a call may start at `now`, and whether it is measured.
  bool Claim(int64_t now, bool* measured) {
    if (now >= window_.end_ns) return false;
    *measured = now >= window_.measure_from_ns;
    if (*measured && window_.count > 0) {
      return measured_started_.fetch_add(1, std::memory_order_relaxed) < window_.count;
    }
    return true;
  }

  void Chain(Slot* s) {
    for (;;) {
      const int64_t start = NowNanos();
      bool measured = false;
      if (!Claim(start, &measured)) {
        absl::MutexLock l(&mu_);
        --active_;
        return;
      }
      s->state.store(kSending, std::memory_order_relaxed);
      sender_->Send(s->channel, [self = shared_from_this(), s, start,
                                 measured](CallOutcome outcome) {
        const int64_t now = NowNanos();
        if (measured) self->recorder_->Record(outcome, now - start, now);
        int expected = kSending;
        if (s->state.compare_exchange_strong(expected, kAnsweredFirst, std::memory_order_acq_rel)) {
          return;  // Send has not returned yet; its caller goes on.
        }
        self->Chain(s);
      });
      int expected = kSending;
      if (s->state.compare_exchange_strong(expected, kSendReturned, std::memory_order_acq_rel)) {
        return;  // The answer will go on.
      }
    }
  }

  const Window window_;
  CallSender* const sender_;
  Recorder* const recorder_;
  std::vector<Slot> slots_;
  std::atomic<int64_t> measured_started_{0};
  absl::Mutex mu_;
  int active_ ABSL_GUARDED_BY(mu_) = 0;
};

// Calls at Poisson arrival times. Each of `senders` threads sends its own
// Poisson stream of rate/senders; together they are one Poisson stream of
// `rate` (a superposition of independent Poisson processes is one), and the
// cost of starting calls is spread over several cores.
class OpenLoop : public std::enable_shared_from_this<OpenLoop> {
 public:
  OpenLoop(const BenchOptions& o, Window window, CallSender* sender, Recorder* recorder)
      : options_(o), window_(window), sender_(sender), recorder_(recorder) {}

  void Run(int64_t start_ns, Report* report) {
    std::vector<std::thread> threads;
    for (int i = 1; i < options_.senders; ++i) {
      threads.emplace_back([this, i, start_ns] { SendLoop(i, start_ns); });
    }
    SendLoop(0, start_ns);
    for (std::thread& t : threads) t.join();
    absl::MutexLock l(&mu_);
    mu_.Await(absl::Condition(this, &OpenLoop::Drained));
    report->max_send_lag_ns = max_send_lag_ns_;
    report->late_sends = late_sends_;
  }

 private:
  void SendLoop(int index, int64_t start_ns) {
    // Wake up on time: the default 50us timer slack would skew arrivals.
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    PoissonSchedule schedule(options_.rate / options_.senders,
                             options_.seed ^ (0x9e3779b97f4a7c15ULL * (index + 1)));
    int64_t arrival = start_ns;
    int64_t max_lag = 0;
    uint64_t late = 0;
    uint64_t next_channel = static_cast<uint64_t>(index);
    for (;;) {
      arrival += schedule.NextGapNanos();
      if (arrival >= window_.end_ns) break;
      const bool measured = arrival >= window_.measure_from_ns;
      if (measured && window_.count > 0 &&
          measured_sent_.fetch_add(1, std::memory_order_relaxed) >= window_.count) {
        break;
      }
      if (NowNanos() < arrival) SleepUntilNanos(arrival);
      // At the bound, wait for room. The arrival time stays, so the wait is
      // counted as latency. Every step down to below the bound is followed
      // by an unlock of mu_ (here or in an answer), which wakes the waiters.
      while (in_flight_.fetch_add(1, std::memory_order_acq_rel) >= options_.max_in_flight) {
        in_flight_.fetch_sub(1, std::memory_order_acq_rel);
        absl::MutexLock l(&mu_);
        mu_.Await(absl::Condition(this, &OpenLoop::HasRoom));
      }
      const int64_t lag = NowNanos() - arrival;
      if (measured) {
        max_lag = std::max(max_lag, lag);
        if (lag > kLateSendNanos) ++late;
      }
      const int channel = static_cast<int>(next_channel % options_.channels);
      next_channel += options_.senders;
      sender_->Send(channel, [self = shared_from_this(), arrival, measured](CallOutcome outcome) {
        const int64_t now = NowNanos();
        if (measured) self->recorder_->Record(outcome, now - arrival, now);
        const int before = self->in_flight_.fetch_sub(1, std::memory_order_acq_rel);
        if (before == self->options_.max_in_flight || before == 1) {
          // Someone may wait for room, or for the last answer: unlocking
          // makes the mutex evaluate their conditions again.
          absl::MutexLock l(&self->mu_);
        }
      });
    }
    absl::MutexLock l(&mu_);
    max_send_lag_ns_ = std::max(max_send_lag_ns_, max_lag);
    late_sends_ += late;
  }

  bool HasRoom() const {
    return in_flight_.load(std::memory_order_acquire) < options_.max_in_flight;
  }
  bool Drained() const { return in_flight_.load(std::memory_order_acquire) == 0; }

  const BenchOptions options_;
  const Window window_;
  CallSender* const sender_;
  Recorder* const recorder_;
  std::atomic<int64_t> measured_sent_{0};
  // Calls sent and not answered. Changed without the lock; waiters on mu_
  // are woken by a lock-unlock after the changes they wait for.
  std::atomic<int> in_flight_{0};
  absl::Mutex mu_;
  int64_t max_send_lag_ns_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t late_sends_ ABSL_GUARDED_BY(mu_) = 0;
};

// One call in flight: its context, request, response and continuation.
template <typename Request, typename Response>
struct Call {
  grpc::ClientContext context;
  Request request;
  Response response;
  CallSender::Done done;
};

class GrpcSender final : public CallSender {
 public:
  GrpcSender(const BenchOptions& o, std::vector<std::shared_ptr<grpc::Channel>> channels)
      : options_(o), channels_(std::move(channels)), keys_(o.key_prefix, o.keys, o.zipf, o.seed) {
    if (o.payload_mix.empty()) {
      payloads_.emplace_back(static_cast<size_t>(o.payload_bytes), 'x');
    } else {
      std::vector<double> weights;
      for (const PayloadChoice& choice : o.payload_mix) {
        payloads_.emplace_back(static_cast<size_t>(choice.bytes), 'x');
        weights.push_back(choice.weight);
      }
      payload_draws_ = std::make_unique<WeightedSequence>(weights, o.seed ^ 0x5851f42d4c957f2dULL);
    }
    for (const auto& c : channels_) {
      sidecars_.push_back(fanout::v1::Sidecar::NewStub(c));
      echoes_.push_back(fanout::v1::Echo::NewStub(c));
    }
  }

  void Send(int channel, Done done) override {
    switch (options_.rpc) {
      case Rpc::kGet:
        return SendGet(channel, std::move(done));
      case Rpc::kBatchGet:
        return SendBatchGet(channel, std::move(done));
      case Rpc::kRoute:
        return SendRoute(channel, std::move(done));
      case Rpc::kEcho:
        return SendEcho(channel, std::move(done));
    }
  }

 private:
  template <typename C>
  C* NewCall(Done done) {
    auto* c = new C;
    c->context.set_deadline(std::chrono::system_clock::now() +
                            absl::ToChronoNanoseconds(options_.timeout));
    c->done = std::move(done);
    return c;
  }

  // Finishes a call: `outcome` comes from the status and the response.
  template <typename C>
  static void Finish(C* c, CallOutcome outcome) {
    Done done = std::move(c->done);
    delete c;
    std::move(done)(outcome);
  }

  void SendGet(int channel, Done done) {
    using C = Call<fanout::v1::GetRequest, fanout::v1::GetResponse>;
    C* c = NewCall<C>(std::move(done));
    c->request.set_key(keys_.Next());
    if (!options_.ns.empty()) c->request.set_namespace_(options_.ns);
    sidecars_[channel]->async()->Get(&c->context, &c->request, &c->response,
                                     [c](grpc::Status status) {
                                       CallOutcome outcome{status.error_code(), -1};
                                       if (status.ok()) outcome.tier = c->response.served_by();
                                       Finish(c, outcome);
                                     });
  }

  void SendBatchGet(int channel, Done done) {
    using C = Call<fanout::v1::BatchGetRequest, fanout::v1::BatchGetResponse>;
    C* c = NewCall<C>(std::move(done));
    for (int i = 0; i < options_.batch_size; ++i) c->request.add_keys(keys_.Next());
    if (!options_.ns.empty()) c->request.set_namespace_(options_.ns);
    sidecars_[channel]->async()->BatchGet(
        &c->context, &c->request, &c->response, [this, c](grpc::Status status) {
          CallOutcome outcome{status.error_code(), -1};
          if (status.ok()) {
            // A batch succeeds only if every item does; a missing item is an
            // answer the server must never give.
            if (c->response.items_size() != options_.batch_size) {
              outcome.code = grpc::StatusCode::INTERNAL;
            }
            for (const fanout::v1::BatchGetItem& item : c->response.items()) {
              if (item.code() != 0 && outcome.code == grpc::StatusCode::OK) {
                outcome.code = static_cast<grpc::StatusCode>(item.code());
              }
              outcome.tier = std::max(outcome.tier, static_cast<int>(item.served_by()));
            }
          }
          Finish(c, outcome);
        });
  }

  // The next call's payload: the fixed one, or the next draw of the mix.
  const std::string& NextPayload() {
    return payload_draws_ == nullptr ? payloads_[0] : payloads_[payload_draws_->Next()];
  }

  void SendRoute(int channel, Done done) {
    using C = Call<fanout::v1::RouteRequest, fanout::v1::RouteResponse>;
    C* c = NewCall<C>(std::move(done));
    c->request.set_route(options_.route);
    c->request.set_payload(NextPayload());
    c->request.set_cost(options_.cost);
    const int bytes = static_cast<int>(c->request.payload().size());
    sidecars_[channel]->async()->Route(&c->context, &c->request, &c->response,
                                       [c, bytes](grpc::Status status) {
                                         Finish(c, CallOutcome{status.error_code(), -1, bytes});
                                       });
  }

  void SendEcho(int channel, Done done) {
    using C = Call<fanout::v1::EchoRequest, fanout::v1::EchoResponse>;
    C* c = NewCall<C>(std::move(done));
    c->request.set_payload(NextPayload());
    const int bytes = static_cast<int>(c->request.payload().size());
    echoes_[channel]->async()->Echo(&c->context, &c->request, &c->response,
                                    [c, bytes](grpc::Status status) {
                                      Finish(c, CallOutcome{status.error_code(), -1, bytes});
                                    });
  }

  const BenchOptions options_;
  const std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<fanout::v1::Sidecar::Stub>> sidecars_;
  std::vector<std::unique_ptr<fanout::v1::Echo::Stub>> echoes_;
  KeySequence keys_;
  std::vector<std::string> payloads_;                // the fixed payload, or one per mix entry
  std::unique_ptr<WeightedSequence> payload_draws_;  // with a mix only
};

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", static_cast<unsigned char>(c));
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

double Micros(uint64_t nanos) { return static_cast<double>(nanos) / 1000.0; }

constexpr const char* kTierNames[] = {"unspecified", "l1", "l2", "l3", "origin"};

}  // namespace

std::string StatusCodeName(int code) {
  // grpc::StatusCode and absl::StatusCode share their numbers and names.
  if (code < 0 || code >= StatusCounts::kCodes) return absl::StrCat("CODE_", code);
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

void StatusCounts::Add(grpc::StatusCode code, uint64_t n) {
  int i = static_cast<int>(code);
  if (i < 0 || i >= kCodes) i = grpc::StatusCode::UNKNOWN;
  counts_[i] += n;
}

void StatusCounts::Merge(const StatusCounts& other) {
  for (int i = 0; i < kCodes; ++i) counts_[i] += other.counts_[i];
}

uint64_t StatusCounts::of(grpc::StatusCode code) const {
  const int i = static_cast<int>(code);
  return i < 0 || i >= kCodes ? 0 : counts_[i];
}

uint64_t StatusCounts::total() const {
  uint64_t n = 0;
  for (uint64_t c : counts_) n += c;
  return n;
}

std::map<std::string, uint64_t> StatusCounts::ErrorsByName() const {
  std::map<std::string, uint64_t> out;
  for (int i = 1; i < kCodes; ++i) {
    if (counts_[i] != 0) out[StatusCodeName(i)] = counts_[i];
  }
  return out;
}

double Report::Throughput() const {
  return elapsed_seconds > 0 ? static_cast<double>(codes.ok()) / elapsed_seconds : 0;
}

void Recorder::Record(const CallOutcome& outcome, int64_t latency_ns, int64_t answered_ns) {
  absl::MutexLock l(&mu_);
  codes_.Add(outcome.code);
  if (outcome.code == grpc::StatusCode::OK) {
    latency_.Record(static_cast<uint64_t>(std::max<int64_t>(latency_ns, 0)));
    if (outcome.tier >= 0 && outcome.tier < static_cast<int>(served_by_.size())) {
      ++served_by_[outcome.tier];
    }
  }
  last_answer_ns_ = std::max(last_answer_ns_, answered_ns);
  if (keep_calls_) {
    calls_.push_back(CallRecord{answered_ns - latency_ns, latency_ns,
                                static_cast<int>(outcome.code), outcome.payload_bytes});
  }
}

void Recorder::Collect(int64_t window_start_ns, Report* report) {
  absl::MutexLock l(&mu_);
  report->codes.Merge(codes_);
  report->latency.Merge(latency_);
  for (size_t i = 0; i < served_by_.size(); ++i) report->served_by[i] += served_by_[i];
  report->elapsed_seconds =
      codes_.total() == 0 ? 0 : static_cast<double>(last_answer_ns_ - window_start_ns) / 1e9;
  for (CallRecord& c : calls_) c.start_ns -= window_start_ns;
  report->calls.insert(report->calls.end(), calls_.begin(), calls_.end());
  codes_ = StatusCounts();
  latency_ = LatencyHistogram();
  served_by_ = {};
  calls_.clear();
}

absl::StatusOr<std::unique_ptr<CallSender>> NewGrpcSender(const BenchOptions& options,
                                                          absl::Duration connect_timeout) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < options.channels; ++i) {
    grpc::ChannelArguments args;
    // Channels with equal arguments may share a connection: make each one
    // distinct, and keep its subchannels to itself.
    args.SetInt("fanout.bench.channel_id", i);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetMaxReceiveMessageSize(-1);
    std::shared_ptr<grpc::Channel> channel =
        grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(), args);
    if (!channel->WaitForConnected(std::chrono::system_clock::now() +
                                   absl::ToChronoNanoseconds(connect_timeout))) {
      return absl::UnavailableError(absl::StrCat("--target: cannot connect to ", options.target,
                                                 " within ",
                                                 absl::FormatDuration(connect_timeout)));
    }
    channels.push_back(std::move(channel));
  }
  return std::make_unique<GrpcSender>(options, std::move(channels));
}

Report RunLoad(const BenchOptions& options, CallSender* sender) {
  Report report;
  report.options = options;
  Recorder recorder(/*keep_calls=*/!options.calls_out.empty());
  const int64_t start = NowNanos();
  const Window window = WindowFor(options, start);
  if (options.mode == LoadMode::kClosed) {
    std::make_shared<ClosedLoop>(options, window, sender, &recorder)->Run();
  } else {
    std::make_shared<OpenLoop>(options, window, sender, &recorder)->Run(start, &report);
  }
  recorder.Collect(window.measure_from_ns, &report);
  return report;
}

std::string FormatText(const Report& r) {
  const BenchOptions& o = r.options;
  std::string out = absl::StrCat(RpcName(o.rpc), ", ", LoadModeName(o.mode), " loop, ");
  if (o.mode == LoadMode::kClosed) {
    absl::StrAppend(&out, o.concurrency, " in flight");
  } else {
    absl::StrAppendFormat(&out, "%.0f calls/s offered", o.rate);
  }
  absl::StrAppend(&out, ", ", o.channels, " channel(s), target ", o.target, "\n");
  absl::StrAppendFormat(&out, "  measured %.2fs: %d calls, %d ok, %d errors", r.elapsed_seconds,
                        r.codes.total(), r.codes.ok(), r.codes.errors());
  for (const auto& [name, n] : r.codes.ErrorsByName()) absl::StrAppend(&out, " ", name, "=", n);
  absl::StrAppendFormat(&out, "\n  throughput %.1f ok/s\n", r.Throughput());
  const LatencyHistogram& h = r.latency;
  absl::StrAppendFormat(&out,
                        "  latency us (ok calls): min %.1f  p50 %.1f  p90 %.1f  p99 %.1f  "
                        "p99.9 %.1f  max %.1f  mean %.1f\n",
                        Micros(h.min()), Micros(h.Percentile(50)), Micros(h.Percentile(90)),
                        Micros(h.Percentile(99)), Micros(h.Percentile(99.9)), Micros(h.max()),
                        h.mean() / 1000.0);
  if (o.rpc == Rpc::kGet || o.rpc == Rpc::kBatchGet) {
    absl::StrAppend(&out, "  served by:");
    for (size_t i = 0; i < r.served_by.size(); ++i) {
      if (r.served_by[i] != 0) absl::StrAppend(&out, " ", kTierNames[i], "=", r.served_by[i]);
    }
    absl::StrAppend(&out, "\n");
  }
  if (o.mode == LoadMode::kOpen) {
    absl::StrAppendFormat(&out, "  generator: max send lag %.1fus, %d sends later than 1ms\n",
                          Micros(static_cast<uint64_t>(r.max_send_lag_ns)), r.late_sends);
  }
  return out;
}

std::string FormatJson(const Report& r) {
  const BenchOptions& o = r.options;
  const LatencyHistogram& h = r.latency;
  std::string out = absl::StrCat(
      "{\"rpc\":", JsonString(RpcName(o.rpc)), ",\"mode\":", JsonString(LoadModeName(o.mode)),
      ",\"target\":", JsonString(o.target), ",\"channels\":", o.channels);
  if (o.mode == LoadMode::kClosed) {
    absl::StrAppend(&out, ",\"concurrency\":", o.concurrency);
  } else {
    absl::StrAppendFormat(&out, ",\"rate\":%.3f", o.rate);
  }
  absl::StrAppendFormat(&out,
                        ",\"elapsed_s\":%.6f,\"calls\":%d,\"ok\":%d,\"errors\":%d,"
                        "\"errors_by_code\":{",
                        r.elapsed_seconds, r.codes.total(), r.codes.ok(), r.codes.errors());
  bool first = true;
  for (const auto& [name, n] : r.codes.ErrorsByName()) {
    absl::StrAppend(&out, first ? "" : ",", JsonString(name), ":", n);
    first = false;
  }
  absl::StrAppendFormat(&out,
                        "},\"throughput\":%.3f,\"latency_us\":{\"min\":%.3f,\"p50\":%.3f,"
                        "\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f,\"mean\":%.3f}",
                        r.Throughput(), Micros(h.min()), Micros(h.Percentile(50)),
                        Micros(h.Percentile(90)), Micros(h.Percentile(99)),
                        Micros(h.Percentile(99.9)), Micros(h.max()), h.mean() / 1000.0);
  absl::StrAppend(&out, ",\"served_by\":{");
  for (size_t i = 0; i < r.served_by.size(); ++i) {
    absl::StrAppend(&out, i == 0 ? "" : ",", JsonString(kTierNames[i]), ":", r.served_by[i]);
  }
  absl::StrAppend(&out, "}");
  if (o.mode == LoadMode::kOpen) {
    absl::StrAppendFormat(&out, ",\"max_send_lag_us\":%.3f,\"late_sends\":%d",
                          Micros(static_cast<uint64_t>(r.max_send_lag_ns)), r.late_sends);
  }
  absl::StrAppend(&out, "}");
  return out;
}

std::string FormatCalls(const Report& r) {
  std::vector<CallRecord> calls = r.calls;
  std::stable_sort(calls.begin(), calls.end(), [](const CallRecord& a, const CallRecord& b) {
    return a.start_ns < b.start_ns;
  });
  std::string out = "# start_ns latency_ns code payload_bytes\n";
  out.reserve(out.size() + calls.size() * 32);
  for (const CallRecord& c : calls) {
    absl::StrAppend(&out, c.start_ns, " ", c.latency_ns, " ", c.code, " ", c.payload_bytes, "\n");
  }
  return out;
}

}  // namespace fanout::bench
