#include "cache/l1/wtinylfu_policy.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace fanout::cache {
namespace {

constexpr double kStepFraction = 0.0625;    // first hill-climbing step, of capacity
constexpr double kStepDecay = 0.98;         // each later step shrinks by this
constexpr double kRestartThreshold = 0.05;  // hit ratio change that restarts the climb
constexpr double kNoiseZ = 2;               // standard errors a change must exceed
constexpr uint64_t kSampleFactor = 10;      // climbing sample, in lookups per entry
constexpr uint64_t kSketchFactor = 2;       // sketch words per expected entry
constexpr int kMaxTransfer = 1000;          // nodes moved per window resize

uint64_t InitialWindow(uint64_t capacity, double fraction) {
  const auto main = static_cast<uint64_t>(static_cast<double>(capacity) * (1.0 - fraction));
  return std::max<uint64_t>(capacity - std::min(main, capacity), 1);
}

}  // namespace

WTinyLfuPolicy::WTinyLfuPolicy(const WTinyLfuPolicyOptions& options)
    : capacity_(std::max<uint64_t>(options.capacity, 1)),
      adaptive_(options.adaptive_window),
      window_max_(std::min(InitialWindow(capacity_, options.initial_window_fraction), capacity_)),
      protected_max_(static_cast<uint64_t>(static_cast<double>(capacity_ - window_max_) *
                                           options.protected_fraction)),
      sketch_(kSketchFactor * (options.expected_entries != 0 ? options.expected_entries : capacity_)),
      step_(kStepFraction * static_cast<double>(capacity_)) {
  for (List& list : lists_) list.head.prev = list.head.next = &list.head;
  const uint64_t entries = options.expected_entries != 0 ? options.expected_entries : capacity_;
  rejected_.assign(std::bit_ceil(entries), 0);
  rejected_mask_ = rejected_.size() - 1;
}

void WTinyLfuPolicy::Unlink(PolicyNode* node) {
  node->prev->next = node->next;
  node->next->prev = node->prev;
  node->prev = node->next = nullptr;
}

void WTinyLfuPolicy::PushBack(Region region, PolicyNode* node) {
  PolicyNode* head = &lists_[region].head;
  node->region = region;
  node->prev = head->prev;
  node->next = head;
  head->prev->next = node;
  head->prev = node;
}

PolicyNode* WTinyLfuPolicy::Front(Region region) {
  PolicyNode* head = &lists_[region].head;
  return head->next == head ? nullptr : head->next;
}

PolicyNode* WTinyLfuPolicy::Next(PolicyNode* node) {
  return node->next == &lists_[node->region].head ? nullptr : node->next;
}

uint64_t& WTinyLfuPolicy::WeightOf(Region region) {
  switch (region) {
    case kWindow:
      return window_weight_;
    case kProbation:
      return probation_weight_;
    default:
      return protected_weight_;
  }
}

void WTinyLfuPolicy::RecordHit(PolicyNode* node) {
  sketch_.Increment(node->hash);
  ++sample_hits_;
  const Region region = static_cast<Region>(node->region);
  Unlink(node);
  if (region == kProbation && node->weight <= protected_max_) {
    probation_weight_ -= node->weight;
    protected_weight_ += node->weight;
    PushBack(kProtected, node);
    DemoteFromProtected();
  } else {
    PushBack(region, node);
  }
}

void WTinyLfuPolicy::RecordMiss(uint64_t hash) {
  sketch_.Increment(hash);
  ++sample_misses_;
  uint64_t& slot = rejected_[hash & rejected_mask_];
  if (slot == (hash | 1)) {
    ++sample_regrets_;
    slot = 0;
  }
}

void WTinyLfuPolicy::Add(PolicyNode* node, std::vector<PolicyNode*>* evicted) {
  ++size_;
  sketch_.EnsureCapacity(kSketchFactor * size_);
  if (size_ > rejected_.size()) {
    rejected_.assign(std::bit_ceil(size_), 0);
    rejected_mask_ = rejected_.size() - 1;
  }
  window_weight_ += node->weight;
  PushBack(kWindow, node);
  Evict(evicted);
  Climb();
}

void WTinyLfuPolicy::Replace(PolicyNode* old, PolicyNode* node,
                             std::vector<PolicyNode*>* evicted) {
  const Region region = static_cast<Region>(old->region);
  uint64_t& region_weight = WeightOf(region);
  region_weight = region_weight - old->weight + node->weight;
  node->region = region;
  node->prev = old->prev;
  node->next = old->next;
  node->prev->next = node;
  node->next->prev = node;
  old->prev = old->next = nullptr;
  old->region = kNone;
  if (region == kProtected) DemoteFromProtected();
  Evict(evicted);
}

void WTinyLfuPolicy::Remove(PolicyNode* node) {
  WeightOf(static_cast<Region>(node->region)) -= node->weight;
  Unlink(node);
  node->region = kNone;
  --size_;
}

void WTinyLfuPolicy::Drop(PolicyNode* node, std::vector<PolicyNode*>* evicted) {
  filled_ = true;
  Remove(node);
  evicted->push_back(node);
}

void WTinyLfuPolicy::Evict(std::vector<PolicyNode*>* evicted) {
  EvictFromMain(EvictFromWindow(), evicted);
}

// Moves the window's overflow to probation; returns the first (least recent)
// node moved, the first candidate for admission.
PolicyNode* WTinyLfuPolicy::EvictFromWindow() {
  PolicyNode* first = nullptr;
  PolicyNode* node = Front(kWindow);
  while (window_weight_ > window_max_ && node != nullptr) {
    PolicyNode* next = Next(node);
    Unlink(node);
    window_weight_ -= node->weight;
    probation_weight_ += node->weight;
    PushBack(kProbation, node);
    if (first == nullptr) first = node;
    node = next;
  }
  return first;
}

// Candidates run from `candidate` towards probation's most recent end;
// victims from probation's least recent end the same way. Each round drops
// one of the pair. When candidates run out the window's oldest nodes become
// candidates; when probation runs out, protected's and then the window's
// oldest nodes become victims.
void WTinyLfuPolicy::EvictFromMain(PolicyNode* candidate, std::vector<PolicyNode*>* evicted) {
  Region victim_region = kProbation;
  Region candidate_region = kProbation;
  PolicyNode* victim = Front(kProbation);
  while (weight() > capacity_) {
    if (candidate == nullptr && candidate_region == kProbation) {
      candidate = Front(kWindow);
      candidate_region = kWindow;
    }
    if (candidate == nullptr && victim == nullptr) {
      if (victim_region == kProbation) {
        victim = Front(kProtected);
        victim_region = kProtected;
        continue;
      }
      if (victim_region == kProtected) {
        victim = Front(kWindow);
        victim_region = kWindow;
        continue;
      }
      break;  // nothing left to drop
    }
    if (victim == nullptr) {
      PolicyNode* drop = candidate;
      candidate = Next(candidate);
      Drop(drop, evicted);
      continue;
    }
    if (candidate == nullptr) {
      PolicyNode* drop = victim;
      victim = Next(victim);
      Drop(drop, evicted);
      continue;
    }
    if (candidate == victim) {
      victim = Next(victim);
      Drop(candidate, evicted);
      candidate = nullptr;
      continue;
    }
    if (Admit(candidate->hash, victim->hash)) {
      PolicyNode* drop = victim;
      victim = Next(victim);
      Drop(drop, evicted);
      candidate = Next(candidate);
    } else {
      PolicyNode* drop = candidate;
      rejected_[candidate->hash & rejected_mask_] = candidate->hash | 1;
      candidate = Next(candidate);
      Drop(drop, evicted);
    }
  }
}

bool WTinyLfuPolicy::Admit(uint64_t candidate_hash, uint64_t victim_hash) {
  const int victim_frequency = sketch_.Frequency(victim_hash);
  const int candidate_frequency = sketch_.Frequency(candidate_hash);
  return candidate_frequency > victim_frequency;
}

void WTinyLfuPolicy::DemoteFromProtected() {
  for (int i = 0; i < kMaxTransfer && protected_weight_ > protected_max_; ++i) {
    PolicyNode* node = Front(kProtected);
    if (node == nullptr) break;
    Unlink(node);
    protected_weight_ -= node->weight;
    probation_weight_ += node->weight;
    PushBack(kProbation, node);
  }
}

void WTinyLfuPolicy::Climb() {
  if (!adaptive_) return;
  DetermineAdjustment();
  DemoteFromProtected();
  if (adjustment_ > 0) {
    IncreaseWindow();
  } else if (adjustment_ < 0) {
    DecreaseWindow();
  }
}

// Sets adjustment_ once a sample is complete. A change of the hit ratio
// within kNoiseZ standard errors of the difference of two samples is taken
// as noise, not as a direction (following noise is a random walk that costs
// points on stable skewed workloads). On such a plateau the window grows only
// if recently rejected candidates came back more often than lookups hit
// (reuse that only a larger window can catch, and a plateau a random walk
// would leave only by chance), and shrinks otherwise.
void WTinyLfuPolicy::DetermineAdjustment() {
  if (!filled_) {
    // While the cache fills, the hit ratio rises whatever the window does.
    sample_hits_ = 0;
    sample_misses_ = 0;
    sample_regrets_ = 0;
    return;
  }
  const uint64_t requests = sample_hits_ + sample_misses_;
  if (requests < kSampleFactor * std::max<uint64_t>(size_, 1)) return;
  const double n = static_cast<double>(requests);
  const double hit_ratio = static_cast<double>(sample_hits_) / n;
  const double change = hit_ratio - previous_hit_ratio_;
  const double noise = kNoiseZ * std::sqrt(2 * hit_ratio * (1 - hit_ratio) / n);
  double amount = change >= 0 ? step_ : -step_;
  if (std::abs(change) < noise) {
    const double regret = static_cast<double>(sample_regrets_) / n;
    amount = regret > hit_ratio ? std::abs(step_) : -std::abs(step_);
  }
  step_ = std::abs(change) >= kRestartThreshold
              ? kStepFraction * static_cast<double>(capacity_) * (amount >= 0 ? 1 : -1)
              : kStepDecay * amount;
  previous_hit_ratio_ = hit_ratio;
  adjustment_ = static_cast<int64_t>(amount);
  sample_hits_ = 0;
  sample_misses_ = 0;
  sample_regrets_ = 0;
}

// Moves up to `adjustment_` of weight from the main region to the window;
// whatever cannot move now stays in adjustment_ for the next round.
void WTinyLfuPolicy::IncreaseWindow() {
  if (protected_max_ == 0) return;
  uint64_t quota = std::min<uint64_t>(static_cast<uint64_t>(adjustment_), protected_max_);
  protected_max_ -= quota;
  window_max_ += quota;
  DemoteFromProtected();
  for (int i = 0; i < kMaxTransfer; ++i) {
    PolicyNode* node = Front(kProbation);
    if (node == nullptr || quota < node->weight) node = Front(kProtected);
    if (node == nullptr || quota < node->weight) break;
    quota -= node->weight;
    WeightOf(static_cast<Region>(node->region)) -= node->weight;
    Unlink(node);
    window_weight_ += node->weight;
    PushBack(kWindow, node);
  }
  protected_max_ += quota;
  window_max_ -= quota;
  adjustment_ = static_cast<int64_t>(quota);
}

// Moves up to -adjustment_ of weight from the window to probation.
void WTinyLfuPolicy::DecreaseWindow() {
  if (window_max_ <= 1) return;
  uint64_t quota = std::min<uint64_t>(static_cast<uint64_t>(-adjustment_), window_max_ - 1);
  protected_max_ += quota;
  window_max_ -= quota;
  for (int i = 0; i < kMaxTransfer; ++i) {
    PolicyNode* node = Front(kWindow);
    if (node == nullptr || quota < node->weight) break;
    quota -= node->weight;
    Unlink(node);
    window_weight_ -= node->weight;
    probation_weight_ += node->weight;
    PushBack(kProbation, node);
  }
  protected_max_ -= quota;
  window_max_ += quota;
  adjustment_ = -static_cast<int64_t>(quota);
}

}  // namespace fanout::cache
