#include "common/cancellation.h"

#include <utility>

namespace fanout {

CancellationSource::CancellationSource(const CancellationToken& parent) {
  if (parent.token_.stop_possible()) {
    // Runs inline when the parent is already cancelled.
    link_ = std::make_unique<std::stop_callback<Forward>>(parent.token_, Forward{source_});
  }
}

CancellationSource::~CancellationSource() = default;

CancellationSource::CancellationSource(CancellationSource&& other) noexcept = default;

CancellationSource& CancellationSource::operator=(CancellationSource&& other) noexcept = default;

void CancellationCallback::Invoke::operator()() noexcept {
  // Moved out first: the callback may destroy its own CancellationCallback.
  absl::AnyInvocable<void()&&> run = std::move(*callback);
  if (run) std::move(run)();
}

CancellationCallback::CancellationCallback(const CancellationToken& token,
                                           absl::AnyInvocable<void() &&> callback)
    : callback_(std::move(callback)), registration_(token.token_, Invoke{&callback_}) {}

CancellationCallback::~CancellationCallback() = default;

}  // namespace fanout
