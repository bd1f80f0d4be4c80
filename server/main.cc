// fanoutd: the fanout sidecar.
#include <signal.h>

#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "server/config.h"
#include "server/fanoutd.h"

ABSL_FLAG(std::string, config, "", "YAML configuration file; without it the embedded default applies");
ABSL_FLAG(std::string, listen, "", "gRPC address (host:port or unix:///path); overrides server.listen");
ABSL_FLAG(std::string, log_level, "", "debug, info, warning or error; overrides log.level");
ABSL_FLAG(std::string, reflection, "", "true or false: serve gRPC reflection; overrides server.reflection");
ABSL_FLAG(bool, print_default_config, false, "print the embedded default configuration and exit");

int main(int argc, char** argv) {
  using fanout::server::Config;
  absl::SetProgramUsageMessage("fanoutd [--config FILE] [--listen ADDR] [--log_level LEVEL]");
  absl::ParseCommandLine(argc, argv);
#ifdef NDEBUG
  // Debian's Abseil is built with its debug checks: unless told otherwise,
  // every absl::Mutex (gRPC's own included) feeds a process-wide lock-order
  // graph behind one global lock, about 8% of the instructions of a cached
  // Get. Debug builds keep the check.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif

  if (absl::GetFlag(FLAGS_print_default_config)) {
    std::fputs(std::string(fanout::server::EmbeddedDefaultYaml()).c_str(), stdout);
    return 0;
  }

  // Signals go to one waiting thread, never to a handler: block them here,
  // before any thread starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<Config> config =
      absl::GetFlag(FLAGS_config).empty()
          ? fanout::server::ParseConfig(fanout::server::EmbeddedDefaultYaml(), "<embedded default>")
          : fanout::server::LoadConfigFile(absl::GetFlag(FLAGS_config));
  if (!config.ok()) {
    std::fprintf(stderr, "fanoutd: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  if (!absl::GetFlag(FLAGS_listen).empty()) config->server.listen = absl::GetFlag(FLAGS_listen);
  const std::string reflection = absl::GetFlag(FLAGS_reflection);
  if (reflection == "true" || reflection == "false") {
    config->server.reflection = reflection == "true";
  } else if (!reflection.empty()) {
    std::fprintf(stderr, "fanoutd: --reflection: \"%s\" is not true or false\n",
                 reflection.c_str());
    return 2;
  }
  if (!absl::GetFlag(FLAGS_log_level).empty()) {
    absl::StatusOr<fanout::LogLevel> level = fanout::ParseLogLevel(absl::GetFlag(FLAGS_log_level));
    if (!level.ok()) {
      std::fprintf(stderr, "fanoutd: --log_level: %s\n",
                   std::string(level.status().message()).c_str());
      return 2;
    }
    config->log_level = *level;
  }
  fanout::SetLogLevel(config->log_level);

  absl::StatusOr<std::unique_ptr<fanout::server::Fanoutd>> daemon =
      fanout::server::Fanoutd::Start(*config);
  if (!daemon.ok()) {
    std::fprintf(stderr, "fanoutd: %s\n", std::string(daemon.status().message()).c_str());
    return 2;
  }
  FANOUT_LOG(INFO) << "fanoutd listening on " << (*daemon)->address();

  std::thread signal_thread([&signals, d = daemon->get()] {
    int sig = 0;
    sigwait(&signals, &sig);
    FANOUT_LOG(INFO) << "signal " << sig << ": draining";
    d->Shutdown();
  });
  (*daemon)->Wait();
  signal_thread.join();
  daemon->reset();
  FANOUT_LOG(INFO) << "fanoutd stopped";
  return 0;
}
