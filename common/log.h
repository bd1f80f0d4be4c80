// A small logging facade: leveled, thread-safe lines on stderr, as text or
// JSON, with optional structured fields.
//
//   FANOUT_LOG(INFO) << "listening on " << addr;
//   FANOUT_LOG(WARNING).With("backend", name).With("code", code) << "call failed";
//
// Text lines:  2024-05-01T12:00:00.123Z WARN router.cc:42] call failed backend=b1 code=14
// JSON lines:  {"time":"2024-05-01T12:00:00.123Z","level":"warning","message":"call failed",
//               "source":"router.cc:42","fields":{"backend":"b1","code":14}}
//
// Lines below the process-wide level are not formatted. Control characters
// in text lines are escaped (a message cannot forge a second line); JSON
// strings are escaped, and bytes that are not UTF-8 become U+FFFD.
//
// Warnings and errors are rate-limited per call site (SetLogRateLimit): past
// the limit, lines of that site are counted instead of written, and the next
// line the site writes is preceded by one saying how many were suppressed.
//
// Thread-safe: each line is handed to the sink in one call (stderr: one
// write(2)), so lines from different threads never mix.
#ifndef FANOUT_COMMON_LOG_H_
#define FANOUT_COMMON_LOG_H_

#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace fanout {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class LogFormat { kText, kJson };

// Parses "debug", "info", "warning" (or "warn"), "error".
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);
void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();

// Parses "text" or "json".
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);
void SetLogFormat(LogFormat format);
LogFormat GetLogFormat();

// At most `lines_per_second` warning and error lines a second from each call
// site; 0 = no limit. Default 10.
void SetLogRateLimit(int lines_per_second);
int GetLogRateLimit();

// Receives every formatted line (without its trailing newline). Thread-safe.
class LogSink {
 public:
  virtual ~LogSink() = default;
  virtual void Write(LogLevel level, absl::string_view line) = 0;
};

// Routes lines to `sink` (not owned; must outlive every later log line), or
// back to stderr with nullptr. For tests and embedders; set it before other
// threads log.
void SetLogSink(LogSink* sink);
// The clock that stamps lines and drives the rate limit (not owned; must
// outlive every later log line), or the real clock with nullptr.
void SetLogClock(Clock* clock);

namespace log_internal {

// One FANOUT_LOG statement's rate-limit state. Thread-safe.
class LogSite {
 public:
  LogSite(const char* file, int line) : file_(file), line_(line) {}
  LogSite(const LogSite&) = delete;
  LogSite& operator=(const LogSite&) = delete;

  // Whether a line at `level` may be written now. Debug and info lines
  // always may. When it may and earlier lines were suppressed, writes the
  // line that says how many first.
  bool Admit(LogLevel level);

 private:
  const char* const file_;
  const int line_;
  absl::Mutex mu_;
  absl::Time window_start_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int64_t written_in_window_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t suppressed_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time first_suppressed_ ABSL_GUARDED_BY(mu_);
};

class LogLine {
 public:
  LogLine(LogLevel level, const char* file, int line);
  ~LogLine();
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;

  // Adds a structured field: a JSON member, or key=value after a text line.
  LogLine& With(absl::string_view key, absl::string_view value);
  LogLine& With(absl::string_view key, const char* value) {
    return With(key, absl::string_view(value));
  }
  LogLine& With(absl::string_view key, const std::string& value) {
    return With(key, absl::string_view(value));
  }
  LogLine& With(absl::string_view key, bool value);
  LogLine& With(absl::string_view key, double value);
  template <typename T,
            typename std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  LogLine& With(absl::string_view key, T value) {
    return WithNumber(key, std::to_string(value));
  }

  template <typename T>
  LogLine& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }
  LogLine& operator<<(std::ostream& (*manipulator)(std::ostream&)) {
    stream_ << manipulator;
    return *this;
  }
  std::ostream& stream() { return stream_; }

 private:
  struct Field {
    std::string key;
    std::string value;  // text, or a JSON literal when `literal`
    bool literal;
  };
  LogLine& WithNumber(absl::string_view key, std::string number);

  const LogLevel level_;
  const char* const file_;
  const int line_;
  std::ostringstream stream_;
  std::vector<Field> fields_;
};

// Turns a finished LogLine expression into void (see FANOUT_LOG).
struct Voidify {
  void operator&(const LogLine&) const {}
};

}  // namespace log_internal
}  // namespace fanout

#define FANOUT_LOG_LEVEL_DEBUG ::fanout::LogLevel::kDebug
#define FANOUT_LOG_LEVEL_INFO ::fanout::LogLevel::kInfo
#define FANOUT_LOG_LEVEL_WARNING ::fanout::LogLevel::kWarning
#define FANOUT_LOG_LEVEL_ERROR ::fanout::LogLevel::kError

// The rate-limit state of the call site it is expanded at.
#define FANOUT_LOG_SITE_()                                                      \
  ([]() -> ::fanout::log_internal::LogSite& {                                   \
    static ::fanout::log_internal::LogSite fanout_log_site(__FILE__, __LINE__); \
    return fanout_log_site;                                                     \
  }())

// An expression, not an if statement, so that it is safe inside an unbraced
// if/else. `&` binds looser than `<<`: the whole line is built first.
#define FANOUT_LOG(severity)                                       \
  !(FANOUT_LOG_LEVEL_##severity >= ::fanout::GetLogLevel() &&      \
    (FANOUT_LOG_LEVEL_##severity < ::fanout::LogLevel::kWarning || \
     FANOUT_LOG_SITE_().Admit(FANOUT_LOG_LEVEL_##severity)))       \
      ? (void)0                                                    \
      : ::fanout::log_internal::Voidify() &                        \
            ::fanout::log_internal::LogLine(FANOUT_LOG_LEVEL_##severity, __FILE__, __LINE__)

#endif  // FANOUT_COMMON_LOG_H_
