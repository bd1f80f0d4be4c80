// A fanout.v1.Origin gRPC server on 127.0.0.1 with canned values, a delay
// knob and an outage switch. Answers after the delay from a timer, so no
// gRPC thread waits. Thread-safe.
#ifndef FANOUT_TESTS_TESTING_FAKE_GRPC_ORIGIN_H_
#define FANOUT_TESTS_TESTING_FAKE_GRPC_ORIGIN_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>

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
  FakeGrpcOrigin() : executor_(ThreadPoolExecutor::Create(1, "fake-origin")) {}

  std::unique_ptr<ThreadPoolExecutor> executor_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::pair<std::string, int64_t>> values_ ABSL_GUARDED_BY(mu_);
  absl::Duration delay_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  std::string last_traceparent_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> down_{false};
  std::atomic<int> fetches_{0};
  std::atomic<int> in_flight_{0};
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_FAKE_GRPC_ORIGIN_H_
