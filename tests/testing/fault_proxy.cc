#include "tests/testing/fault_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <list>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace fanout::testing {
namespace {

constexpr size_t kMaxQueued = 1 << 20;  // per direction, before reading pauses

void SetNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Closes with a TCP RST rather than a FIN.
void CloseWithReset(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  ::close(fd);
}

struct Chunk {
  absl::Time due;
  std::string bytes;
  size_t offset = 0;
};

// One direction of a connection: bytes read from `from`, queued for `to`.
struct Pipe {
  std::deque<Chunk> queue;
  size_t queued = 0;
};

struct Conn {
  int client = -1;
  int upstream = -1;
  Pipe up;    // client → upstream
  Pipe down;  // upstream → client
  bool dead = false;
};

}  // namespace

std::unique_ptr<FaultProxy> FaultProxy::Start(const std::string& upstream_host, int upstream_port,
                                              std::string* error) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 128) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    *error = absl::StrCat("fault proxy: cannot listen: ", strerror(errno));
    ::close(fd);
    return nullptr;
  }
  SetNonBlocking(fd);
  return std::unique_ptr<FaultProxy>(
      new FaultProxy(fd, ntohs(addr.sin_port), upstream_host, upstream_port));
}

FaultProxy::FaultProxy(int listen_fd, int port, const std::string& upstream_host, int upstream_port)
    : listen_fd_(listen_fd),
      port_(port),
      upstream_host_(upstream_host),
      upstream_port_(upstream_port) {
  if (::pipe2(wake_, O_NONBLOCK | O_CLOEXEC) != 0) wake_[0] = wake_[1] = -1;
  thread_ = std::thread([this] { Loop(); });
}

FaultProxy::~FaultProxy() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  (void)!::write(wake_[1], "x", 1);
  thread_.join();
  ::close(listen_fd_);
  ::close(wake_[0]);
  ::close(wake_[1]);
}

std::string FaultProxy::address() const { return absl::StrCat("127.0.0.1:", port_); }

FaultProxy::Mode FaultProxy::mode() const {
  absl::MutexLock l(&mu_);
  return mode_;
}

void FaultProxy::SetMode(Mode mode, absl::Duration delay) {
  {
    absl::MutexLock l(&mu_);
    mode_ = mode;
    delay_ = delay;
  }
  (void)!::write(wake_[1], "x", 1);
}

void FaultProxy::Loop() {
  std::list<Conn> conns;
  auto close_conn = [&](Conn& c, bool reset) {
    if (c.dead) return;
    if (reset) {
      CloseWithReset(c.client);
      CloseWithReset(c.upstream);
    } else {
      ::close(c.client);
      ::close(c.upstream);
    }
    c.dead = true;
    open_.fetch_sub(1);
  };

  for (;;) {
    Mode mode;
    absl::Duration delay;
    {
      absl::MutexLock l(&mu_);
      if (stop_) break;
      mode = mode_;
      delay = delay_;
    }
    if (mode == Mode::kReset) {
      for (Conn& c : conns) close_conn(c, /*reset=*/true);
    }
    conns.remove_if([](const Conn& c) { return c.dead; });

    const absl::Time now = absl::Now();
    const bool flowing = mode == Mode::kPass || mode == Mode::kDelay;
    std::vector<pollfd> fds;
    std::vector<std::pair<Conn*, bool>> owners;  // (conn, is_client) per fd after the first two
    fds.push_back({listen_fd_, POLLIN, 0});
    fds.push_back({wake_[0], POLLIN, 0});
    absl::Time next_due = absl::InfiniteFuture();
    for (Conn& c : conns) {
      for (bool is_client : {true, false}) {
        const int fd = is_client ? c.client : c.upstream;
        Pipe& in = is_client ? c.up : c.down;   // what this fd's reads feed
        Pipe& out = is_client ? c.down : c.up;  // what this fd's writes drain
        short events = 0;
        if (flowing && in.queued < kMaxQueued) events |= POLLIN;
        if (flowing && !out.queue.empty()) {
          if (out.queue.front().due <= now) {
            events |= POLLOUT;
          } else {
            next_due = std::min(next_due, out.queue.front().due);
          }
        }
        fds.push_back({fd, events, 0});
        owners.push_back({&c, is_client});
      }
    }
    int timeout_ms = 200;
    if (next_due != absl::InfiniteFuture()) {
      timeout_ms = static_cast<int>(std::clamp<int64_t>(
          absl::ToInt64Milliseconds(next_due - now + absl::Microseconds(999)), 0, 200));
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) break;
    // A mode set while polling applies to what the poll found: a caller that
    // switched modes and then sent or connected sees the new mode.
    {
      absl::MutexLock l(&mu_);
      mode = mode_;
      delay = delay_;
    }

    if (fds[1].revents & POLLIN) {
      char buf[64];
      while (::read(wake_[0], buf, sizeof(buf)) > 0) {
      }
    }
    const bool still_flowing = mode == Mode::kPass || mode == Mode::kDelay;
    for (size_t i = 2; still_flowing && i < fds.size(); ++i) {
      Conn& c = *owners[i - 2].first;
      const bool is_client = owners[i - 2].second;
      if (c.dead || fds[i].revents == 0) continue;
      Pipe& in = is_client ? c.up : c.down;
      Pipe& out = is_client ? c.down : c.up;
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        char buf[64 * 1024];
        const ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
        if (n > 0) {
          in.queue.push_back(Chunk{absl::Now() + delay, std::string(buf, n)});
          in.queued += n;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          close_conn(c, /*reset=*/false);
          continue;
        }
      }
      if (fds[i].revents & POLLOUT) {
        const absl::Time t = absl::Now();
        while (!out.queue.empty() && out.queue.front().due <= t) {
          Chunk& ch = out.queue.front();
          const ssize_t n = ::send(fds[i].fd, ch.bytes.data() + ch.offset,
                                   ch.bytes.size() - ch.offset, MSG_NOSIGNAL);
          if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) close_conn(c, /*reset=*/false);
            break;
          }
          ch.offset += n;
          out.queued -= n;
          if (ch.offset < ch.bytes.size()) break;
          out.queue.pop_front();
        }
      }
    }

    if (fds[0].revents & POLLIN) {
      for (;;) {
        const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) break;
        accepted_.fetch_add(1);
        {
          absl::MutexLock l(&mu_);
          mode = mode_;
        }
        if (mode == Mode::kReset) {
          CloseWithReset(client);
          continue;
        }
        const int upstream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(upstream_port_);
        ::inet_pton(AF_INET, upstream_host_.c_str(), &addr.sin_addr);
        // Loopback: the connect completes or fails at once.
        if (::connect(upstream, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
          CloseWithReset(client);
          ::close(upstream);
          continue;
        }
        int one = 1;
        ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        ::setsockopt(upstream, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        SetNonBlocking(client);
        SetNonBlocking(upstream);
        Conn& c = conns.emplace_back();
        c.client = client;
        c.upstream = upstream;
        open_.fetch_add(1);
      }
    }
  }
  for (Conn& c : conns) close_conn(c, /*reset=*/false);
}

}  // namespace fanout::testing
