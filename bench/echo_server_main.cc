// fanout-echo-server: the benchmark floor. It serves fanout.v1.Echo on the
// same gRPC stack and threading as fanoutd (callback API, gRPC's default
// threads, answers inline) and does nothing else, so that what a fanoutd
// call costs above an Echo call is fanoutd's own work.
#include <signal.h>

#include <cstdio>
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

namespace {

class EchoService final : public fanout::v1::Echo::CallbackService {
 public:
  explicit EchoService(int reply_bytes)
      : echo_request_(reply_bytes < 0), reply_(reply_bytes < 0 ? 0 : reply_bytes, 'x') {}

  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const fanout::v1::EchoRequest* request,
                                 fanout::v1::EchoResponse* response) override {
    response->set_payload(echo_request_ ? request->payload() : reply_);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  const bool echo_request_;
  const std::string reply_;
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
  EchoService service(absl::GetFlag(FLAGS_reply_bytes));
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
