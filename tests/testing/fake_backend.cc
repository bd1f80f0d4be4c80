#include "tests/testing/fake_backend.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <random>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace fanout::testing {
namespace {

constexpr char kCostHeader[] = "fanout-cost";

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

}  // namespace

std::string FormatCounters(const FakeBackendCounters& c) {
  return absl::StrCat("calls=", c.calls, " ok=", c.ok, " failed=", c.failed,
                      " cancelled=", c.cancelled, " in_flight=", c.in_flight, " queued=", c.queued);
}

int64_t FakeBackendCost(absl::string_view cost_header, size_t payload_bytes) {
  int64_t cost = 0;
  if (absl::SimpleAtoi(cost_header, &cost) && cost > 0) return cost;
  return std::max<int64_t>(1, static_cast<int64_t>(payload_bytes / 4));
}

absl::Duration FakeBackendServiceTime(const FakeBackendOptions& options, size_t payload_bytes,
                                      int64_t cost, double u) {
  const absl::Duration base = options.delay +
                              options.delay_per_kb * (static_cast<double>(payload_bytes) / 1024) +
                              options.delay_per_cost * cost;
  const absl::Duration service = base * (1 + options.jitter_ratio * u) + options.jitter * u;
  return std::max(service, absl::ZeroDuration());
}

absl::StatusOr<FakeBackendCounters> ParseCounters(absl::string_view text) {
  FakeBackendCounters c;
  const std::pair<const char*, int64_t*> fields[] = {
      {"calls", &c.calls},         {"ok", &c.ok},
      {"failed", &c.failed},       {"cancelled", &c.cancelled},
      {"in_flight", &c.in_flight}, {"queued", &c.queued}};
  absl::flat_hash_map<std::string, std::string> values;
  for (absl::string_view item : absl::StrSplit(text, ' ', absl::SkipWhitespace())) {
    const std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    values[kv.first] = kv.second;
  }
  for (const auto& [name, out] : fields) {
    auto it = values.find(name);
    if (it == values.end() || !absl::SimpleAtoi(absl::StripAsciiWhitespace(it->second), out)) {
      return absl::InvalidArgumentError(
          absl::StrCat("fake backend counters: no number for '", name, "' in \"", text, "\""));
    }
  }
  return c;
}

absl::StatusOr<FakeBackendCounters> ReadFakeBackendCounters(const std::string& address,
                                                            absl::Duration timeout) {
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::Slice empty;
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&context, kFakeBackendStatsMethod, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("fake backend ", address, ": ", status.error_message()));
  }
  return ParseCounters(Flatten(response));
}

class FakeBackend::Impl final : public grpc::CallbackGenericService,
                                public std::enable_shared_from_this<Impl> {
 public:
  Impl(FakeBackendOptions options, Executor* executor)
      : name_(options.name),
        echo_(options.echo),
        executor_(executor),
        options_(std::move(options)),
        rng_(options_.seed) {}

  ~Impl() override { server_.reset(); }

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    Reactor* reactor;
    {
      absl::MutexLock l(&mu_);
      const uint64_t id = next_id_++;
      reactor = new Reactor(this, ctx, id);
      calls_[id].reactor = reactor;
    }
    reactor->Begin();
    return reactor;
  }

  void Shutdown() {
    if (server_ == nullptr) return;
    // Cancels what is in flight at once; OnCancel finishes each call.
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }

  FakeBackendCounters counters() const {
    absl::MutexLock l(&mu_);
    return counters_;
  }
  std::string last_traceparent() const {
    absl::MutexLock l(&mu_);
    return last_traceparent_;
  }
  void SetDelay(absl::Duration delay) {
    absl::MutexLock l(&mu_);
    options_.delay = delay;
  }
  void SetFailProb(double fail_prob) {
    absl::MutexLock l(&mu_);
    options_.fail_prob = fail_prob;
  }

  std::unique_ptr<grpc::Server> server_;
  const std::string& name() const { return name_; }

 private:
  class Reactor final : public grpc::ServerGenericBidiReactor {
   public:
    Reactor(Impl* impl, grpc::GenericCallbackServerContext* ctx, uint64_t id)
        : impl_(impl), ctx_(ctx), id_(id) {}
    void Begin() { StartRead(&request_); }
    void OnReadDone(bool ok) override { impl_->OnRequest(this, ok); }
    void OnWriteDone(bool ok) override {}
    void OnCancel() override { impl_->OnCancel(id_); }
    void OnDone() override {
      impl_->OnDone(id_);
      delete this;
    }
    void Answer(const grpc::Status& status, const std::string& payload) {
      if (!status.ok()) {
        Finish(status);
        return;
      }
      grpc::Slice slice(payload.data(), payload.size());
      response_ = grpc::ByteBuffer(&slice, 1);
      StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
    }

    Impl* const impl_;
    grpc::GenericCallbackServerContext* const ctx_;
    const uint64_t id_;
    grpc::ByteBuffer request_;
    grpc::ByteBuffer response_;
  };

  enum class Phase { kReading, kQueued, kServing, kFinished };

  struct CallState {
    Reactor* reactor = nullptr;
    Phase phase = Phase::kReading;
    TimerId timer = kNoTimer;
    absl::Duration service;
    bool fail = false;
    std::string reply;
  };

  void OnRequest(Reactor* reactor, bool ok) {
    if (!ok || reactor->ctx_->method() == kFakeBackendStatsMethod) {
      std::string text;
      {
        absl::MutexLock l(&mu_);
        auto it = calls_.find(reactor->id_);
        if (it == calls_.end() || it->second.phase == Phase::kFinished) return;
        it->second.phase = Phase::kFinished;
        text = FormatCounters(counters_);
      }
      if (!ok) {
        reactor->Answer(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request message"), "");
      } else {
        reactor->Answer(grpc::Status::OK, text);
      }
      return;
    }
    std::string cost_header;
    const auto& metadata = reactor->ctx_->client_metadata();
    if (auto it = metadata.find(kCostHeader); it != metadata.end()) {
      cost_header.assign(it->second.data(), it->second.size());
    }
    std::string traceparent;
    if (auto it = metadata.find("traceparent"); it != metadata.end()) {
      traceparent.assign(it->second.data(), it->second.size());
    }
    const size_t bytes = reactor->request_.Length();
    const int64_t cost = FakeBackendCost(cost_header, bytes);
    std::string reply = echo_ ? Flatten(reactor->request_) : std::string();
    absl::MutexLock l(&mu_);
    auto it = calls_.find(reactor->id_);
    if (it == calls_.end() || it->second.phase == Phase::kFinished)
      return;  // cancelled while reading
    CallState& call = it->second;
    last_traceparent_ = std::move(traceparent);
    ++counters_.calls;
    ++counters_.in_flight;
    double u = 0;
    if (options_.jitter > absl::ZeroDuration() || options_.jitter_ratio > 0) {
      u = std::uniform_real_distribution<double>(-1.0, 1.0)(rng_);
    }
    call.service = FakeBackendServiceTime(options_, bytes, cost, u);
    call.fail = options_.fail_prob > 0 &&
                std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < options_.fail_prob;
    call.reply = echo_ ? std::move(reply) : name_;
    if (options_.capacity <= 0 || serving_ < options_.capacity) {
      ServeLocked(reactor->id_, call);
    } else {
      call.phase = Phase::kQueued;
      queue_.push_back(reactor->id_);
      ++counters_.queued;
    }
  }

  void ServeLocked(uint64_t id, CallState& call) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    call.phase = Phase::kServing;
    ++serving_;
    std::weak_ptr<Impl> weak = weak_from_this();
    call.timer = executor_->ScheduleAfter(call.service, [weak, id] {
      if (auto impl = weak.lock()) impl->OnServed(id);
    });
  }

  // A slot freed: the longest-waiting call gets it.
  void FreeSlotLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    --serving_;
    while (!queue_.empty()) {
      const uint64_t next = queue_.front();
      queue_.pop_front();
      auto it = calls_.find(next);
      if (it == calls_.end() || it->second.phase != Phase::kQueued) continue;
      --counters_.queued;
      ServeLocked(next, it->second);
      return;
    }
  }

  void OnServed(uint64_t id) {
    Reactor* reactor;
    grpc::Status status;
    std::string reply;
    {
      absl::MutexLock l(&mu_);
      auto it = calls_.find(id);
      if (it == calls_.end() || it->second.phase != Phase::kServing) return;
      CallState& call = it->second;
      call.phase = Phase::kFinished;
      call.timer = kNoTimer;
      --counters_.in_flight;
      if (call.fail) {
        ++counters_.failed;
        status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake backend failure");
      } else {
        ++counters_.ok;
        reply = std::move(call.reply);
      }
      reactor = call.reactor;
      FreeSlotLocked();
    }
    reactor->Answer(status, reply);
  }

  void OnCancel(uint64_t id) {
    Reactor* reactor;
    {
      absl::MutexLock l(&mu_);
      auto it = calls_.find(id);
      if (it == calls_.end() || it->second.phase == Phase::kFinished) return;
      CallState& call = it->second;
      const Phase was = call.phase;
      call.phase = Phase::kFinished;
      reactor = call.reactor;
      if (was == Phase::kServing || was == Phase::kQueued) {
        ++counters_.cancelled;
        --counters_.in_flight;
      }
      if (was == Phase::kQueued) {
        --counters_.queued;
        queue_.erase(std::find(queue_.begin(), queue_.end(), id));
      }
      if (was == Phase::kServing) {
        executor_->CancelTimer(call.timer);
        call.timer = kNoTimer;
        FreeSlotLocked();
      }
    }
    reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
  }

  void OnDone(uint64_t id) {
    absl::MutexLock l(&mu_);
    calls_.erase(id);
  }

  const std::string name_;
  const bool echo_;
  Executor* const executor_;

  mutable absl::Mutex mu_;
  FakeBackendOptions options_ ABSL_GUARDED_BY(mu_);
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint64_t, CallState> calls_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> queue_ ABSL_GUARDED_BY(mu_);
  int serving_ ABSL_GUARDED_BY(mu_) = 0;
  FakeBackendCounters counters_ ABSL_GUARDED_BY(mu_);
  std::string last_traceparent_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<FakeBackend>> FakeBackend::Start(FakeBackendOptions options,
                                                                Executor* executor) {
  std::unique_ptr<FakeBackend> backend(new FakeBackend());
  if (executor == nullptr) {
    backend->own_executor_ = ThreadPoolExecutor::Create(1, "fake-backend");
    executor = backend->own_executor_.get();
  }
  const std::string listen = options.listen;
  backend->impl_ = std::make_shared<Impl>(std::move(options), executor);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterCallbackGenericService(backend->impl_.get());
  backend->impl_->server_ = builder.BuildAndStart();
  if (backend->impl_->server_ == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("fake backend: cannot listen on ", listen));
  }
  backend->port_ = port;
  const size_t colon = listen.rfind(':');
  backend->address_ =
      absl::StrCat(colon == std::string::npos ? listen : listen.substr(0, colon), ":", port);
  return backend;
}

void HoldGrpcCallbackQueue() {
  // A callback server with no listening port holds one reference to the
  // queue (no socket, no thread of its own), and is never destroyed.
  static grpc::Server* const holder = [] {
    static grpc::CallbackGenericService service;
    grpc::ServerBuilder builder;
    builder.RegisterCallbackGenericService(&service);
    return builder.BuildAndStart().release();
  }();
  (void)holder;
}

FakeBackend::~FakeBackend() {
  if (impl_ != nullptr) impl_->Shutdown();
  impl_.reset();
  own_executor_.reset();
}

const std::string& FakeBackend::name() const { return impl_->name(); }

FakeBackendCounters FakeBackend::counters() const { return impl_->counters(); }
std::string FakeBackend::last_traceparent() const { return impl_->last_traceparent(); }
void FakeBackend::SetDelay(absl::Duration delay) { impl_->SetDelay(delay); }
void FakeBackend::SetFailProb(double fail_prob) { impl_->SetFailProb(fail_prob); }

bool FakeBackend::WaitFor(absl::FunctionRef<bool(const FakeBackendCounters&)> done,
                          absl::Duration timeout) const {
  const absl::Time give_up = absl::Now() + timeout;
  for (;;) {
    if (done(counters())) return true;
    if (absl::Now() >= give_up) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
}

}  // namespace fanout::testing
