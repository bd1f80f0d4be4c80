// Admission of calls: a bound on the work in flight (calls, weighed by their
// work), and the drain gate that refuses new calls during shutdown while
// those in flight finish.
#ifndef FANOUT_SERVER_ADMISSION_H_
#define FANOUT_SERVER_ADMISSION_H_

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fanout::server {

// Thread-safe; lock-free.
class Admission {
 public:
  explicit Admission(int64_t max_in_flight) : max_(max_in_flight) {}

  // Holds its slots until destroyed.
  class Ticket {
   public:
    Ticket() = default;
    Ticket(Admission* a, int64_t weight) : a_(a), weight_(weight) {}
    Ticket(Ticket&& o) noexcept : a_(o.a_), weight_(o.weight_) { o.a_ = nullptr; }
    Ticket& operator=(Ticket&& o) noexcept {
      Release();
      a_ = o.a_;
      weight_ = o.weight_;
      o.a_ = nullptr;
      return *this;
    }
    ~Ticket() { Release(); }
    void Release() {
      if (a_ != nullptr) a_->in_flight_.fetch_sub(weight_, std::memory_order_acq_rel);
      a_ = nullptr;
    }

   private:
    Admission* a_ = nullptr;
    int64_t weight_ = 0;
  };

  // Takes `weight` slots (a call's work, e.g. the distinct keys of a batch;
  // at least 1, at most max_in_flight so that any call can run alone).
  // ResourceExhausted past max_in_flight; Unavailable once closed.
  absl::Status Enter(Ticket* ticket, int64_t weight = 1) {
    if (closed_.load(std::memory_order_acquire)) {
      return absl::UnavailableError("fanoutd is shutting down");
    }
    const int64_t max = max_.load(std::memory_order_relaxed);
    weight = std::clamp<int64_t>(weight, 1, max);
    const int64_t n = in_flight_.fetch_add(weight, std::memory_order_acq_rel) + weight;
    if (n > max) {
      in_flight_.fetch_sub(weight, std::memory_order_acq_rel);
      return absl::ResourceExhaustedError(
          absl::StrCat("too many calls in flight (limits.max_in_flight = ", max, "); retry later"));
    }
    *ticket = Ticket(this, weight);
    return absl::OkStatus();
  }

  void Close() { closed_.store(true, std::memory_order_release); }
  // Calls admitted from now on count against `max_in_flight` (a reload);
  // those in flight keep their slots.
  void SetMax(int64_t max_in_flight) { max_.store(max_in_flight, std::memory_order_relaxed); }
  int64_t in_flight() const { return in_flight_.load(std::memory_order_acquire); }

 private:
  std::atomic<int64_t> max_;
  std::atomic<int64_t> in_flight_{0};
  std::atomic<bool> closed_{false};
};

}  // namespace fanout::server

#endif  // FANOUT_SERVER_ADMISSION_H_
