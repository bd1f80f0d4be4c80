// Runs a real process for integration tests: output captured to files,
// bounded waits, killed on destruction if still running.
#ifndef FANOUT_TESTS_TESTING_SUBPROCESS_H_
#define FANOUT_TESTS_TESTING_SUBPROCESS_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fanout::testing {

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

inline std::string TempPath(absl::string_view name) {
  const char* dir = std::getenv("TMPDIR");
  static int counter = 0;
  return absl::StrCat(dir ? dir : "/tmp", "/fanout_", ::getpid(), "_", counter++, "_", name);
}

class Subprocess {
 public:
  // Starts argv[0] (a path) with the given arguments, in `cwd` if non-empty.
  Subprocess(std::vector<std::string> argv, const std::string& cwd = "")
      : stdout_path_(TempPath("stdout")), stderr_path_(TempPath("stderr")) {
    pid_ = ::fork();
    if (pid_ == 0) {
      int out = ::open(stdout_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int err = ::open(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(out, 1);
      ::dup2(err, 2);
      int devnull = ::open("/dev/null", O_RDONLY);
      ::dup2(devnull, 0);
      if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(126);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }
  ~Subprocess() {
    if (running()) {
      ::kill(pid_, SIGKILL);
      int status;
      ::waitpid(pid_, &status, 0);
    }
    ::unlink(stdout_path_.c_str());
    ::unlink(stderr_path_.c_str());
  }
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  bool running() const { return pid_ > 0 && !exit_code_.has_value(); }
  void Signal(int sig) { ::kill(pid_, sig); }

  // Waits until the process exits or `timeout` passes. Returns the exit
  // code (128 + signal for a signal), or nullopt on timeout.
  std::optional<int> Wait(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!exit_code_.has_value()) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (absl::Now() >= deadline) return std::nullopt;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return exit_code_;
  }

  std::string out() const { return ReadFile(stdout_path_); }
  std::string err() const { return ReadFile(stderr_path_); }

  // Polls stderr until it contains `text` (bounded). Returns whether it did.
  bool WaitForStderr(absl::string_view text, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (err().find(std::string(text)) != std::string::npos) return true;
      if (!running() || Wait(absl::ZeroDuration()).has_value()) return false;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::string stdout_path_;
  std::string stderr_path_;
};

// Runs a command to completion (bounded), in `cwd` if non-empty; returns
// {exit code, stdout, stderr}.
struct RunResult {
  int code = -1;
  std::string out;
  std::string err;
};
inline RunResult RunProcess(std::vector<std::string> argv,
                            absl::Duration timeout = absl::Seconds(30),
                            const std::string& cwd = "") {
  Subprocess p(std::move(argv), cwd);
  RunResult r;
  std::optional<int> code = p.Wait(timeout);
  r.code = code.value_or(-1);
  r.out = p.out();
  r.err = p.err();
  return r;
}

// The address a fanoutd process says it listens on ("fanoutd listening on
// ADDRESS"), waiting up to 20 s for the line; empty if it never came.
inline std::string ListeningAddress(Subprocess& fanoutd) {
  if (!fanoutd.WaitForStderr("listening on ", absl::Seconds(20))) return "";
  const std::string err = fanoutd.err();
  const size_t at = err.find("listening on ") + 13;
  return err.substr(at, err.find('\n', at) - at);
}

// A fanoutd process (`fanoutd`: the binary's path) on a free loopback port,
// run in `cwd` if non-empty, with `config_yaml` written to a file of its own
// and passed as --config (the embedded default when empty). address() is
// empty if it was not listening within 20 s; its stderr says why.
class FanoutdProcess {
 public:
  FanoutdProcess(const std::string& fanoutd, const std::string& config_yaml,
                 const std::string& cwd = "")
      : config_(config_yaml.empty() ? "" : TempPath("fanoutd.yaml")) {
    std::vector<std::string> argv = {fanoutd, "--listen=127.0.0.1:0"};
    if (!config_.empty()) {
      std::ofstream(config_) << config_yaml;
      argv.push_back("--config=" + config_);
    }
    process_.emplace(std::move(argv), cwd);
    address_ = ListeningAddress(*process_);
  }
  // Stops the process (if still running), then removes its config file.
  ~FanoutdProcess() {
    process_.reset();
    if (!config_.empty()) ::unlink(config_.c_str());
  }
  FanoutdProcess(const FanoutdProcess&) = delete;
  FanoutdProcess& operator=(const FanoutdProcess&) = delete;

  const std::string& address() const { return address_; }
  Subprocess& process() { return *process_; }

 private:
  const std::string config_;
  std::optional<Subprocess> process_;
  std::string address_;
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_SUBPROCESS_H_
