// A private redis-server on 127.0.0.1 for tests: its own free port, no
// persistence, stopped on destruction.
#ifndef FANOUT_TESTS_TESTING_REDIS_SERVER_H_
#define FANOUT_TESTS_TESTING_REDIS_SERVER_H_

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/testing/subprocess.h"

namespace fanout::testing {

// A port that was free a moment ago (the kernel's pick for port 0).
inline int PickFreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

class RedisServer {
 public:
  // Starts redis-server and waits (bounded) until it answers PING. Returns
  // nullptr if it could not be started; `error` says why.
  static std::unique_ptr<RedisServer> Start(std::string* error) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      const int port = PickFreePort();
      auto server = std::unique_ptr<RedisServer>(new RedisServer(port));
      const absl::Time deadline = absl::Now() + absl::Seconds(10);
      while (absl::Now() < deadline && server->process_->running() &&
             !server->process_->Wait(absl::ZeroDuration()).has_value()) {
        if (server->Cli({"PING"}).out == "PONG\n") return server;
        absl::SleepFor(absl::Milliseconds(20));
      }
      *error = server->process_->out() + server->process_->err();
    }
    return nullptr;
  }

  int port() const { return port_; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  // Runs redis-cli against this server.
  RunResult Cli(std::vector<std::string> args) const {
    std::vector<std::string> argv = {"/usr/bin/redis-cli", "-h", "127.0.0.1", "-p",
                                     std::to_string(port_)};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(argv, absl::Seconds(10));
  }

 private:
  explicit RedisServer(int port) : port_(port) {
    process_ = std::make_unique<Subprocess>(std::vector<std::string>{
        "/usr/bin/redis-server", "--port", std::to_string(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--daemonize", "no"});
  }

  int port_;
  std::unique_ptr<Subprocess> process_;
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_REDIS_SERVER_H_
