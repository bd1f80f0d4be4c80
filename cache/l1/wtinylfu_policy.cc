#include "cache/l1/wtinylfu_policy.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace fanout::cache {
namespace {

constexpr double kMinWindowFraction = 0.01;  // of the capacity, for the window and the main region
constexpr double kDepthFraction = 0.25;      // D, the move a sample is judged for, of capacity
constexpr double kMaxStepFraction = 0.25;    // largest move per sample, of capacity
constexpr double kFullStepGain = 0.03;       // hits a full step must be worth, of the sample
constexpr double kNoiseZ = 2;                // standard errors a difference must exceed
constexpr uint64_t kMinSample = 4000;        // lookups per sample, at least
constexpr uint64_t kSampleDivisor = 2;       // ... or entries / this, if more
constexpr uint64_t kMinEarlySample = 1000;   // lookups before a decisive sample may end early
constexpr uint64_t kSketchFactor = 2;        // sketch words per resident entry
constexpr uint64_t kReportEvery = 256;       // lookups a policy counts before reporting
constexpr int kMaxTransfer = 1000;           // nodes moved per window resize
constexpr uint64_t kExitMarkRange = uint64_t{1} << 20;  // D in exit units, at most

uint64_t FractionOf(uint64_t capacity, double fraction) {
  return static_cast<uint64_t>(static_cast<double>(capacity) * fraction);
}

uint64_t InitialWindow(uint64_t capacity, double fraction, uint64_t min, uint64_t max) {
  const uint64_t main = FractionOf(capacity, 1.0 - fraction);
  return std::clamp<uint64_t>(capacity - std::min(main, capacity), min, max);
}

uint32_t Fingerprint(uint64_t hash) {
  const auto f = static_cast<uint32_t>(hash >> 32);
  return f == 0 ? 1 : f;
}

}  // namespace

WindowEvidence& WindowEvidence::operator+=(const WindowEvidence& other) {
  lookups += other.lookups;
  refused_returns += other.refused_returns;
  window_end_halves += other.window_end_halves;
  main_end_hits += other.main_end_hits;
  return *this;
}

WindowSizer::WindowSizer(double initial_fraction)
    : fraction_(std::clamp(initial_fraction, kMinWindowFraction, 1 - kMinWindowFraction)) {}

int WindowSizer::Join() {
  absl::MutexLock l(&mu_);
  entries_.push_back(0);
  return static_cast<int>(entries_.size() - 1);
}

// Decides once a sample is complete (see "Adaptive window" in the header).
void WindowSizer::Report(int id, const WindowEvidence& evidence, uint64_t entries) {
  absl::MutexLock l(&mu_);
  total_entries_ = total_entries_ - entries_[id] + entries;
  entries_[id] = entries;
  sample_ += evidence;
  const bool complete = sample_.lookups >= std::max(kMinSample, total_entries_ / kSampleDivisor);
  if (!complete && sample_.lookups < std::max(kMinEarlySample, total_entries_ / 2)) return;
  const double gain = std::max(static_cast<double>(sample_.refused_returns),
                               static_cast<double>(sample_.window_end_halves) / 2);
  const double loss = static_cast<double>(sample_.main_end_hits);
  const double difference = gain - loss;
  const double lookups = static_cast<double>(sample_.lookups);
  if (!complete) {
    // Early, for a difference worth a full step and far beyond noise: a
    // rotated hot set must not wait out a whole sample.
    if (std::abs(difference) < kFullStepGain * lookups ||
        std::abs(difference) < 2 * kNoiseZ * std::sqrt(gain + loss)) {
      return;
    }
  }
  if (gain + loss > 0 && std::abs(difference) >= kNoiseZ * std::sqrt(gain + loss)) {
    const double worth = std::min(1.0, std::abs(difference) / (kFullStepGain * lookups));
    const double step = kMaxStepFraction * difference / (gain + loss) * worth;
    fraction_.store(std::clamp(fraction_.load(std::memory_order_relaxed) + step, kMinWindowFraction,
                               1 - kMinWindowFraction),
                    std::memory_order_relaxed);
  }
  sample_ = WindowEvidence{};
}

WTinyLfuPolicy::WTinyLfuPolicy(const WTinyLfuPolicyOptions& options)
    : capacity_(std::max<uint64_t>(options.capacity, 1)),
      protected_fraction_(options.protected_fraction),
      adaptive_(options.adaptive_window),
      min_window_(std::max<uint64_t>(FractionOf(capacity_, kMinWindowFraction), 1)),
      max_window_(std::max(min_window_, capacity_ - std::min(capacity_ - 1, min_window_))),
      depth_(std::max<uint64_t>(FractionOf(capacity_, kDepthFraction), 1)),
      exit_unit_(std::max<uint64_t>(depth_ / kExitMarkRange, 1)),
      window_max_(InitialWindow(capacity_, options.initial_window_fraction,
                                adaptive_ ? min_window_ : 1, adaptive_ ? max_window_ : capacity_)),
      protected_max_(0),
      sketch_(kSketchFactor *
              (options.expected_entries != 0 ? options.expected_entries : capacity_)),
      own_sizer_(adaptive_ && options.sizer == nullptr
                     ? std::make_unique<WindowSizer>(options.initial_window_fraction)
                     : nullptr),
      sizer_(!adaptive_                 ? nullptr
             : options.sizer != nullptr ? options.sizer
                                        : own_sizer_.get()),
      sizer_id_(sizer_ != nullptr ? sizer_->Join() : -1) {
  for (List& list : lists_) list.head.prev = list.head.next = &list.head;
  SetProtectedMax();
  if (adaptive_) {
    GrowRefusedTable(options.expected_entries != 0 ? options.expected_entries : capacity_);
  }
}

void WTinyLfuPolicy::SetProtectedMax() {
  protected_max_ = FractionOf(capacity_ - window_max_, protected_fraction_);
}

void WTinyLfuPolicy::GrowRefusedTable(uint64_t entries) {
  const uint64_t slots = std::bit_ceil(std::max<uint64_t>(entries, 1));
  if (slots <= refused_.size()) return;
  // Forgetting the refused keys on growth only delays the next sample's
  // evidence; growth is rare (doublings).
  refused_.assign(slots, Refused{});
  refused_mask_ = slots - 1;
}

void WTinyLfuPolicy::Unlink(PolicyNode* node) {
  if (node->prev == &lists_[node->region].head) exits_[node->region] += node->weight;
  node->prev->next = node->next;
  node->next->prev = node->prev;
  node->prev = node->next = nullptr;
}

void WTinyLfuPolicy::PushBack(Region region, PolicyNode* node) {
  // Callers have added the node's weight to the region's.
  node->due = exits_[region] + WeightOf(region);
  PolicyNode* head = &lists_[region].head;
  node->region = region;
  node->prev = head->prev;
  node->next = head;
  head->prev->next = node;
  head->prev = node;
}

void WTinyLfuPolicy::LinkAfter(Region region, PolicyNode* pos, PolicyNode* node) {
  node->region = region;
  node->prev = pos;
  node->next = pos->next;
  pos->next->prev = node;
  pos->next = node;
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

uint64_t WTinyLfuPolicy::DistanceFromEnd(const PolicyNode* node) const {
  // Modular: exits_ steps back when nodes join a least recent end (and then
  // the dues of the nodes that joined are set anew).
  return node->due - exits_[node->region];
}

void WTinyLfuPolicy::RecordHit(PolicyNode* node) {
  if (counting_) {
    // Most hits are far from their region's end: one subtraction.
    const uint64_t distance = DistanceFromEnd(node);
    if (distance <= depth_) CountEndHit(node, distance);
    CountLookup();
  }
  sketch_.Increment(node->hash);
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

// Counts a hit `distance` (at most D) from its region's end that a window
// larger by D would not have had to earn, or that a main region smaller by D
// would have lost (see the header).
void WTinyLfuPolicy::CountEndHit(const PolicyNode* node, uint64_t distance) {
  switch (node->region) {
    case kWindow: {
      // Leaving the window now, would it have won admission? If so a smaller
      // window would have kept it (in the main region) as well.
      const int frequency = sketch_.Frequency(node->hash);
      const int victim_frequency = VictimFrequency();
      if (frequency < victim_frequency) {
        evidence_.window_end_halves += 2;
      } else if (frequency == victim_frequency) {
        evidence_.window_end_halves += 1;
      }
      break;
    }
    case kProbation:
      ++evidence_.main_end_hits;
      break;
    case kProtected:
      if (probation_weight_ < depth_ && distance <= depth_ - probation_weight_) {
        ++evidence_.main_end_hits;
      }
      break;
    default:
      break;
  }
}

// The estimate of probation's least recent node, the next victim (16 if
// there is none: nothing would be refused). Cached while that node stays the
// victim and the sketch does not age; counts others add meanwhile by
// collision are ignored.
int WTinyLfuPolicy::VictimFrequency() {
  const PolicyNode* victim = Front(kProbation);
  if (victim == nullptr) return 16;
  if (victim->hash != victim_hash_ || sketch_.agings() != victim_agings_) {
    victim_hash_ = victim->hash;
    victim_agings_ = sketch_.agings();
    victim_frequency_ = sketch_.Frequency(victim->hash);
  }
  return victim_frequency_;
}

// Counts a lookup towards the window-sizing evidence and reports it every
// kReportEvery lookups.
void WTinyLfuPolicy::CountLookup() {
  if (++evidence_.lookups < kReportEvery) return;
  sizer_->Report(sizer_id_, evidence_, size_);
  evidence_ = WindowEvidence{};
}

void WTinyLfuPolicy::RecordMiss(uint64_t hash) {
  sketch_.Increment(hash);
  if (!counting_) return;
  CountLookup();
  Refused& slot = refused_[hash & refused_mask_];
  if (slot.fingerprint == Fingerprint(hash)) {
    const uint32_t now = static_cast<uint32_t>(window_departures_ / exit_unit_);
    if (static_cast<uint64_t>(now - slot.exit_mark) * exit_unit_ <= depth_) {
      ++evidence_.refused_returns;
    }
    slot = Refused{};
  }
}

void WTinyLfuPolicy::Add(PolicyNode* node, std::vector<PolicyNode*>* evicted) {
  ++size_;
  sketch_.EnsureCapacity(kSketchFactor * size_);
  if (adaptive_) GrowRefusedTable(size_);
  window_weight_ += node->weight;
  PushBack(kWindow, node);
  Evict(evicted);
  Climb();
}

void WTinyLfuPolicy::Replace(PolicyNode* old, PolicyNode* node, std::vector<PolicyNode*>* evicted) {
  const Region region = static_cast<Region>(old->region);
  uint64_t& region_weight = WeightOf(region);
  region_weight = region_weight - old->weight + node->weight;
  node->region = region;
  node->due = old->due;
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

PolicyNode* WTinyLfuPolicy::First() {
  for (Region region : {kWindow, kProbation, kProtected}) {
    if (PolicyNode* node = Front(region)) return node;
  }
  return nullptr;
}

PolicyNode* WTinyLfuPolicy::After(PolicyNode* node) {
  if (PolicyNode* next = Next(node)) return next;
  for (int region = node->region + 1; region < kRegions; ++region) {
    if (PolicyNode* first = Front(static_cast<Region>(region))) return first;
  }
  return nullptr;
}

void WTinyLfuPolicy::Drop(PolicyNode* node, std::vector<PolicyNode*>* evicted) {
  if (!filled_) {
    // Until the cache first fills nothing is evicted: there was nothing to
    // weigh, and the window-sizing evidence starts now.
    filled_ = true;
    counting_ = sizer_ != nullptr;
  }
  Remove(node);
  evicted->push_back(node);
}

void WTinyLfuPolicy::Refuse(PolicyNode* candidate, std::vector<PolicyNode*>* evicted) {
  if (adaptive_) {
    refused_[candidate->hash & refused_mask_] = Refused{
        Fingerprint(candidate->hash), static_cast<uint32_t>(window_departures_ / exit_unit_)};
  }
  Drop(candidate, evicted);
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
    window_departures_ += node->weight;
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
      Refuse(drop, evicted);
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
      Refuse(candidate, evicted);
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
      candidate = Next(candidate);
      Refuse(drop, evicted);
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

// Moves the window towards the sizer's share of the capacity.
void WTinyLfuPolicy::Climb() {
  if (sizer_ == nullptr) return;
  const auto target = std::clamp<uint64_t>(
      static_cast<uint64_t>(sizer_->window_fraction() * static_cast<double>(capacity_)),
      min_window_, max_window_);
  adjustment_ = static_cast<int64_t>(target) - static_cast<int64_t>(window_max_);
  if (adjustment_ > 0) {
    IncreaseWindow();
  } else if (adjustment_ < 0) {
    DecreaseWindow();
  }
}

// Moves up to `adjustment_` of weight from the main region's least recent
// ends to the window's; what cannot move now is tried again on the next
// Add.
void WTinyLfuPolicy::IncreaseWindow() {
  if (window_max_ >= max_window_) {
    adjustment_ = 0;
    return;
  }
  uint64_t quota =
      std::min<uint64_t>(static_cast<uint64_t>(adjustment_), max_window_ - window_max_);
  window_max_ += quota;
  SetProtectedMax();
  DemoteFromProtected();
  // The moved nodes join the window's least recent end in their order, so
  // they leave it (and face admission again) before its own nodes.
  PolicyNode* last = &lists_[kWindow].head;
  uint64_t moved = 0;
  for (int i = 0; i < kMaxTransfer; ++i) {
    PolicyNode* node = Front(kProbation);
    if (node == nullptr || quota < node->weight) node = Front(kProtected);
    if (node == nullptr || quota < node->weight) break;
    quota -= node->weight;
    moved += node->weight;
    WeightOf(static_cast<Region>(node->region)) -= node->weight;
    Unlink(node);
    window_weight_ += node->weight;
    LinkAfter(kWindow, last, node);
    last = node;
  }
  // Every node already in the window is now `moved` further from its end.
  exits_[kWindow] -= moved;
  uint64_t due = exits_[kWindow];
  for (PolicyNode* node = Front(kWindow); moved > 0 && node != nullptr; node = Next(node)) {
    due += node->weight;
    node->due = due;
    if (node == last) break;
  }
  window_max_ -= quota;
  SetProtectedMax();
  adjustment_ = static_cast<int64_t>(quota);
}

// Moves up to -adjustment_ of weight from the window to probation.
void WTinyLfuPolicy::DecreaseWindow() {
  if (window_max_ <= min_window_) {
    adjustment_ = 0;
    return;
  }
  uint64_t quota =
      std::min<uint64_t>(static_cast<uint64_t>(-adjustment_), window_max_ - min_window_);
  window_max_ -= quota;
  for (int i = 0; i < kMaxTransfer; ++i) {
    PolicyNode* node = Front(kWindow);
    if (node == nullptr || quota < node->weight) break;
    quota -= node->weight;
    Unlink(node);
    window_weight_ -= node->weight;
    window_departures_ += node->weight;
    probation_weight_ += node->weight;
    PushBack(kProbation, node);
  }
  window_max_ += quota;
  SetProtectedMax();
  adjustment_ = -static_cast<int64_t>(quota);
}

}  // namespace fanout::cache
