#include "cache/tiers/redis/event_loop.h"

#include <errno.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace fanout::cache {

absl::Duration EventLoop::MonotonicNow() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return absl::DurationFromTimespec(ts);
}

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Start(std::string name) {
  const int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) return absl::InternalError(absl::StrCat("epoll_create1: ", strerror(errno)));
  const int wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) {
    ::close(epoll_fd);
    return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;  // id 0 is the wake-up fd
  ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &ev);
  std::unique_ptr<EventLoop> loop(new EventLoop(std::move(name), epoll_fd, wake_fd));
  loop->thread_ = std::thread([l = loop.get()] { l->Run(); });
  return loop;
}

EventLoop::EventLoop(std::string name, int epoll_fd, int wake_fd)
    : name_(std::move(name)), epoll_fd_(epoll_fd), wake_fd_(wake_fd) {}

EventLoop::~EventLoop() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
  thread_.join();
  ::close(wake_fd_);
  ::close(epoll_fd_);
}

void EventLoop::Post(Task task) {
  // From the loop thread no wake-up is needed: the loop runs what is posted
  // before it waits again.
  const bool on_loop = InLoopThread();
  bool wake;
  {
    absl::MutexLock l(&mu_);
    posted_.push_back(std::move(task));
    wake = !on_loop && !wake_pending_;
    if (wake) wake_pending_ = true;
  }
  // One write per batch of posts: the loop clears wake_pending_ before it
  // takes the queue, so a post after that writes again.
  if (wake) {
    const uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof(one));
  }
}

EventLoop::TimerId EventLoop::AddTimer(absl::Duration after, Task task) {
  const TimerId id = next_id_++;
  const absl::Duration due = MonotonicNow() + std::max(after, absl::ZeroDuration());
  timers_.emplace(std::make_pair(due, id), std::move(task));
  timer_due_.emplace(id, due);
  return id;
}

void EventLoop::CancelTimer(TimerId id) {
  if (id == kNoTimer) return;
  auto it = timer_due_.find(id);
  if (it == timer_due_.end()) return;
  timers_.erase(std::make_pair(it->second, id));
  timer_due_.erase(it);
}

EventLoop::WatchId EventLoop::WatchFd(int fd, FdHandler handler) {
  const WatchId id = next_id_++;
  watches_.emplace(id, Watch{fd, std::move(handler)});
  return id;
}

void EventLoop::SetInterest(WatchId id, bool read, bool write) {
  auto it = watches_.find(id);
  if (it == watches_.end()) return;
  Watch& w = it->second;
  const uint32_t want = (read ? EPOLLIN : 0u) | (write ? EPOLLOUT : 0u);
  if (want == w.interest && w.registered == (want != 0)) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = id;
  // With no interest the fd leaves the epoll set: epoll reports errors and
  // hang-ups even when nothing is asked, and nobody would read them.
  if (want == 0) {
    if (w.registered) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, w.fd, nullptr);
    w.registered = false;
  } else if (w.registered) {
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, w.fd, &ev);
  } else {
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, w.fd, &ev);
    w.registered = true;
  }
  w.interest = want;
}

void EventLoop::Unwatch(WatchId id) {
  auto it = watches_.find(id);
  if (it == watches_.end()) return;
  if (it->second.registered) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->second.fd, nullptr);
  // The handler may be the caller (an fd handler unwatching itself): destroy
  // it after the current dispatch.
  FdHandler handler = std::move(it->second.handler);
  watches_.erase(it);
  Post([h = std::move(handler)]() mutable { h = nullptr; });
}

int EventLoop::NextTimeoutMs() const {
  if (timers_.empty()) return -1;
  const absl::Duration wait = timers_.begin()->first.first - MonotonicNow();
  if (wait <= absl::ZeroDuration()) return 0;
  // Round up: a timer never fires early.
  return static_cast<int>(
      std::min<int64_t>(absl::ToInt64Milliseconds(wait + absl::Microseconds(999)), 60'000));
}

void EventLoop::RunDueTimers() {
  const absl::Duration now = MonotonicNow();
  while (!timers_.empty() && timers_.begin()->first.first <= now) {
    auto node = timers_.extract(timers_.begin());
    timer_due_.erase(node.key().second);
    std::move(node.mapped())();
  }
}

void EventLoop::RunPosted() {
  std::vector<Task> tasks;
  {
    absl::MutexLock l(&mu_);
    tasks.swap(posted_);
    wake_pending_ = false;
  }
  for (Task& t : tasks) std::move(t)();
}

void EventLoop::Run() {
  std::string thread_name = name_.substr(0, 15);
  pthread_setname_np(pthread_self(), thread_name.c_str());
  constexpr int kMaxEvents = 64;
  epoll_event events[kMaxEvents];
  for (;;) {
    bool posted;
    {
      absl::MutexLock l(&mu_);
      if (stopping_) break;
      posted = !posted_.empty();
    }
    const int n = ::epoll_wait(epoll_fd_, events, kMaxEvents, posted ? 0 : NextTimeoutMs());
    for (int i = 0; i < n; ++i) {
      const uint64_t id = events[i].data.u64;
      if (id == 0) {
        uint64_t count;
        (void)!::read(wake_fd_, &count, sizeof(count));
        continue;
      }
      // A handler earlier in this batch may have unwatched this one.
      auto it = watches_.find(id);
      if (it == watches_.end()) continue;
      it->second.handler(events[i].events);
    }
    RunDueTimers();
    RunPosted();
  }
  // Stopping: pending timers run at once so that whatever waits on them
  // completes (their owners see the shutdown and fail fast), then the tasks
  // they and others posted.
  while (!timers_.empty()) {
    auto node = timers_.extract(timers_.begin());
    timer_due_.erase(node.key().second);
    std::move(node.mapped())();
  }
  for (;;) {
    {
      absl::MutexLock l(&mu_);
      if (posted_.empty()) break;
    }
    RunPosted();
    while (!timers_.empty()) {
      auto node = timers_.extract(timers_.begin());
      timer_due_.erase(node.key().second);
      std::move(node.mapped())();
    }
  }
  watches_.clear();
}

}  // namespace fanout::cache
