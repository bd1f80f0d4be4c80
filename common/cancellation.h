// Cooperative cancellation: a CancellationSource cancels, CancellationTokens
// observe, CancellationCallbacks react. Built on C++20 std::stop_source.
//
//   CancellationSource request;                 // owned by the request
//   CancellationSource branch(request.token()); // follows its parent
//   CancellationCallback on_cancel(branch.token(), [ctx] { ctx->TryCancel(); });
//   request.Cancel();                           // runs the callback, once
//
// Cancellation is one-way and sticky: once cancelled, always cancelled.
// Callbacks run exactly once, on the thread that calls Cancel() (or inline
// in the CancellationCallback constructor when the token is already
// cancelled). They must be short and must not block. Every type here is
// thread-safe.
#ifndef FANOUT_COMMON_CANCELLATION_H_
#define FANOUT_COMMON_CANCELLATION_H_

#include <memory>
#include <stop_token>

#include "absl/functional/any_invocable.h"

namespace fanout {

class CancellationSource;

// Observes one source. Cheap to copy; a copy may outlive its source (it then
// keeps the state the source had). A default-constructed token is never
// cancelled.
class CancellationToken {
 public:
  CancellationToken() = default;

  bool cancelled() const { return token_.stop_requested(); }
  // False for a default token, and for a token whose source is gone without
  // having cancelled it.
  bool can_be_cancelled() const { return token_.stop_possible(); }

 private:
  friend class CancellationSource;
  friend class CancellationCallback;
  explicit CancellationToken(std::stop_token token) : token_(std::move(token)) {}

  std::stop_token token_;
};

// The right to cancel. A source made from a parent token is cancelled when
// the parent is (immediately, if the parent already is); cancelling the child
// never cancels the parent. Destroying a child source detaches it from the
// parent; tokens taken from it stay valid. Movable, not copyable.
class CancellationSource {
 public:
  CancellationSource() = default;
  explicit CancellationSource(const CancellationToken& parent);
  ~CancellationSource();
  CancellationSource(CancellationSource&&) noexcept;
  CancellationSource& operator=(CancellationSource&&) noexcept;
  CancellationSource(const CancellationSource&) = delete;
  CancellationSource& operator=(const CancellationSource&) = delete;

  // Cancels and runs the registered callbacks before returning. Returns true
  // for the call that cancelled, false when already cancelled.
  bool Cancel() { return source_.request_stop(); }
  bool cancelled() const { return source_.stop_requested(); }
  CancellationToken token() const { return CancellationToken(source_.get_token()); }

 private:
  struct Forward {
    std::stop_source child;
    void operator()() noexcept { child.request_stop(); }
  };

  std::stop_source source_;
  // Registered on the parent's token; destroying it unsubscribes.
  std::unique_ptr<std::stop_callback<Forward>> link_;
};

// Runs `callback` once when `token` is cancelled: inline in the constructor
// if it already is, else on the thread that cancels. The destructor
// unsubscribes; if the callback is running on another thread, it waits for it
// to return, so state the callback touches may be destroyed right after.
// Destroying it from inside its own callback is allowed. Not movable.
class CancellationCallback {
 public:
  CancellationCallback(const CancellationToken& token, absl::AnyInvocable<void() &&> callback);
  ~CancellationCallback();
  CancellationCallback(const CancellationCallback&) = delete;
  CancellationCallback& operator=(const CancellationCallback&) = delete;

 private:
  struct Invoke {
    absl::AnyInvocable<void() &&>* callback;
    void operator()() noexcept;
  };

  absl::AnyInvocable<void() &&> callback_;
  std::stop_callback<Invoke> registration_;
};

}  // namespace fanout

#endif  // FANOUT_COMMON_CANCELLATION_H_
