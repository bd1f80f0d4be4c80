// Admission of calls: a bound on calls in flight, and the drain gate that
// refuses new calls during shutdown while those in flight finish.
#ifndef FANOUT_SERVER_ADMISSION_H_
#define FANOUT_SERVER_ADMISSION_H_

#include <atomic>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fanout::server {

// Thread-safe; lock-free.
class Admission {
 public:
  explicit Admission(int64_t max_in_flight) : max_(max_in_flight) {}

  // Holds one slot until destroyed.
  class Ticket {
   public:
    Ticket() = default;
    explicit Ticket(Admission* a) : a_(a) {}
    Ticket(Ticket&& o) noexcept : a_(o.a_) { o.a_ = nullptr; }
    Ticket& operator=(Ticket&& o) noexcept {
      Release();
      a_ = o.a_;
      o.a_ = nullptr;
      return *this;
    }
    ~Ticket() { Release(); }
    void Release() {
      if (a_ != nullptr) a_->in_flight_.fetch_sub(1, std::memory_order_acq_rel);
      a_ = nullptr;
    }

   private:
    Admission* a_ = nullptr;
  };

  // ResourceExhausted past max_in_flight; Unavailable once closed.
  absl::Status Enter(Ticket* ticket) {
    if (closed_.load(std::memory_order_acquire)) {
      return absl::UnavailableError("fanoutd is shutting down");
    }
    const int64_t n = in_flight_.fetch_add(1, std::memory_order_acq_rel) + 1;
    if (n > max_) {
      in_flight_.fetch_sub(1, std::memory_order_acq_rel);
      return absl::ResourceExhaustedError(absl::StrCat(
          "too many calls in flight (limits.max_in_flight = ", max_, "); retry later"));
    }
    *ticket = Ticket(this);
    return absl::OkStatus();
  }

  void Close() { closed_.store(true, std::memory_order_release); }
  int64_t in_flight() const { return in_flight_.load(std::memory_order_acquire); }

 private:
  const int64_t max_;
  std::atomic<int64_t> in_flight_{0};
  std::atomic<bool> closed_{false};
};

}  // namespace fanout::server

#endif  // FANOUT_SERVER_ADMISSION_H_
