// A userspace TCP proxy for fault injection between a client and a server
// (fanoutd and Redis, a client and fanoutd, ...). `tc netem` is not
// available here; this does the same from user space.
//
//   auto proxy = FaultProxy::Start("127.0.0.1", redis->port(), &error);
//   connect the client to proxy->address() ...
//   proxy->Delay(absl::Milliseconds(80));  // every byte forwarded 80 ms late
//   proxy->Blackhole();                    // accept, never forward (a frozen peer)
//   proxy->Reset();                        // RST every connection, new ones too
//   proxy->Pass();                         // forward again (held bytes flow on)
//
// Modes apply to open connections and new ones alike. A blackhole reads
// nothing: bytes wait in the kernel's buffers, as they do for a SIGSTOPped
// server, and flow on after Pass(). When either side closes, the proxy closes
// both. Thread-safe; one thread of its own.
#ifndef FANOUT_TESTS_TESTING_FAULT_PROXY_H_
#define FANOUT_TESTS_TESTING_FAULT_PROXY_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fanout::testing {

class FaultProxy {
 public:
  enum class Mode { kPass, kDelay, kBlackhole, kReset };

  // Listens on 127.0.0.1 on a free port and forwards each connection to a
  // new connection to upstream_host:upstream_port (an IPv4 address).
  // nullptr on failure; `error` says why.
  static std::unique_ptr<FaultProxy> Start(const std::string& upstream_host, int upstream_port,
                                           std::string* error);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  int port() const { return port_; }
  std::string address() const;

  void Pass() { SetMode(Mode::kPass, absl::ZeroDuration()); }
  // Bytes read from either side are written to the other `delay` later.
  void Delay(absl::Duration delay) { SetMode(Mode::kDelay, delay); }
  void Blackhole() { SetMode(Mode::kBlackhole, absl::ZeroDuration()); }
  void Reset() { SetMode(Mode::kReset, absl::ZeroDuration()); }
  Mode mode() const;

  // Connections accepted so far, and open now.
  int accepted() const { return accepted_.load(); }
  int open_connections() const { return open_.load(); }

 private:
  struct Impl;
  FaultProxy(int listen_fd, int port, const std::string& upstream_host, int upstream_port);
  void SetMode(Mode mode, absl::Duration delay);
  void Loop();

  const int listen_fd_;
  const int port_;
  const std::string upstream_host_;
  const int upstream_port_;
  int wake_[2] = {-1, -1};

  mutable absl::Mutex mu_;
  Mode mode_ ABSL_GUARDED_BY(mu_) = Mode::kPass;
  absl::Duration delay_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  std::atomic<int> accepted_{0};
  std::atomic<int> open_{0};
  std::thread thread_;
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_FAULT_PROXY_H_
