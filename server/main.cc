// fanoutd: the fanout sidecar.
//
// Signals: SIGTERM stops serving in stages (server.shutdown_delay with health
// NOT_SERVING, then the drain) and exits 0; SIGINT (Ctrl-C) skips the delay.
// A second SIGTERM or SIGINT cancels the calls in flight and exits 1 at once.
// SIGHUP reloads the --config file, as does a change of that file (watched
// with inotify: edits, renames, Kubernetes' ConfigMap updates).
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/address.h"
#include "common/log.h"
#include "common/log_throttle.h"
#include "server/config.h"
#include "server/config_watcher.h"
#include "server/fanoutd.h"

ABSL_FLAG(std::string, config, "", "YAML configuration file; without it the embedded default applies");
ABSL_FLAG(std::string, listen, "", "gRPC address (host:port or unix:///path); overrides server.listen");
ABSL_FLAG(std::string, log_level, "", "debug, info, warning or error; overrides log.level");
ABSL_FLAG(std::string, reflection, "", "true or false: serve gRPC reflection; overrides server.reflection");
ABSL_FLAG(bool, print_default_config, false, "print the embedded default configuration and exit");
ABSL_FLAG(bool, check_config, false,
          "parse and check the configuration (--config, or the embedded default), print what is "
          "wrong, and exit: 0 when it is valid, 2 when not");

namespace {

using fanout::server::Config;

// The configuration: the --config file (or the embedded default) with the
// command-line flags applied over it. At start-up and at every reload.
// InvalidArgument naming the flag or the key for a bad value.
absl::StatusOr<Config> LoadConfig() {
  absl::StatusOr<Config> config =
      absl::GetFlag(FLAGS_config).empty()
          ? fanout::server::ParseConfig(fanout::server::EmbeddedDefaultYaml(), "<embedded default>")
          : fanout::server::LoadConfigFile(absl::GetFlag(FLAGS_config));
  if (!config.ok()) return config;
  if (!absl::GetFlag(FLAGS_listen).empty()) {
    const std::string listen = absl::GetFlag(FLAGS_listen);
    absl::StatusOr<fanout::Address> parsed = fanout::ParseListenAddress(listen);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--listen: ", parsed.status().message()));
    }
    config->server.listen = listen;
  }
  const std::string reflection = absl::GetFlag(FLAGS_reflection);
  if (reflection == "true" || reflection == "false") {
    config->server.reflection = reflection == "true";
  } else if (!reflection.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--reflection: \"", reflection, "\" is not true or false"));
  }
  if (!absl::GetFlag(FLAGS_log_level).empty()) {
    absl::StatusOr<fanout::LogLevel> level = fanout::ParseLogLevel(absl::GetFlag(FLAGS_log_level));
    if (!level.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--log_level: ", level.status().message()));
    }
    config->log_level = *level;
  }
  return config;
}

const char* SignalName(int sig) {
  switch (sig) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
  }
  return "signal";
}

}  // namespace

int main(int argc, char** argv) {
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
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // libprotobuf writes one line per request it cannot parse: route it
  // through fanout's log, rate-limited.
  fanout::RouteProtobufLogs();

  absl::StatusOr<Config> config = LoadConfig();
  if (!config.ok()) {
    std::fprintf(stderr, "fanoutd: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_check_config)) {
    std::printf("fanoutd: %s: valid\n", config->document_source.c_str());
    return 0;
  }
  fanout::SetLogLevel(config->log_level);

  absl::StatusOr<std::unique_ptr<fanout::server::Fanoutd>> daemon =
      fanout::server::Fanoutd::Start(*config);
  if (!daemon.ok()) {
    std::fprintf(stderr, "fanoutd: %s\n", std::string(daemon.status().message()).c_str());
    return 2;
  }
  FANOUT_LOG(INFO) << "fanoutd listening on " << (*daemon)->address();

  // Reloads: of the --config file, when it changes or on SIGHUP. They run
  // on the watcher's thread, one at a time.
  std::unique_ptr<fanout::server::ConfigWatcher> watcher;
  const std::string config_path = absl::GetFlag(FLAGS_config);
  auto reload = [d = daemon->get()](const char* why) { d->Reload(LoadConfig(), why); };
  if (!config_path.empty()) {
    absl::StatusOr<std::unique_ptr<fanout::server::ConfigWatcher>> started =
        fanout::server::ConfigWatcher::Start(
            {.path = config_path}, [reload](fanout::server::ConfigWatcher::Cause cause) {
              reload(cause == fanout::server::ConfigWatcher::Cause::kTriggered ? "SIGHUP"
                                                                               : "file changed");
            });
    if (started.ok()) {
      watcher = *std::move(started);
    } else {
      FANOUT_LOG(WARNING) << started.status().message()
                          << "; the configuration reloads on SIGHUP only";
    }
  }

  const int signal_fd = signalfd(-1, &signals, SFD_CLOEXEC);
  const int stop_fd = eventfd(0, EFD_CLOEXEC);
  if (signal_fd < 0 || stop_fd < 0) {
    std::perror("fanoutd: signalfd/eventfd");
    return 1;
  }
  absl::Notification stop_requested;
  std::atomic<bool> skip_delay{false};
  std::atomic<bool> cut_short{false};
  std::thread signal_thread([&, d = daemon->get()] {
    int stops = 0;
    for (;;) {
      pollfd fds[2] = {{signal_fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) continue;  // EINTR
      if (fds[1].revents != 0) return;     // fanoutd has stopped
      signalfd_siginfo info;
      if (read(signal_fd, &info, sizeof(info)) != sizeof(info)) continue;
      const int sig = static_cast<int>(info.ssi_signo);
      if (sig == SIGHUP) {
        if (config_path.empty()) {
          FANOUT_LOG(WARNING) << "SIGHUP: no --config file to reload; ignored";
        } else if (watcher != nullptr) {
          watcher->Trigger();
        } else {
          reload("SIGHUP");
        }
        continue;
      }
      ++stops;
      if (stops == 1) {
        skip_delay = sig == SIGINT;
        FANOUT_LOG(INFO) << SignalName(sig) << ": "
                         << (skip_delay ? "draining"
                                        : "health NOT_SERVING for server.shutdown_delay, then "
                                          "draining");
        stop_requested.Notify();
      } else if (stops == 2) {
        FANOUT_LOG(WARNING) << SignalName(sig) << " again: cancelling " << d->calls_in_flight()
                            << " calls in flight and stopping now";
        cut_short = true;
        d->ShutdownNow();
      } else {
        FANOUT_LOG(ERROR) << SignalName(sig) << " a third time: exiting without cleanup";
        _exit(1);
      }
    }
  });
  stop_requested.WaitForNotification();
  if (skip_delay) {
    (*daemon)->Shutdown(absl::ZeroDuration());
  } else {
    (*daemon)->Shutdown();
  }
  (*daemon)->Wait();
  // The signal thread uses the daemon: stop it first.
  const uint64_t one = 1;
  if (write(stop_fd, &one, sizeof(one)) != sizeof(one)) std::perror("fanoutd: eventfd");
  signal_thread.join();
  watcher.reset();  // its reloads use the daemon
  daemon->reset();
  FANOUT_LOG(INFO) << "fanoutd stopped" << (cut_short ? " (calls cancelled)" : "");
  return cut_short ? 1 : 0;
}
