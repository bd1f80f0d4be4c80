// A fanout.v1.Origin gRPC server on 127.0.0.1 with canned values, a delay
// knob and an outage switch. Answers after the delay from a timer, so no
// gRPC thread waits. Its Watch answers UNIMPLEMENTED until EnableWatch;
// then each call stays open, and the test pushes events to the open
// streams or ends them. Thread-safe.
#ifndef FANOUT_TESTS_TESTING_FAKE_GRPC_ORIGIN_H_
#define FANOUT_TESTS_TESTING_FAKE_GRPC_ORIGIN_H_

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/executor.h"
#include "fanout/v1/sidecar.grpc.pb.h"

namespace fanout::testing {

class FakeGrpcOrigin final : public fanout::v1::Origin::CallbackService {
 public:
  // Listens on `listen` (a free port by default; an address a stopped fake
  // used, to bring it back).
  static std::unique_ptr<FakeGrpcOrigin> Start(const std::string& listen = "127.0.0.1:0") {
    std::unique_ptr<FakeGrpcOrigin> o(new FakeGrpcOrigin());
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(o.get());
    o->server_ = builder.BuildAndStart();
    o->address_ = absl::StrCat("127.0.0.1:", port);
    return o;
  }
  ~FakeGrpcOrigin() override {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
    {
      // The shutdown cancelled the open streams; their reactors end soon.
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(
          +[](FakeGrpcOrigin* o) ABSL_NO_THREAD_SAFETY_ANALYSIS { return o->live_streams_ == 0; },
          this));
    }
    executor_.reset();
  }

  const std::string& address() const { return address_; }
  void Set(const std::string& key, const std::string& value, int64_t version = 1) {
    absl::MutexLock l(&mu_);
    values_[key] = {value, version};
  }
  void SetDelay(absl::Duration d) {
    absl::MutexLock l(&mu_);
    delay_ = d;
  }
  void SetDown(bool down) { down_.store(down); }
  int fetches() const { return fetches_.load(); }
  // The `traceparent` metadata of the last Fetch; empty when it carried none.
  std::string last_traceparent() {
    absl::MutexLock l(&mu_);
    return last_traceparent_;
  }
  int in_flight() const { return in_flight_.load(); }

  // Watch: serve it (true) or answer UNIMPLEMENTED (false, the default).
  // Calls made while down (SetDown) answer UNAVAILABLE.
  void EnableWatch(bool on) {
    absl::MutexLock l(&mu_);
    watch_enabled_ = on;
  }
  // Sends `event` on every open Watch stream (in order after the ones sent
  // before). Returns how many streams it went to.
  int Push(const fanout::v1::OriginChangeEvent& event) {
    absl::MutexLock l(&mu_);
    for (WatchStream* s : streams_) s->Send(event);
    return static_cast<int>(streams_.size());
  }
  // Ends every open Watch stream with `status`, after what was pushed.
  void EndWatches(const grpc::Status& status = grpc::Status::OK) {
    absl::MutexLock l(&mu_);
    for (WatchStream* s : streams_) s->End(status);
    streams_.clear();
  }
  // Watch calls received (answered or not), and streams open now.
  int watch_calls() {
    absl::MutexLock l(&mu_);
    return static_cast<int>(watch_requests_.size());
  }
  int watching() {
    absl::MutexLock l(&mu_);
    return static_cast<int>(streams_.size());
  }
  // The requests of every Watch call so far, in order.
  std::vector<fanout::v1::OriginWatchRequest> watch_requests() {
    absl::MutexLock l(&mu_);
    return watch_requests_;
  }

  grpc::ServerWriteReactor<fanout::v1::OriginChangeEvent>* Watch(
      grpc::CallbackServerContext* context,
      const fanout::v1::OriginWatchRequest* request) override {
    (void)context;
    absl::MutexLock l(&mu_);
    watch_requests_.push_back(*request);
    ++live_streams_;
    auto* stream = new WatchStream(this);
    if (down_.load()) {
      stream->End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake origin is down"));
    } else if (!watch_enabled_) {
      stream->End(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "no Watch here"));
    } else {
      streams_.push_back(stream);
      stream->Open();
    }
    return stream;
  }

  grpc::ServerUnaryReactor* Fetch(grpc::CallbackServerContext* context,
                                  const fanout::v1::FetchRequest* request,
                                  fanout::v1::FetchResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    {
      const auto& metadata = context->client_metadata();
      auto it = metadata.find("traceparent");
      absl::MutexLock l(&mu_);
      last_traceparent_ =
          it == metadata.end() ? "" : std::string(it->second.data(), it->second.size());
    }
    fetches_.fetch_add(1);
    if (down_.load()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake origin is down"));
      return reactor;
    }
    absl::Duration delay;
    {
      absl::MutexLock l(&mu_);
      delay = delay_;
      auto it = values_.find(request->key());
      if (it != values_.end()) {
        response->set_found(true);
        response->set_value(it->second.first);
        response->set_version(it->second.second);
      } else {
        response->set_found(false);
      }
    }
    in_flight_.fetch_add(1);
    executor_->ScheduleAfter(delay, [this, reactor] {
      in_flight_.fetch_sub(1);
      reactor->Finish(grpc::Status::OK);
    });
    return reactor;
  }

 private:
  // One Watch call: writes one event at a time from its queue; ends when
  // told (after the queue) or cancelled. Deletes itself when done.
  class WatchStream final : public grpc::ServerWriteReactor<fanout::v1::OriginChangeEvent> {
   public:
    explicit WatchStream(FakeGrpcOrigin* origin) : origin_(origin) {}
    // The headers at once: the client knows the stream is open.
    void Open() { StartSendInitialMetadata(); }
    void Send(const fanout::v1::OriginChangeEvent& event) {
      const fanout::v1::OriginChangeEvent* first = nullptr;
      {
        absl::MutexLock l(&mu_);
        if (ending_) return;
        queue_.push_back(event);
        if (writing_) return;
        writing_ = true;
        first = &queue_.front();
      }
      StartWrite(first);
    }
    void End(const grpc::Status& status) {
      {
        absl::MutexLock l(&mu_);
        if (ending_) return;
        ending_ = true;
        status_ = status;
        if (writing_) return;  // OnWriteDone finishes
        finished_ = true;
      }
      Finish(status);
    }

    void OnSendInitialMetadataDone(bool) override {}
    void OnWriteDone(bool ok) override {
      const fanout::v1::OriginChangeEvent* next = nullptr;
      grpc::Status finish;
      bool finish_now = false;
      {
        absl::MutexLock l(&mu_);
        queue_.pop_front();
        if (!ok) {
          ending_ = true;
          queue_.clear();
        }
        if (!queue_.empty()) {
          next = &queue_.front();
        } else {
          writing_ = false;
          if (ending_ && !finished_) {
            finished_ = true;
            finish_now = true;
            finish = status_;
          }
        }
      }
      if (next != nullptr) StartWrite(next);
      if (finish_now) Finish(finish);
    }
    void OnCancel() override {
      origin_->Forget(this);
      End(grpc::Status::CANCELLED);
    }
    void OnDone() override {
      origin_->Forget(this);
      {
        absl::MutexLock l(&origin_->mu_);
        --origin_->live_streams_;
      }
      delete this;
    }

   private:
    FakeGrpcOrigin* const origin_;
    absl::Mutex mu_;
    // Elements stay put while later ones are added (the front is being written).
    std::deque<fanout::v1::OriginChangeEvent> queue_ ABSL_GUARDED_BY(mu_);
    bool writing_ ABSL_GUARDED_BY(mu_) = false;
    bool ending_ ABSL_GUARDED_BY(mu_) = false;
    bool finished_ ABSL_GUARDED_BY(mu_) = false;
    grpc::Status status_ ABSL_GUARDED_BY(mu_);
  };

  void Forget(WatchStream* stream) {
    absl::MutexLock l(&mu_);
    streams_.erase(std::remove(streams_.begin(), streams_.end(), stream), streams_.end());
  }

  FakeGrpcOrigin() : executor_(ThreadPoolExecutor::Create(1, "fake-origin")) {}

  std::unique_ptr<ThreadPoolExecutor> executor_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::pair<std::string, int64_t>> values_ ABSL_GUARDED_BY(mu_);
  absl::Duration delay_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  std::string last_traceparent_ ABSL_GUARDED_BY(mu_);
  bool watch_enabled_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<WatchStream*> streams_ ABSL_GUARDED_BY(mu_);  // open, not told to end
  int live_streams_ ABSL_GUARDED_BY(mu_) = 0;               // reactors not yet done
  std::vector<fanout::v1::OriginWatchRequest> watch_requests_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> down_{false};
  std::atomic<int> fetches_{0};
  std::atomic<int> in_flight_{0};
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_FAKE_GRPC_ORIGIN_H_
