// fanout-outage-origin: a fanout.v1.Origin that knows every key, for the
// outage drill (its integration test and bench/run_outage.sh).
//
//   fanout-outage-origin --listen=127.0.0.1:0 --generation=N
//
// Answers any key K with found: true, value "g<N>:K" and version N, at once
// on the gRPC thread. Prints "listening on HOST:PORT" on stderr once
// serving; SIGTERM or SIGINT stops it (the drill uses SIGKILL and SIGSTOP).
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <cstdio>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "fanout/v1/sidecar.grpc.pb.h"

namespace {

class EveryKeyOrigin final : public fanout::v1::Origin::CallbackService {
 public:
  explicit EveryKeyOrigin(int64_t generation) : generation_(generation) {}

  grpc::ServerUnaryReactor* Fetch(grpc::CallbackServerContext* context,
                                  const fanout::v1::FetchRequest* request,
                                  fanout::v1::FetchResponse* response) override {
    response->set_found(true);
    response->set_value(absl::StrCat("g", generation_, ":", request->key()));
    response->set_version(generation_);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  const int64_t generation_;
};

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:0";
  int64_t generation = 1;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (absl::StartsWith(arg, "--listen=")) {
      listen = std::string(arg.substr(9));
    } else if (absl::StartsWith(arg, "--generation=")) {
      if (!absl::SimpleAtoi(arg.substr(13), &generation) || generation < 1) {
        std::fprintf(stderr, "--generation: want an integer >= 1, got '%s'\n", argv[i] + 13);
        return 2;
      }
    } else {
      std::fprintf(stderr, "unknown argument: %s\n", argv[i]);
      return 2;
    }
  }
  // Signals are taken by sigwait below, not by a handler.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  EveryKeyOrigin service(generation);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "cannot listen on %s\n", listen.c_str());
    return 1;
  }
  const std::string host = listen.substr(0, listen.rfind(':'));
  std::fprintf(stderr, "listening on %s:%d\n", host.c_str(), port);
  std::fflush(stderr);
  int sig = 0;
  sigwait(&stop, &sig);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server->Wait();
  return 0;
}
