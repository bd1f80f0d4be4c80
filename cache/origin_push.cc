#include "cache/origin_push.h"

#include <algorithm>
#include <atomic>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/log_throttle.h"

namespace fanout::cache {

struct OriginPush::Counts {
  std::atomic<uint64_t> changes{0};
  std::atomic<uint64_t> keys{0};
  std::atomic<uint64_t> not_broadcast{0};
  std::atomic<uint64_t> resets{0};
  // The origin decides how often it resets.
  LogThrottle reset_log{5, absl::Seconds(10)};
};

OriginPush::OriginPush(Invalidator* invalidator, size_t max_keys)
    : invalidator_(invalidator),
      max_keys_(std::max<size_t>(1, max_keys)),
      counts_(std::make_shared<Counts>()) {}

absl::StatusOr<std::unique_ptr<OriginPush>> OriginPush::Start(Origin* origin,
                                                              Invalidator* invalidator,
                                                              size_t max_keys) {
  std::unique_ptr<OriginPush> push(new OriginPush(invalidator, max_keys));
  absl::StatusOr<std::unique_ptr<OriginWatch>> watch =
      origin->WatchChanges([p = push.get()](OriginChange change) { p->Apply(std::move(change)); });
  if (!watch.ok()) return watch.status();
  push->watch_ = *std::move(watch);
  return push;
}

OriginPush::~OriginPush() { watch_.reset(); }

void OriginPush::Apply(OriginChange change) {
  if (change.all) {
    counts_->changes.fetch_add(1, std::memory_order_relaxed);
    counts_->resets.fetch_add(1, std::memory_order_relaxed);
    const uint64_t dropped = invalidator_->InvalidateEverything();
    int64_t suppressed = 0;
    if (counts_->reset_log.Admit(&suppressed)) {
      std::string where =
          change.ns.empty() ? "" : absl::StrCat(" in namespace \"", change.ns, "\"");
      if (suppressed > 0) absl::StrAppend(&where, " (", suppressed, " more such resets)");
      FANOUT_LOG(WARNING) << "the origin cannot say what changed" << where << ": dropped "
                          << dropped << " entries cached on this pod";
    }
    return;
  }
  if (change.keys.empty() && change.prefix.empty()) return;
  counts_->changes.fetch_add(1, std::memory_order_relaxed);
  counts_->keys.fetch_add(change.keys.size() + (change.prefix.empty() ? 0 : 1),
                          std::memory_order_relaxed);
  // Chunks of at most max_keys_ keys; the prefix goes with the first.
  std::vector<Invalidation> parts;
  size_t next = 0;
  do {
    Invalidation inv;
    inv.ns = change.ns;
    const size_t end = std::min(change.keys.size(), next + max_keys_);
    inv.keys.assign(std::make_move_iterator(change.keys.begin() + next),
                    std::make_move_iterator(change.keys.begin() + end));
    if (parts.empty()) inv.prefix = change.prefix;
    next = end;
    parts.push_back(std::move(inv));
  } while (next < change.keys.size());
  for (Invalidation& inv : parts) {
    invalidator_->Invalidate(std::move(inv),
                             [counts = counts_](absl::StatusOr<Invalidator::Result> result) {
                               if (result.ok())
                                 return;  // applied (and broadcast when there is a bus)
                               counts->not_broadcast.fetch_add(1, std::memory_order_relaxed);
                               FANOUT_LOG(WARNING) << "origin change applied on this pod only: "
                                                   << result.status().message();
                             });
  }
}

OriginPushStats OriginPush::Stats() const {
  return {.changes = counts_->changes.load(std::memory_order_relaxed),
          .keys = counts_->keys.load(std::memory_order_relaxed),
          .not_broadcast = counts_->not_broadcast.load(std::memory_order_relaxed),
          .resets = counts_->resets.load(std::memory_order_relaxed)};
}

}  // namespace fanout::cache
