// fanout-echo-server: the benchmark floor. It serves fanout.v1.Echo on the
// same gRPC stack and threading as fanoutd (callback API, gRPC's default
// threads, answers inline) and does nothing else, so that what a fanoutd
// call costs above an Echo call is fanoutd's own work. With
// --answer_from_thread, every call is finished from a thread of the
// server's own, as fanoutd finishes a call whose answer came from Redis or
// an origin: the floor for a call that waits on something.
#include <signal.h>

#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "fanout/v1/sidecar.grpc.pb.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0", "gRPC address (host:port; port 0 = any free port)");
ABSL_FLAG(int, reply_bytes, -1, "size of every reply's payload; -1 = echo the request's payload");
ABSL_FLAG(bool, answer_from_thread, false,
          "finish every call from a thread of the server's own instead of inline");

namespace {

// One thread finishing the calls handed to it, in order.
class Finisher {
 public:
  Finisher() : thread_([this] { Loop(); }) {}
  ~Finisher() {
    {
      absl::MutexLock l(&mu_);
      stop_ = true;
    }
    thread_.join();
  }
  void Finish(grpc::ServerUnaryReactor* reactor) {
    absl::MutexLock l(&mu_);
    queue_.push_back(reactor);
  }

 private:
  void Loop() {
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); };
    for (;;) {
      grpc::ServerUnaryReactor* reactor;
      {
        absl::MutexLock l(&mu_);
        mu_.Await(absl::Condition(&ready));
        if (queue_.empty()) return;
        reactor = queue_.front();
        queue_.pop_front();
      }
      reactor->Finish(grpc::Status::OK);
    }
  }

  absl::Mutex mu_;
  std::deque<grpc::ServerUnaryReactor*> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

class EchoService final : public fanout::v1::Echo::CallbackService {
 public:
  EchoService(int reply_bytes, Finisher* finisher)
      : echo_request_(reply_bytes < 0),
        reply_(reply_bytes < 0 ? 0 : reply_bytes, 'x'),
        finisher_(finisher) {}

  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const fanout::v1::EchoRequest* request,
                                 fanout::v1::EchoResponse* response) override {
    response->set_payload(echo_request_ ? request->payload() : reply_);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (finisher_ != nullptr) {
      finisher_->Finish(reactor);
    } else {
      reactor->Finish(grpc::Status::OK);
    }
    return reactor;
  }

 private:
  const bool echo_request_;
  const std::string reply_;
  Finisher* const finisher_;
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("fanout-echo-server [--listen ADDR] [--reply_bytes N]");
  absl::ParseCommandLine(argc, argv);
#ifdef NDEBUG
  // As fanoutd does: without this, every absl::Mutex in gRPC runs Abseil's
  // deadlock detection (Debian builds Abseil with its debug checks).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string listen = absl::GetFlag(FLAGS_listen);
  std::unique_ptr<Finisher> finisher;
  if (absl::GetFlag(FLAGS_answer_from_thread)) finisher = std::make_unique<Finisher>();
  EchoService service(absl::GetFlag(FLAGS_reply_bytes), finisher.get());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "fanout-echo-server: cannot listen on \"%s\"\n", listen.c_str());
    return 2;
  }
  std::string address = listen;
  if (const size_t colon = listen.rfind(':');
      !absl::StartsWith(listen, "unix:") && colon != std::string::npos) {
    address = absl::StrCat(listen.substr(0, colon), ":", port);
  }
  std::fprintf(stderr, "fanout-echo-server listening on %s\n", address.c_str());

  std::thread signal_thread([&signals, &server] {
    int sig = 0;
    sigwait(&signals, &sig);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  });
  server->Wait();
  signal_thread.join();
  return 0;
}
