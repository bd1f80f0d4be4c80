#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fanout {
namespace {

std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::atomic<LogFormat> g_format{LogFormat::kText};
std::atomic<int> g_rate_limit{10};
std::atomic<LogSink*> g_sink{nullptr};
std::atomic<Clock*> g_clock{nullptr};

const char* TextLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kWarning:
      return "WARN";
    case LogLevel::kError:
      return "ERROR";
  }
  return "?";
}

const char* JsonLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

Clock* LogClock() {
  Clock* c = g_clock.load(std::memory_order_acquire);
  return c != nullptr ? c : Clock::Real();
}

void WriteLine(LogLevel level, std::string line) {
  if (LogSink* sink = g_sink.load(std::memory_order_acquire)) {
    sink->Write(level, line);
    return;
  }
  line.push_back('\n');
  // One write(2) per line keeps lines from different threads whole.
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

// The length of the well-formed UTF-8 sequence at the start of `s`, or 0.
size_t Utf8SequenceLength(absl::string_view s) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // bounds of the second byte
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlong forms
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;  // no overlong forms
    if (c == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < len) return 0;
  if (b(1) < lo || b(1) > hi) return 0;
  for (size_t i = 2; i < len; ++i) {
    if (b(i) < 0x80 || b(i) > 0xBF) return 0;
  }
  return len;
}

void AppendJsonString(std::string* out, absl::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  while (!s.empty()) {
    const unsigned char c = static_cast<unsigned char>(s[0]);
    if (c >= 0x80) {
      const size_t len = Utf8SequenceLength(s);
      if (len == 0) {
        out->append("\\ufffd");
        s.remove_prefix(1);
      } else {
        out->append(s.data(), len);
        s.remove_prefix(len);
      }
      continue;
    }
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out->append("\\u00");
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 0xf]);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
    s.remove_prefix(1);
  }
  out->push_back('"');
}

// Text lines: control characters become escapes, so that nothing logged can
// start a line of its own or drive a terminal.
void AppendTextEscaped(std::string* out, absl::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (const char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '\n') {
      out->append("\\n");
    } else if (c == '\r') {
      out->append("\\r");
    } else if (c == '\t') {
      out->append("\\t");
    } else if (c < 0x20 || c == 0x7f) {
      out->append("\\x");
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 0xf]);
    } else {
      out->push_back(ch);
    }
  }
}

void AppendTextFieldValue(std::string* out, absl::string_view v) {
  const bool quote = v.empty() || v.find_first_of(" \"=\\") != absl::string_view::npos;
  if (!quote) {
    AppendTextEscaped(out, v);
    return;
  }
  out->push_back('"');
  for (const char ch : v) {
    if (ch == '"' || ch == '\\') out->push_back('\\');
    AppendTextEscaped(out, absl::string_view(&ch, 1));
  }
  out->push_back('"');
}

}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "debug") return LogLevel::kDebug;
  if (lower == "info") return LogLevel::kInfo;
  if (lower == "warning" || lower == "warn") return LogLevel::kWarning;
  if (lower == "error") return LogLevel::kError;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log level \"", name, "\" (want debug, info, warning or error)"));
}

void SetLogLevel(LogLevel level) { g_level.store(level, std::memory_order_relaxed); }
LogLevel GetLogLevel() { return g_level.load(std::memory_order_relaxed); }

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "text") return LogFormat::kText;
  if (lower == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log format \"", name, "\" (want text or json)"));
}

void SetLogFormat(LogFormat format) { g_format.store(format, std::memory_order_relaxed); }
LogFormat GetLogFormat() { return g_format.load(std::memory_order_relaxed); }

void SetLogRateLimit(int lines_per_second) {
  g_rate_limit.store(lines_per_second < 0 ? 0 : lines_per_second, std::memory_order_relaxed);
}
int GetLogRateLimit() { return g_rate_limit.load(std::memory_order_relaxed); }

void SetLogSink(LogSink* sink) { g_sink.store(sink, std::memory_order_release); }
void SetLogClock(Clock* clock) { g_clock.store(clock, std::memory_order_release); }

namespace log_internal {

bool LogSite::Admit(LogLevel level) {
  if (level < LogLevel::kWarning) return true;
  const int limit = GetLogRateLimit();
  const absl::Time now = LogClock()->Now();
  int64_t report = 0;
  absl::Duration over;
  {
    absl::MutexLock l(&mu_);
    if (now - window_start_ >= absl::Seconds(1) || now < window_start_) {
      window_start_ = now;
      written_in_window_ = 0;
      if (suppressed_ > 0) {
        report = suppressed_;
        over = now - first_suppressed_;
        suppressed_ = 0;
      }
    }
    if (limit > 0 && written_in_window_ >= limit) {
      if (suppressed_++ == 0) first_suppressed_ = now;
      return false;
    }
    ++written_in_window_;
  }
  if (report > 0) {
    LogLine(level, file_, line_).With("suppressed", report)
        << "suppressed " << report << " lines from this call site in the last "
        << absl::FormatDuration(absl::Trunc(over, absl::Milliseconds(1)));
  }
  return true;
}

LogLine::LogLine(LogLevel level, const char* file, int line)
    : level_(level), file_(file), line_(line) {}

LogLine& LogLine::With(absl::string_view key, absl::string_view value) {
  fields_.push_back(Field{std::string(key), std::string(value), false});
  return *this;
}

LogLine& LogLine::With(absl::string_view key, bool value) {
  fields_.push_back(Field{std::string(key), value ? "true" : "false", true});
  return *this;
}

LogLine& LogLine::With(absl::string_view key, double value) {
  // JSON has no NaN or infinities: those go as strings.
  fields_.push_back(Field{std::string(key), absl::StrCat(value), std::isfinite(value)});
  return *this;
}

LogLine& LogLine::WithNumber(absl::string_view key, std::string number) {
  fields_.push_back(Field{std::string(key), std::move(number), true});
  return *this;
}

LogLine::~LogLine() {
  const char* base = std::strrchr(file_, '/');
  const absl::string_view source_file = base ? base + 1 : file_;
  const std::string time =
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", LogClock()->Now(), absl::UTCTimeZone());
  const std::string message = stream_.str();
  std::string out;
  out.reserve(64 + message.size());
  if (GetLogFormat() == LogFormat::kJson) {
    absl::StrAppend(&out, "{\"time\":\"", time, "\",\"level\":\"", JsonLevelName(level_),
                    "\",\"message\":");
    AppendJsonString(&out, message);
    out.append(",\"source\":");
    AppendJsonString(&out, absl::StrCat(source_file, ":", line_));
    if (!fields_.empty()) {
      out.append(",\"fields\":{");
      for (size_t i = 0; i < fields_.size(); ++i) {
        if (i > 0) out.push_back(',');
        AppendJsonString(&out, fields_[i].key);
        out.push_back(':');
        if (fields_[i].literal) {
          out.append(fields_[i].value);
        } else {
          AppendJsonString(&out, fields_[i].value);
        }
      }
      out.push_back('}');
    }
    out.push_back('}');
  } else {
    absl::StrAppend(&out, time, " ", TextLevelName(level_), " ", source_file, ":", line_, "] ");
    AppendTextEscaped(&out, message);
    for (const Field& f : fields_) {
      out.push_back(' ');
      AppendTextEscaped(&out, f.key);
      out.push_back('=');
      AppendTextFieldValue(&out, f.value);
    }
  }
  WriteLine(level_, std::move(out));
}

}  // namespace log_internal
}  // namespace fanout
