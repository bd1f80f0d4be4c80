// The test proxy itself, over a small echo server.
#include "tests/testing/fault_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace fanout::testing {
namespace {

// Echoes every connection's bytes back, one thread per connection.
class EchoServer {
 public:
  EchoServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(fd_, 16);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      for (;;) {
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        workers_.emplace_back([c] {
          char buf[4096];
          ssize_t n;
          while ((n = ::read(c, buf, sizeof(buf))) > 0) (void)!::write(c, buf, n);
          ::close(c);
        });
      }
    });
  }
  ~EchoServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
    for (auto& w : workers_) w.join();
  }
  int port() const { return port_; }

 private:
  int fd_;
  int port_;
  std::thread thread_;
  std::vector<std::thread> workers_;
};

int Dial(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

// Sends `text` and reads the echo, waiting at most `bound`. Returns what
// came back (maybe less), or "<closed>" / "<reset>".
std::string RoundTrip(int fd, const std::string& text, absl::Duration bound) {
  if (::send(fd, text.data(), text.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(text.size())) {
    return "<send failed>";
  }
  std::string got;
  const absl::Time give_up = absl::Now() + bound;
  while (got.size() < text.size() && absl::Now() < give_up) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10) <= 0) continue;
    char buf[256];
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n == 0) return "<closed>";
    if (n < 0) return errno == ECONNRESET ? "<reset>" : "<error>";
    got.append(buf, n);
  }
  return got;
}

class FaultProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    proxy_ = FaultProxy::Start("127.0.0.1", echo_.port(), &error);
    ASSERT_NE(proxy_, nullptr) << error;
  }
  EchoServer echo_;
  std::unique_ptr<FaultProxy> proxy_;
};

TEST_F(FaultProxyTest, PassForwardsBothWays) {
  const int fd = Dial(proxy_->port());
  EXPECT_EQ(RoundTrip(fd, "hello", absl::Seconds(5)), "hello");
  EXPECT_EQ(proxy_->accepted(), 1);
  ::close(fd);
}

TEST_F(FaultProxyTest, DelayHoldsBytesAtLeastThatLong) {
  const int fd = Dial(proxy_->port());
  proxy_->Delay(absl::Milliseconds(100));
  const absl::Time start = absl::Now();
  EXPECT_EQ(RoundTrip(fd, "slow", absl::Seconds(5)), "slow");
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));  // once each way
  ::close(fd);
}

TEST_F(FaultProxyTest, BlackholeAcceptsButNeverAnswersUntilPass) {
  proxy_->Blackhole();
  const int fd = Dial(proxy_->port());  // the connection is accepted
  EXPECT_EQ(RoundTrip(fd, "lost?", absl::Milliseconds(300)), "");
  proxy_->Pass();
  // Held, not dropped: it arrives once the hole closes.
  std::string got;
  char buf[16];
  pollfd p{fd, POLLIN, 0};
  while (got.size() < 5 && ::poll(&p, 1, 5000) > 0) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    got.append(buf, n);
  }
  EXPECT_EQ(got, "lost?");
  ::close(fd);
}

TEST_F(FaultProxyTest, ResetResetsOpenAndNewConnections) {
  const int fd = Dial(proxy_->port());
  EXPECT_EQ(RoundTrip(fd, "a", absl::Seconds(5)), "a");
  proxy_->Reset();
  const std::string got = RoundTrip(fd, "b", absl::Seconds(5));
  EXPECT_TRUE(got == "<reset>" || got == "<closed>" || got == "<send failed>") << got;
  ::close(fd);
  const int again = Dial(proxy_->port());
  const std::string next = RoundTrip(again, "c", absl::Seconds(5));
  EXPECT_TRUE(next == "<reset>" || next == "<closed>" || next == "<send failed>") << next;
  ::close(again);
  proxy_->Pass();
  const int fine = Dial(proxy_->port());
  EXPECT_EQ(RoundTrip(fine, "d", absl::Seconds(5)), "d");
  ::close(fine);
}

}  // namespace
}  // namespace fanout::testing
