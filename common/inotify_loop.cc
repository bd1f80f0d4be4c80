#include "common/inotify_loop.h"

#include <limits.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace fanout {

absl::StatusOr<std::unique_ptr<InotifyLoop>> InotifyLoop::Create(const std::string& what) {
  const int inotify_fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot watch ", what, ": inotify_init1: ", std::strerror(errno),
                     errno == EMFILE ? " (fs.inotify.max_user_instances)" : ""));
  }
  const int event_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd < 0) {
    const int err = errno;
    ::close(inotify_fd);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot watch ", what, ": eventfd: ", std::strerror(err)));
  }
  return std::unique_ptr<InotifyLoop>(new InotifyLoop(what, inotify_fd, event_fd));
}

InotifyLoop::InotifyLoop(std::string what, int inotify_fd, int event_fd)
    : what_(std::move(what)), inotify_fd_(inotify_fd), event_fd_(event_fd) {}

InotifyLoop::~InotifyLoop() {
  stop_.store(true);
  const uint64_t one = 1;
  if (::write(event_fd_, &one, sizeof(one)) < 0) {
    // The counter cannot overflow with one write; nothing to do.
  }
  if (thread_.joinable()) thread_.join();
  ::close(inotify_fd_);
  ::close(event_fd_);
}

void InotifyLoop::Start(Options options, Handlers handlers) {
  options_ = options;
  handlers_ = std::move(handlers);
  thread_ = std::thread([this] { Run(); });
}

void InotifyLoop::Wake() {
  woken_.store(true);
  const uint64_t one = 1;
  if (::write(event_fd_, &one, sizeof(one)) < 0) {
    // EAGAIN only past 2^64-2 unread wakes: one is pending anyway.
  }
}

void InotifyLoop::Run() {
  // inotify events are aligned for struct inotify_event.
  alignas(struct inotify_event) char buf[64 * (sizeof(struct inotify_event) + NAME_MAX + 1)];
  bool pending = false;
  absl::Time first = absl::InfinitePast();
  absl::Time quiet_at = absl::InfinitePast();
  absl::Time again_at = absl::InfiniteFuture();
  while (!stop_.load()) {
    absl::Time due = again_at;
    if (pending) due = std::min(due, std::min(quiet_at, first + options_.max_delay));
    int timeout_ms = -1;
    if (due != absl::InfiniteFuture()) {
      timeout_ms = static_cast<int>(std::clamp<int64_t>(
          absl::ToInt64Milliseconds(absl::Ceil(due - absl::Now(), absl::Milliseconds(1))), 0,
          60000));
    }
    pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {event_fd_, POLLIN, 0}};
    if (::poll(fds, 2, timeout_ms) < 0 && errno != EINTR) {
      FANOUT_LOG(ERROR) << "watching " << what_ << ": poll: " << std::strerror(errno)
                        << "; changes are no longer noticed";
      return;
    }
    if (stop_.load()) return;
    if (fds[1].revents != 0) {
      uint64_t n;
      if (::read(event_fd_, &n, sizeof(n)) < 0) {
        // Drained by an earlier read: nothing to do.
      }
    }
    bool relevant = false;
    if (fds[0].revents != 0) {
      for (;;) {
        const ssize_t len = ::read(inotify_fd_, buf, sizeof(buf));
        if (len <= 0) break;  // EAGAIN: drained
        for (ssize_t off = 0; off < len;) {
          const auto* ev = reinterpret_cast<const struct inotify_event*>(buf + off);
          off += static_cast<ssize_t>(sizeof(struct inotify_event) + ev->len);
          if (handlers_.on_event(*ev)) relevant = true;
        }
      }
    }
    const absl::Time now = absl::Now();
    if (relevant) {
      if (!pending) first = now;
      pending = true;
      quiet_at = now + options_.debounce;
    }
    const bool woken = woken_.exchange(false);
    if (!woken && now < again_at &&
        !(pending && now >= std::min(quiet_at, first + options_.max_delay))) {
      continue;
    }
    pending = false;  // what runs now sees everything as it is
    again_at = handlers_.on_burst(woken);
  }
}

}  // namespace fanout
