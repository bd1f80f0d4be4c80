// A private redis-server on 127.0.0.1 for tests: its own free port, no
// persistence, stopped on destruction.
#ifndef FANOUT_TESTS_TESTING_REDIS_SERVER_H_
#define FANOUT_TESTS_TESTING_REDIS_SERVER_H_

#include <netinet/in.h>
#include <signal.h>
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

struct RedisServerOptions {
  std::string password;     // requirepass; empty: none
  std::string unix_socket;  // also listen on this Unix socket path
};

class RedisServer {
 public:
  // Starts redis-server and waits (bounded) until it answers PING. Returns
  // nullptr if it could not be started; `error` says why.
  static std::unique_ptr<RedisServer> Start(std::string* error, RedisServerOptions options = {}) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      const int port = PickFreePort();
      auto server = std::unique_ptr<RedisServer>(new RedisServer(port, options));
      if (server->WaitUntilUp(error)) return server;
    }
    return nullptr;
  }

  int port() const { return port_; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  // Runs redis-cli against this server.
  RunResult Cli(std::vector<std::string> args) const {
    std::vector<std::string> argv = {"/usr/bin/redis-cli", "-h", "127.0.0.1", "-p",
                                     std::to_string(port_)};
    if (!options_.password.empty()) {
      argv.insert(argv.end(), {"--no-auth-warning", "-a", options_.password});
    }
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(argv, absl::Seconds(10));
  }

  // Faults: SIGSTOP freezes it (it still accepts TCP connections, the
  // kernel's backlog does, but never answers); SIGCONT thaws it.
  void Signal(int sig) { process_->Signal(sig); }
  // Kills it (SIGKILL) and waits until it is gone.
  void Kill() {
    process_->Signal(SIGCONT);
    process_->Signal(SIGKILL);
    process_->Wait(absl::Seconds(10));
  }
  // Kills it if running, then starts it again on the same port (empty).
  bool Restart(std::string* error) {
    Kill();
    for (int attempt = 0; attempt < 50; ++attempt) {
      process_ = Spawn();
      if (WaitUntilUp(error)) return true;
      absl::SleepFor(absl::Milliseconds(100));  // the port may linger briefly
    }
    return false;
  }

 private:
  RedisServer(int port, RedisServerOptions options) : port_(port), options_(std::move(options)) {
    process_ = Spawn();
  }

  std::unique_ptr<Subprocess> Spawn() const {
    std::vector<std::string> argv = {"/usr/bin/redis-server",
                                     "--port",
                                     std::to_string(port_),
                                     "--bind",
                                     "127.0.0.1",
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--daemonize",
                                     "no"};
    if (!options_.password.empty()) argv.insert(argv.end(), {"--requirepass", options_.password});
    if (!options_.unix_socket.empty()) {
      argv.insert(argv.end(), {"--unixsocket", options_.unix_socket, "--unixsocketperm", "700"});
    }
    return std::make_unique<Subprocess>(argv);
  }

  bool WaitUntilUp(std::string* error) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline && process_->running() &&
           !process_->Wait(absl::ZeroDuration()).has_value()) {
      if (Cli({"PING"}).out == "PONG\n") return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    *error = process_->out() + process_->err();
    return false;
  }

  int port_;
  RedisServerOptions options_;
  std::unique_ptr<Subprocess> process_;
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_REDIS_SERVER_H_
