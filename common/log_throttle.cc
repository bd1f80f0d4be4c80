#include "common/log_throttle.h"

#include <google/protobuf/stubs/logging.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "common/log.h"

namespace fanout {

LogThrottle::LogThrottle(int burst, absl::Duration window, Clock* clock)
    : burst_(burst), window_(window), clock_(clock != nullptr ? clock : Clock::Real()) {}

bool LogThrottle::Admit(int64_t* suppressed) {
  const absl::Time now = clock_->Now();
  absl::MutexLock l(&mu_);
  if (now - window_start_ >= window_) {
    window_start_ = now;
    admitted_ = 0;
  }
  if (admitted_ >= burst_) {
    ++suppressed_;
    return false;
  }
  ++admitted_;
  *suppressed = suppressed_;
  suppressed_ = 0;
  return true;
}

namespace {

// Replaced, never freed: protobuf may log from any thread until exit. Old
// ones stay in g_retired (reachable, so leak checkers stay quiet).
std::atomic<LogThrottle*> g_protobuf_throttle{nullptr};
absl::Mutex g_retired_mu;
std::vector<std::unique_ptr<LogThrottle>>* g_retired ABSL_GUARDED_BY(g_retired_mu) = nullptr;

void ProtobufLogHandler(google::protobuf::LogLevel level, const char* filename, int line,
                        const std::string& message) {
  // FATAL lines come right before protobuf aborts: always let them out.
  int64_t suppressed = 0;
  LogThrottle* throttle = g_protobuf_throttle.load(std::memory_order_acquire);
  if (level != google::protobuf::LOGLEVEL_FATAL && throttle != nullptr &&
      !throttle->Admit(&suppressed)) {
    return;
  }
  std::string text =
      "libprotobuf " + std::string(filename) + ":" + std::to_string(line) + ": " + message;
  if (suppressed > 0) {
    text += " (" + std::to_string(suppressed) + " earlier libprotobuf lines not logged)";
  }
  switch (level) {
    case google::protobuf::LOGLEVEL_INFO:
      FANOUT_LOG(INFO) << text;
      break;
    case google::protobuf::LOGLEVEL_WARNING:
      FANOUT_LOG(WARNING) << text;
      break;
    default:
      FANOUT_LOG(ERROR) << text;
      break;
  }
}

}  // namespace

void RouteProtobufLogs(int burst, absl::Duration window, Clock* clock) {
  auto throttle = std::make_unique<LogThrottle>(burst, window, clock);
  g_protobuf_throttle.store(throttle.get(), std::memory_order_release);
  {
    // The old throttle is kept: a handler call may still be using it.
    absl::MutexLock l(&g_retired_mu);
    if (g_retired == nullptr) g_retired = new std::vector<std::unique_ptr<LogThrottle>>();
    g_retired->push_back(std::move(throttle));
  }
  google::protobuf::SetLogHandler(&ProtobufLogHandler);
}

}  // namespace fanout
