// Notices changes of the configuration file, for reloading it.
//
// Linux inotify on the file's directory, so that every way a file gets
// replaced is seen: an edit in place, an editor's write-and-rename, a new
// symlink, and Kubernetes' ConfigMap update, which swaps the directory's
// `..data` symlink in one rename (config.yaml itself is a symlink into
// `..data` and never changes). Only names that can change what the path
// reads count: the file's own name and `..data`; when the path is a symlink,
// also the file it resolves to, in its own directory (re-resolved after each
// change). Events come in bursts (a ConfigMap update is several), so the
// callback runs once the watched names have been quiet for `debounce`, at
// most `max_delay` after the first event of a burst.
//
// Not seen: a file mounted with a Kubernetes subPath (kubelet never updates
// those), or a change further down a chain of directory symlinks; SIGHUP
// (Trigger) covers those.
//
// Threading: one thread of its own (an InotifyLoop) waits for events and
// runs the callback; callbacks never overlap, and none runs after the
// destructor returns.
#ifndef FANOUT_SERVER_CONFIG_WATCHER_H_
#define FANOUT_SERVER_CONFIG_WATCHER_H_

#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/inotify_loop.h"

namespace fanout::server {

class ConfigWatcher {
 public:
  enum class Cause {
    kFileChanged,  // inotify, after the debounce
    kTriggered,    // Trigger() (SIGHUP)
  };
  using Callback = absl::AnyInvocable<void(Cause)>;

  struct Options {
    std::string path;  // the configuration file
    absl::Duration debounce = absl::Milliseconds(200);
    absl::Duration max_delay = absl::Seconds(2);
  };

  // Starts watching. FailedPrecondition naming the directory when it cannot
  // be watched (missing, not a directory, no permission, out of inotify
  // watches).
  static absl::StatusOr<std::unique_ptr<ConfigWatcher>> Start(Options options, Callback on_change);
  // Stops: waits for a callback that is running, and joins the thread.
  ~ConfigWatcher();
  ConfigWatcher(const ConfigWatcher&) = delete;
  ConfigWatcher& operator=(const ConfigWatcher&) = delete;

  // Runs the callback (Cause::kTriggered) as soon as the thread can, without
  // debounce; triggers that come while it is busy are coalesced into one.
  // Thread-safe, does not block.
  void Trigger();

 private:
  ConfigWatcher(Options options, Callback on_change, std::unique_ptr<InotifyLoop> loop);
  // Whether `event` can change what the path reads (and follows the
  // watched directories going away).
  bool Relevant(const struct inotify_event& event);
  // (Re)watches the directory of the file the path resolves to, when it
  // differs from the path's own directory.
  void WatchTarget();

  const Options options_;
  Callback on_change_;
  std::string dir_;   // the path's directory
  std::string name_;  // the path's file name
  int dir_wd_ = -1;
  std::string target_dir_;  // of the resolved path, when elsewhere
  std::string target_name_;
  int target_wd_ = -1;
  // Last: its thread, which uses the fields above, stops first.
  std::unique_ptr<InotifyLoop> loop_;
};

}  // namespace fanout::server

#endif  // FANOUT_SERVER_CONFIG_WATCHER_H_
