// The parts of the configuration a reload replaces while calls are served:
// the limits every call checks, and the router Route calls use.
#ifndef FANOUT_SERVER_LIVE_CONFIG_H_
#define FANOUT_SERVER_LIVE_CONFIG_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "router/router.h"
#include "server/config.h"

namespace fanout::server {

// limits.* as calls read them. Load is a handful of relaxed atomic loads (no
// lock), so every call takes its own copy at its start; a call that loads
// while a reload stores may see some fields old and some new, each of them
// a valid setting. Thread-safe.
class LiveLimits {
 public:
  explicit LiveLimits(const LimitsSection& limits) { Store(limits); }
  LiveLimits(const LiveLimits&) = delete;
  LiveLimits& operator=(const LiveLimits&) = delete;

  LimitsSection Load() const {
    LimitsSection l;
    l.max_key_bytes = max_key_bytes_.load(std::memory_order_relaxed);
    l.max_namespace_bytes = max_namespace_bytes_.load(std::memory_order_relaxed);
    l.max_value_bytes = max_value_bytes_.load(std::memory_order_relaxed);
    l.max_batch_keys = max_batch_keys_.load(std::memory_order_relaxed);
    l.max_batch_bytes = max_batch_bytes_.load(std::memory_order_relaxed);
    l.max_in_flight = max_in_flight_.load(std::memory_order_relaxed);
    l.request_timeout = absl::Nanoseconds(request_timeout_ns_.load(std::memory_order_relaxed));
    return l;
  }
  void Store(const LimitsSection& l) {
    max_key_bytes_.store(l.max_key_bytes, std::memory_order_relaxed);
    max_namespace_bytes_.store(l.max_namespace_bytes, std::memory_order_relaxed);
    max_value_bytes_.store(l.max_value_bytes, std::memory_order_relaxed);
    max_batch_keys_.store(l.max_batch_keys, std::memory_order_relaxed);
    max_batch_bytes_.store(l.max_batch_bytes, std::memory_order_relaxed);
    max_in_flight_.store(l.max_in_flight, std::memory_order_relaxed);
    request_timeout_ns_.store(absl::ToInt64Nanoseconds(l.request_timeout),
                              std::memory_order_relaxed);
  }

 private:
  std::atomic<uint64_t> max_key_bytes_{0};
  std::atomic<uint64_t> max_namespace_bytes_{0};
  std::atomic<uint64_t> max_value_bytes_{0};
  std::atomic<int> max_batch_keys_{0};
  std::atomic<uint64_t> max_batch_bytes_{0};
  std::atomic<int> max_in_flight_{0};
  std::atomic<int64_t> request_timeout_ns_{0};
};

// The router Route calls use, replaced whole by a reload. A call takes the
// current router and holds it until the call has ended, so calls in flight
// finish on the router they started on while new calls take the new one.
// Thread-safe.
class RouterSlot {
 public:
  explicit RouterSlot(std::shared_ptr<router::Router> router) : router_(std::move(router)) {}
  RouterSlot(const RouterSlot&) = delete;
  RouterSlot& operator=(const RouterSlot&) = delete;

  std::shared_ptr<router::Router> Get() const {
    absl::MutexLock l(&mu_);
    return router_;
  }
  // Installs `next` for the calls that start from now on; returns the one
  // it replaces.
  std::shared_ptr<router::Router> Swap(std::shared_ptr<router::Router> next) {
    absl::MutexLock l(&mu_);
    std::swap(router_, next);
    return next;
  }

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<router::Router> router_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fanout::server

#endif  // FANOUT_SERVER_LIVE_CONFIG_H_
