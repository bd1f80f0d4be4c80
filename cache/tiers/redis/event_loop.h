// One thread running an epoll loop: file-descriptor readiness, timers on the
// monotonic clock, and tasks posted from other threads. The Redis client's
// I/O thread; it knows nothing about Redis.
//
// Threading: Post() and InLoopThread() are thread-safe. Everything else is
// for the loop thread only (from a task, a timer or an fd handler). Handlers,
// timers and tasks must not block: they delay every other connection.
#ifndef FANOUT_CACHE_TIERS_REDIS_EVENT_LOOP_H_
#define FANOUT_CACHE_TIERS_REDIS_EVENT_LOOP_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fanout::cache {

class EventLoop {
 public:
  using Task = absl::AnyInvocable<void() &&>;
  // Called with the epoll event bits (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP).
  using FdHandler = absl::AnyInvocable<void(uint32_t events)>;
  using TimerId = uint64_t;
  using WatchId = uint64_t;
  static constexpr TimerId kNoTimer = 0;

  // Starts the thread. Internal on a failed epoll_create/eventfd.
  static absl::StatusOr<std::unique_ptr<EventLoop>> Start(std::string name);

  // Stops the thread: runs the timers still pending at once (earliest first),
  // then the tasks still posted, and joins. Must not run on the loop thread.
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Any thread: runs `task` on the loop thread soon, after the current
  // dispatch if called from the loop thread. Tasks run in posting order.
  void Post(Task task);
  bool InLoopThread() const { return std::this_thread::get_id() == thread_.get_id(); }

  // Loop thread only. Runs `task` once, `after` from now (a non-positive
  // delay runs it on the next turn).
  TimerId AddTimer(absl::Duration after, Task task);
  // Drops a pending timer (its task is destroyed unrun). No-op for
  // kNoTimer, fired or unknown ids.
  void CancelTimer(TimerId id);

  // Loop thread only. Watches `fd` (not owned; Unwatch before closing it).
  // No events are reported until SetInterest asks for some.
  WatchId WatchFd(int fd, FdHandler handler);
  void SetInterest(WatchId id, bool read, bool write);
  // The handler is destroyed; events already collected for it are dropped.
  void Unwatch(WatchId id);

  // Monotonic now, as the timers see it.
  static absl::Duration MonotonicNow();

 private:
  struct Watch {
    int fd;
    FdHandler handler;
    uint32_t interest = 0;  // EPOLLIN | EPOLLOUT bits registered
    bool registered = false;
  };

  EventLoop(std::string name, int epoll_fd, int wake_fd);
  void Run();
  void RunPosted();
  void RunDueTimers();
  int NextTimeoutMs() const;

  const std::string name_;
  const int epoll_fd_;
  const int wake_fd_;  // eventfd
  std::thread thread_;

  absl::Mutex mu_;
  std::vector<Task> posted_ ABSL_GUARDED_BY(mu_);
  bool wake_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  // Loop thread only.
  uint64_t next_id_ = 1;
  std::map<std::pair<absl::Duration, TimerId>, Task> timers_;
  absl::flat_hash_map<TimerId, absl::Duration> timer_due_;
  absl::flat_hash_map<WatchId, Watch> watches_;
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_TIERS_REDIS_EVENT_LOOP_H_
