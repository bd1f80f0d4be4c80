// A thread of its own that waits on an inotify instance and turns its
// events into debounced callbacks: the part the config file's watcher and
// the file origin's watch share.
//
// Events come in bursts (an editor's write-and-rename, a ConfigMap update
// are several), so `on_burst` runs once the events `on_event` found relevant
// have been quiet for `debounce`, at most `max_delay` after the first event
// of a burst; also at once after Wake(), and when the time `on_burst` last
// returned comes (a retry with no event).
//
// Threading: callbacks run on the loop's thread, never overlapping; none
// runs after the destructor returns.
#ifndef FANOUT_COMMON_INOTIFY_LOOP_H_
#define FANOUT_COMMON_INOTIFY_LOOP_H_

#include <sys/inotify.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fanout {

class InotifyLoop {
 public:
  struct Options {
    absl::Duration debounce = absl::Milliseconds(200);
    absl::Duration max_delay = absl::Seconds(2);
  };
  struct Handlers {
    // Whether an event counts (starts or extends a burst). Required.
    absl::AnyInvocable<bool(const struct inotify_event& event)> on_event;
    // A burst is over (`woken`: Wake() was called). Returns when to be
    // called again if nothing happens before (InfiniteFuture: only on
    // events). Required.
    absl::AnyInvocable<absl::Time(bool woken)> on_burst;
  };

  // An inotify instance (non-blocking, close-on-exec) and the wake-up
  // descriptor. FailedPrecondition naming `what` when the kernel refuses
  // (out of inotify instances).
  static absl::StatusOr<std::unique_ptr<InotifyLoop>> Create(const std::string& what);
  // Stops the thread (waiting for a callback under way) and closes both.
  ~InotifyLoop();
  InotifyLoop(const InotifyLoop&) = delete;
  InotifyLoop& operator=(const InotifyLoop&) = delete;

  // For inotify_add_watch and inotify_rm_watch (from the callbacks, or
  // before Start).
  int fd() const { return inotify_fd_; }

  // Starts the thread. Called once.
  void Start(Options options, Handlers handlers);
  // Has on_burst(true) run as soon as the thread can; wakes coming while it
  // is busy are coalesced into one. Thread-safe, does not block.
  void Wake();

 private:
  InotifyLoop(std::string what, int inotify_fd, int event_fd);
  void Run();

  const std::string what_;
  const int inotify_fd_;
  const int event_fd_;
  Options options_;
  Handlers handlers_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> woken_{false};
  std::thread thread_;
};

}  // namespace fanout

#endif  // FANOUT_COMMON_INOTIFY_LOOP_H_
