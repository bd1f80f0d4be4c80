// A small logging facade: leveled, thread-safe lines on stderr.
//
//   FANOUT_LOG(INFO) << "listening on " << addr;
//
// Lines below the process-wide level are not formatted. Thread-safe: each
// line is written with one call, so lines from different threads never mix.
#ifndef FANOUT_COMMON_LOG_H_
#define FANOUT_COMMON_LOG_H_

#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fanout {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Parses "debug", "info", "warning" (or "warn"), "error".
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);
void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();

namespace log_internal {

class LogLine {
 public:
  LogLine(LogLevel level, const char* file, int line);
  ~LogLine();
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

}  // namespace log_internal
}  // namespace fanout

#define FANOUT_LOG_LEVEL_DEBUG ::fanout::LogLevel::kDebug
#define FANOUT_LOG_LEVEL_INFO ::fanout::LogLevel::kInfo
#define FANOUT_LOG_LEVEL_WARNING ::fanout::LogLevel::kWarning
#define FANOUT_LOG_LEVEL_ERROR ::fanout::LogLevel::kError

#define FANOUT_LOG(severity)                                          \
  if (FANOUT_LOG_LEVEL_##severity < ::fanout::GetLogLevel()) {        \
  } else                                                              \
    ::fanout::log_internal::LogLine(FANOUT_LOG_LEVEL_##severity,      \
                                    __FILE__, __LINE__)               \
        .stream()

#endif  // FANOUT_COMMON_LOG_H_
