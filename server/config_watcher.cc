#include "server/config_watcher.h"

#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace fanout::server {
namespace {

// What can change what a path in the directory reads.
constexpr uint32_t kEvents =
    IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO;

// Kubernetes' ConfigMap volume: the files are symlinks into `..data`,
// itself a symlink to a timestamped directory, swapped by one rename.
constexpr char kConfigMapData[] = "..data";

// "dir/name" into its directory ("." when none) and file name.
std::pair<std::string, std::string> Split(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {".", path};
  return {std::string(path, 0, std::max<size_t>(slash, 1)), std::string(path, slash + 1)};
}

}  // namespace

absl::StatusOr<std::unique_ptr<ConfigWatcher>> ConfigWatcher::Start(Options options,
                                                                    Callback on_change) {
  const int inotify_fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot watch ", options.path, ": inotify_init1: ", std::strerror(errno)));
  }
  const int event_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd < 0) {
    ::close(inotify_fd);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot watch ", options.path, ": eventfd: ", std::strerror(errno)));
  }
  std::unique_ptr<ConfigWatcher> w(
      new ConfigWatcher(std::move(options), std::move(on_change), inotify_fd, event_fd));
  std::tie(w->dir_, w->name_) = Split(w->options_.path);
  w->dir_wd_ = ::inotify_add_watch(inotify_fd, w->dir_.c_str(), kEvents | IN_ONLYDIR);
  if (w->dir_wd_ < 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot watch the directory ", w->dir_,
                                                      " of ", w->options_.path, ": ",
                                                      std::strerror(errno)));
  }
  w->WatchTarget();
  w->thread_ = std::thread([raw = w.get()] { raw->Run(); });
  return w;
}

ConfigWatcher::ConfigWatcher(Options options, Callback on_change, int inotify_fd, int event_fd)
    : options_(std::move(options)),
      on_change_(std::move(on_change)),
      inotify_fd_(inotify_fd),
      event_fd_(event_fd) {}

ConfigWatcher::~ConfigWatcher() {
  stop_.store(true);
  const uint64_t one = 1;
  if (::write(event_fd_, &one, sizeof(one)) < 0) {
    // The counter cannot overflow with one write per call; nothing to do.
  }
  if (thread_.joinable()) thread_.join();
  ::close(inotify_fd_);
  ::close(event_fd_);
}

void ConfigWatcher::Trigger() {
  triggered_.store(true);
  const uint64_t one = 1;
  if (::write(event_fd_, &one, sizeof(one)) < 0) {
    // EAGAIN only past 2^64-2 unread triggers: one is pending anyway.
  }
}

void ConfigWatcher::WatchTarget() {
  char resolved[PATH_MAX];
  if (::realpath(options_.path.c_str(), resolved) == nullptr) return;  // mid-swap: keep the old
  const auto [dir, name] = Split(resolved);
  char dir_resolved[PATH_MAX];
  if (::realpath(dir_.c_str(), dir_resolved) != nullptr && dir == dir_resolved) {
    // The file lives in the watched directory itself.
    if (target_wd_ >= 0 && target_wd_ != dir_wd_) ::inotify_rm_watch(inotify_fd_, target_wd_);
    target_wd_ = -1;
    return;
  }
  if (dir == target_dir_ && name == target_name_ && target_wd_ >= 0) return;
  const int wd = ::inotify_add_watch(inotify_fd_, dir.c_str(), kEvents | IN_ONLYDIR);
  if (wd < 0) return;  // changes there are not seen; SIGHUP still reloads
  if (target_wd_ >= 0 && target_wd_ != wd && target_wd_ != dir_wd_) {
    ::inotify_rm_watch(inotify_fd_, target_wd_);  // EINVAL if its directory went: fine
  }
  target_wd_ = wd;
  target_dir_ = dir;
  target_name_ = name;
}

void ConfigWatcher::Run() {
  // inotify events are aligned for struct inotify_event.
  alignas(struct inotify_event) char buf[16 * (sizeof(struct inotify_event) + NAME_MAX + 1)];
  bool pending = false;
  absl::Time first = absl::InfinitePast();
  absl::Time quiet_at = absl::InfinitePast();
  while (!stop_.load()) {
    int timeout_ms = -1;
    if (pending) {
      const absl::Time due = std::min(quiet_at, first + options_.max_delay);
      timeout_ms = static_cast<int>(std::max<int64_t>(
          0, absl::ToInt64Milliseconds(absl::Ceil(due - absl::Now(), absl::Milliseconds(1)))));
    }
    pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {event_fd_, POLLIN, 0}};
    if (::poll(fds, 2, timeout_ms) < 0 && errno != EINTR) {
      FANOUT_LOG(ERROR) << "config watcher: poll: " << std::strerror(errno);
      return;
    }
    if (stop_.load()) return;
    if (fds[1].revents != 0) {
      uint64_t n;
      if (::read(event_fd_, &n, sizeof(n)) < 0) {
        // Drained by an earlier read: nothing to do.
      }
    }
    if (triggered_.exchange(false)) {
      pending = false;  // the reload reads the file as it is now
      on_change_(Cause::kTriggered);
      WatchTarget();
    }
    if (fds[0].revents != 0) {
      for (;;) {
        const ssize_t len = ::read(inotify_fd_, buf, sizeof(buf));
        if (len <= 0) break;  // EAGAIN: drained
        for (ssize_t off = 0; off < len;) {
          const auto* ev = reinterpret_cast<const struct inotify_event*>(buf + off);
          off += static_cast<ssize_t>(sizeof(struct inotify_event) + ev->len);
          const std::string name = ev->len > 0 ? std::string(ev->name) : "";
          bool relevant = (ev->mask & IN_Q_OVERFLOW) != 0;
          if (ev->wd == dir_wd_) {
            if (ev->mask & IN_IGNORED) {
              FANOUT_LOG(WARNING) << "config watcher: " << dir_ << " is gone; changes of "
                                  << options_.path
                                  << " are no longer noticed (SIGHUP still reloads)";
              dir_wd_ = -1;
              continue;
            }
            relevant = relevant || name == name_ || name == kConfigMapData;
          }
          if (ev->wd == target_wd_) {
            if (ev->mask & IN_IGNORED) {
              target_wd_ = -1;
              continue;
            }
            relevant = relevant || name == target_name_;
          }
          if (!relevant) continue;
          const absl::Time now = absl::Now();
          if (!pending) first = now;
          pending = true;
          quiet_at = now + options_.debounce;
        }
      }
    }
    if (pending && absl::Now() >= std::min(quiet_at, first + options_.max_delay)) {
      pending = false;
      on_change_(Cause::kFileChanged);
      WatchTarget();
    }
  }
}

}  // namespace fanout::server
