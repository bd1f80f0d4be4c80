// fanout-fake-backend: a gRPC server answering any method after a delay.
//
//   fanout-fake-backend --listen=127.0.0.1:0 --name=cache-2 --delay=200ms
//       [--delay_per_kb=D] [--delay_per_cost=D] [--jitter=D] [--fail_prob=P]
//       [--jitter_ratio=R] [--capacity=K] [--echo] [--seed=N]
//   fanout-fake-backend --stats=HOST:PORT
//
// Prints "listening on HOST:PORT" once serving. Counters: call
// /fanout.fake/Stats (what --stats does: it prints the counters of the
// backend at HOST:PORT and exits), or read the line printed on
// SIGINT/SIGTERM.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/executor.h"
#include "tests/testing/fake_backend.h"

namespace {

bool ParseFlag(absl::string_view arg, fanout::testing::FakeBackendOptions& o, std::string& error) {
  if (!absl::StartsWith(arg, "--")) {
    error = absl::StrCat("unexpected argument: ", arg);
    return false;
  }
  arg.remove_prefix(2);
  const size_t eq = arg.find('=');
  const absl::string_view name = arg.substr(0, eq);
  const absl::string_view value = eq == absl::string_view::npos ? "" : arg.substr(eq + 1);
  auto duration = [&](absl::Duration& out) {
    if (absl::ParseDuration(value, &out) && out >= absl::ZeroDuration()) return true;
    error = absl::StrCat("--", name, ": want a duration like 200ms, got '", value, "'");
    return false;
  };
  if (name == "listen") {
    o.listen = std::string(value);
  } else if (name == "name") {
    o.name = std::string(value);
  } else if (name == "echo") {
    o.echo = value.empty() || value == "true";
  } else if (name == "delay") {
    return duration(o.delay);
  } else if (name == "delay_per_kb") {
    return duration(o.delay_per_kb);
  } else if (name == "delay_per_cost") {
    return duration(o.delay_per_cost);
  } else if (name == "jitter") {
    return duration(o.jitter);
  } else if (name == "fail_prob") {
    if (!absl::SimpleAtod(value, &o.fail_prob) || o.fail_prob < 0 || o.fail_prob > 1) {
      error = absl::StrCat("--fail_prob: want a number in [0, 1], got '", value, "'");
      return false;
    }
  } else if (name == "jitter_ratio") {
    if (!absl::SimpleAtod(value, &o.jitter_ratio) || o.jitter_ratio < 0 || o.jitter_ratio > 1) {
      error = absl::StrCat("--jitter_ratio: want a number in [0, 1], got '", value, "'");
      return false;
    }
  } else if (name == "capacity") {
    if (!absl::SimpleAtoi(value, &o.capacity) || o.capacity < 0) {
      error = absl::StrCat("--capacity: want a count >= 0, got '", value, "'");
      return false;
    }
  } else if (name == "seed") {
    if (!absl::SimpleAtoi(value, &o.seed)) {
      error = absl::StrCat("--seed: want an integer, got '", value, "'");
      return false;
    }
  } else {
    error = absl::StrCat("unknown flag --", name);
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && absl::StartsWith(argv[1], "--stats=")) {
    const std::string address = std::string(absl::string_view(argv[1]).substr(8));
    absl::StatusOr<fanout::testing::FakeBackendCounters> counters =
        fanout::testing::ReadFakeBackendCounters(address);
    if (!counters.ok()) {
      std::cerr << "fanout-fake-backend: " << counters.status() << "\n";
      return 1;
    }
    std::cout << fanout::testing::FormatCounters(*counters) << std::endl;
    return 0;
  }
  fanout::testing::FakeBackendOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string error;
    if (!ParseFlag(argv[i], options, error)) {
      std::cerr << "fanout-fake-backend: " << error << "\n";
      return 2;
    }
  }
  // Block the signals before any thread starts, then wait for them here.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto executor = fanout::ThreadPoolExecutor::Create(2, "fake-backend");
  auto backend = fanout::testing::FakeBackend::Start(options, executor.get());
  if (!backend.ok()) {
    std::cerr << "fanout-fake-backend: " << backend.status() << "\n";
    return 1;
  }
  std::cout << "listening on " << (*backend)->address() << std::endl;
  int signal = 0;
  sigwait(&signals, &signal);
  const std::string counters = fanout::testing::FormatCounters((*backend)->counters());
  backend->reset();
  std::cout << counters << std::endl;
  return 0;
}
