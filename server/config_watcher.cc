#include "server/config_watcher.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/inotify.h>

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
  absl::StatusOr<std::unique_ptr<InotifyLoop>> loop = InotifyLoop::Create(options.path);
  if (!loop.ok()) return loop.status();
  std::unique_ptr<ConfigWatcher> w(
      new ConfigWatcher(std::move(options), std::move(on_change), *std::move(loop)));
  std::tie(w->dir_, w->name_) = Split(w->options_.path);
  w->dir_wd_ = ::inotify_add_watch(w->loop_->fd(), w->dir_.c_str(), kEvents | IN_ONLYDIR);
  if (w->dir_wd_ < 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot watch the directory ", w->dir_,
                                                      " of ", w->options_.path, ": ",
                                                      std::strerror(errno)));
  }
  w->WatchTarget();
  ConfigWatcher* raw = w.get();
  w->loop_->Start({.debounce = w->options_.debounce, .max_delay = w->options_.max_delay},
                  {.on_event = [raw](const struct inotify_event& e) { return raw->Relevant(e); },
                   .on_burst =
                       [raw](bool woken) {
                         raw->on_change_(woken ? Cause::kTriggered : Cause::kFileChanged);
                         raw->WatchTarget();
                         return absl::InfiniteFuture();
                       }});
  return w;
}

ConfigWatcher::ConfigWatcher(Options options, Callback on_change, std::unique_ptr<InotifyLoop> loop)
    : options_(std::move(options)), on_change_(std::move(on_change)), loop_(std::move(loop)) {}

ConfigWatcher::~ConfigWatcher() { loop_.reset(); }

void ConfigWatcher::Trigger() { loop_->Wake(); }

void ConfigWatcher::WatchTarget() {
  char resolved[PATH_MAX];
  if (::realpath(options_.path.c_str(), resolved) == nullptr) return;  // mid-swap: keep the old
  const auto [dir, name] = Split(resolved);
  char dir_resolved[PATH_MAX];
  if (::realpath(dir_.c_str(), dir_resolved) != nullptr && dir == dir_resolved) {
    // The file lives in the watched directory itself.
    if (target_wd_ >= 0 && target_wd_ != dir_wd_) ::inotify_rm_watch(loop_->fd(), target_wd_);
    target_wd_ = -1;
    return;
  }
  if (dir == target_dir_ && name == target_name_ && target_wd_ >= 0) return;
  const int wd = ::inotify_add_watch(loop_->fd(), dir.c_str(), kEvents | IN_ONLYDIR);
  if (wd < 0) return;  // changes there are not seen; SIGHUP still reloads
  if (target_wd_ >= 0 && target_wd_ != wd && target_wd_ != dir_wd_) {
    ::inotify_rm_watch(loop_->fd(), target_wd_);  // EINVAL if its directory went: fine
  }
  target_wd_ = wd;
  target_dir_ = dir;
  target_name_ = name;
}

bool ConfigWatcher::Relevant(const struct inotify_event& ev) {
  const std::string name = ev.len > 0 ? std::string(ev.name) : "";
  bool relevant = (ev.mask & IN_Q_OVERFLOW) != 0;
  if (ev.wd == dir_wd_) {
    if (ev.mask & IN_IGNORED) {
      FANOUT_LOG(WARNING) << "config watcher: " << dir_ << " is gone; changes of " << options_.path
                          << " are no longer noticed (SIGHUP still reloads)";
      dir_wd_ = -1;
      return false;
    }
    relevant = relevant || name == name_ || name == kConfigMapData;
  }
  if (ev.wd == target_wd_) {
    if (ev.mask & IN_IGNORED) {
      target_wd_ = -1;
      return false;
    }
    relevant = relevant || name == target_name_;
  }
  return relevant;
}

}  // namespace fanout::server
