#include "cache/tiers/redis/redis_bus.h"

#include <algorithm>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cache/entry.h"
#include "cache/tiers/envelope.h"
#include "common/log.h"

namespace fanout::cache {
namespace {

// Stream ids compared as (ms, seq) numbers: both fit a Lua double exactly.
constexpr char kIdLua[] = R"lua(
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms) or -1, tonumber(seq) or -1
end
local function after(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  if am ~= bm then return am > bm end
  return as > bs
end
local function stream_info(key)
  local out = {}
  if redis.call('EXISTS', key) == 0 then return nil end
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do out[info[i]] = info[i + 1] end
  return out
end
)lua";

// Publish (ARGV[1] == 'publish') or only fence (ARGV[1] == 'fence').
// KEYS[1] the stream, KEYS[2] the any-prefix-fence flag, KEYS[3 .. 2+nf]
// fence keys, then (publish) the L2 value keys to UNLINK. ARGV[2] nf,
// ARGV[3] fence ttl (ms), ARGV[4] MAXLEN, ARGV[5] '1' when a prefix fence is
// among the fences, ARGV[6..] the entry's fields. A fence holds the stream's
// last id before this invalidation; it only ever moves forward. Returns the
// new entry's id (publish) or the fence (fence).
constexpr char kPublishLua[] = R"lua(
local info = stream_info(KEYS[1])
local last = info and info['last-generated-id'] or '0-0'
local nf = tonumber(ARGV[2])
for i = 3, 2 + nf do
  local cur = redis.call('GET', KEYS[i])
  if not cur or after(last, cur) then
    redis.call('SET', KEYS[i], last, 'PX', ARGV[3])
  else
    redis.call('PEXPIRE', KEYS[i], ARGV[3])
  end
end
if ARGV[5] == '1' then redis.call('SET', KEYS[2], '1', 'PX', ARGV[3]) end
if ARGV[1] == 'fence' then return last end
for i = 3 + nf, #KEYS do redis.call('UNLINK', KEYS[i]) end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
)lua";

// Whether the reader can go on from ARGV[1] (its last applied id; '' at
// start) without missing entries. Returns {gap (0 or 1), the stream's last
// id}. An id still in the stream can be replayed (trimming takes the oldest
// first); one that is not was trimmed (perhaps with what followed it) or the
// stream was lost. '0-0' (the stream did not exist at start) can be
// replayed while nothing was ever removed.
constexpr char kGapLua[] = R"lua(
local info = stream_info(KEYS[1])
local last = info and info['last-generated-id'] or '0-0'
local from = ARGV[1]
if from == '' then return {0, last} end
if not info then
  if from == '0-0' then return {0, from} end
  return {1, last}
end
if from == '0-0' then
  local added = info['entries-added']
  if added == nil then
    if info['length'] > 0 then return {1, last} end
    return {0, from}
  end
  if added > info['length'] then return {1, last} end
  return {0, from}
end
if #redis.call('XRANGE', KEYS[1], from, from) == 1 then return {0, from} end
return {1, last}
)lua";

// KEYS[1] the value key, KEYS[2] the key's fence, KEYS[3] the
// any-prefix-fence flag. ARGV[1] the envelope, ARGV[2] PX in ms ('0': none),
// ARGV[3] the stream position the filling pod had applied when the fill
// started, ARGV[4] the prefix-fence key prefix, ARGV[5] the composite key,
// ARGV[6] the length of its shortest prefix that names a key (namespace,
// NUL, one byte). Refused (0) when any fence is at or after ARGV[3].
constexpr char kFencedStoreLua[] = R"lua(
local function fenced(f) return f and not after(ARGV[3], f) end
if fenced(redis.call('GET', KEYS[2])) then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then
  local ck = ARGV[5]
  for i = tonumber(ARGV[6]), #ck do
    if fenced(redis.call('GET', ARGV[4] .. string.sub(ck, 1, i))) then return 0 end
  end
end
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
)lua";

const std::string& PublishLua() {
  static const std::string* s = new std::string(absl::StrCat(kIdLua, kPublishLua));
  return *s;
}
const std::string& GapLua() {
  static const std::string* s = new std::string(absl::StrCat(kIdLua, kGapLua));
  return *s;
}
const std::string& FencedStoreLua() {
  static const std::string* s = new std::string(absl::StrCat(kIdLua, kFencedStoreLua));
  return *s;
}

std::pair<int64_t, int64_t> ParseId(absl::string_view id) {
  std::pair<int64_t, int64_t> out{-1, -1};
  std::vector<absl::string_view> parts = absl::StrSplit(id, '-');
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &out.first) ||
      !absl::SimpleAtoi(parts[1], &out.second)) {
    return {-1, -1};
  }
  return out;
}

std::string RandomSuffix() {
  absl::BitGen gen;
  return absl::StrCat(absl::Hex(absl::Uniform<uint64_t>(gen), absl::kZeroPad16));
}

}  // namespace

bool StreamIdAfter(absl::string_view a, absl::string_view b) { return ParseId(a) > ParseId(b); }

void AppliedLog::Applied(std::string id) {
  const absl::Time now = clock_->Now();
  absl::MutexLock l(&mu_);
  if (!log_.empty() && log_.back().second == id) return;
  log_.emplace_back(now, std::move(id));
  while (log_.size() > capacity_) log_.pop_front();
}

std::string AppliedLog::At(absl::Time t) const {
  absl::MutexLock l(&mu_);
  // The last entry whose time is at or before t.
  auto it = std::upper_bound(log_.begin(), log_.end(), t,
                             [](absl::Time x, const auto& e) { return x < e.first; });
  if (it == log_.begin()) return "0-0";
  return std::prev(it)->second;
}

std::string AppliedLog::Last() const {
  absl::MutexLock l(&mu_);
  return log_.empty() ? std::string() : log_.back().second;
}

// ---- The bus ----------------------------------------------------------------

struct RedisBus::PublishJob {
  Invalidation inv;
  absl::Time deadline;
  PublishDone done;
};

RedisBus::RedisBus(std::shared_ptr<RedisClient> writer, Tier* shared,
                   std::shared_ptr<AppliedLog> applied, RedisBusOptions options)
    : options_(std::move(options)),
      keys_(options_.key_prefix),
      id_(absl::StrCat(options_.pod, "/", RandomSuffix())),
      stream_(keys_.InvalidationStream()),
      writer_(std::move(writer)),
      shared_(shared),
      applied_(std::move(applied)),
      retry_(options_.retry_min),
      started_(absl::Now()) {}

absl::StatusOr<std::unique_ptr<RedisBus>> RedisBus::Start(std::shared_ptr<RedisClient> writer,
                                                          RedisClientOptions reader, Tier* shared,
                                                          std::shared_ptr<AppliedLog> applied,
                                                          RedisBusOptions options) {
  if (options.heartbeat <= absl::ZeroDuration() || options.dead_after <= options.heartbeat) {
    return absl::InvalidArgumentError("the bus's dead_after must be longer than its heartbeat");
  }
  if (options.max_len < 1 || options.read_batch < 1) {
    return absl::InvalidArgumentError("the bus's max_len and read_batch must be at least 1");
  }
  reader.connections = 1;
  reader.command_timeout = options.dead_after;
  reader.start_wait = absl::ZeroDuration();
  reader.name = "fanout-bus";
  std::unique_ptr<RedisBus> bus(
      new RedisBus(std::move(writer), shared, std::move(applied), std::move(options)));
  absl::StatusOr<std::shared_ptr<RedisClient>> client = RedisClient::Create(std::move(reader));
  if (!client.ok()) return client.status();
  bus->reader_ = *std::move(client);
  RedisBus* raw = bus.get();
  bus->reader_->RunAfter(absl::ZeroDuration(), [raw] { raw->ReadRound(); });
  return bus;
}

RedisBus::~RedisBus() {
  {
    absl::MutexLock l(&mu_);
    closing_ = true;
    mu_.Await(absl::Condition(
        +[](int* n) { return *n == 0; }, &publishing_));
  }
  reader_.reset();
}

template <typename F>
void RedisBus::Notify(F f) {
  std::vector<Subscriber*> subscribers;
  {
    absl::MutexLock l(&mu_);
    if (subscribers_.empty()) return;
    subscribers = subscribers_;
    ++notifying_;
  }
  for (Subscriber* s : subscribers) f(s);
  absl::MutexLock l(&mu_);
  --notifying_;
}

void RedisBus::Subscribe(Subscriber* subscriber) {
  absl::MutexLock l(&mu_);
  subscribers_.push_back(subscriber);
}

void RedisBus::Unsubscribe(Subscriber* subscriber) {
  absl::MutexLock l(&mu_);
  subscribers_.erase(std::remove(subscribers_.begin(), subscribers_.end(), subscriber),
                     subscribers_.end());
  mu_.Await(absl::Condition(
      +[](int* n) { return *n == 0; }, &notifying_));
}

LinkState RedisBus::link_state() const {
  absl::MutexLock l(&mu_);
  return link_;
}

InvalidationBusStats RedisBus::Stats() const {
  InvalidationBusStats s;
  s.published = published_.load(std::memory_order_relaxed);
  s.publish_failures = publish_failures_.load(std::memory_order_relaxed);
  s.received = received_.load(std::memory_order_relaxed);
  s.gaps = gaps_.load(std::memory_order_relaxed);
  s.link_downs = link_downs_.load(std::memory_order_relaxed);
  s.fenced_stores = applied_->fenced();
  s.last_applied = applied_->Last();
  s.link = link_state();
  return s;
}

// ---- Reading ----------------------------------------------------------------

void RedisBus::ReadRound() {
  {
    absl::MutexLock l(&mu_);
    if (closing_) return;
  }
  std::vector<RedisClient::Command> commands;
  if (!name_sent_) {
    commands.push_back({"CLIENT", "SETNAME", absl::StrCat("fanout-bus:", options_.pod)});
  }
  commands.push_back({"EVAL", GapLua(), "1", stream_, last_});
  // The first round only learns where the stream ends (at once, so the link
  // is up within a round trip of the start rather than a heartbeat later);
  // every later one reads on from the last entry seen.
  if (!last_.empty()) {
    commands.push_back({"XREAD", "BLOCK",
                        std::to_string(absl::ToInt64Milliseconds(options_.heartbeat)), "COUNT",
                        std::to_string(options_.read_batch), "STREAMS", stream_, last_});
  }
  reader_->RunPipeline(
      std::move(commands), absl::InfiniteFuture(),
      [this](absl::StatusOr<std::vector<RedisReply>> replies) { OnRound(std::move(replies)); });
}

void RedisBus::OnRound(absl::StatusOr<std::vector<RedisReply>> replies) {
  {
    absl::MutexLock l(&mu_);
    if (closing_) return;
  }
  if (!replies.ok()) {
    ReadFailed(replies.status());
    return;
  }
  for (const RedisReply& r : *replies) {
    if (r.is_error()) {
      ReadFailed(absl::UnavailableError(absl::StrCat("Redis answered ", r.str)));
      return;
    }
  }
  const bool start = last_.empty();
  const RedisReply nothing_read;  // nil: the first round reads no entries
  const RedisReply& gap = start ? replies->back() : (*replies)[replies->size() - 2];
  const RedisReply& read = start ? nothing_read : replies->back();
  if (gap.type != RedisReply::Type::kArray || gap.elements.size() != 2 ||
      gap.elements[1].str.empty() || (read.type != RedisReply::Type::kArray && !read.is_nil())) {
    ReadFailed(absl::UnavailableError("unexpected reply to the invalidation stream read"));
    return;
  }
  name_sent_ = true;
  retry_ = options_.retry_min;
  if (gap.elements[0].integer != 0) {
    gaps_.fetch_add(1, std::memory_order_relaxed);
    FANOUT_LOG(WARNING) << "invalidation stream: entries after " << last_
                        << " are gone (trimmed past this pod, or Redis lost the stream)";
    Notify([](Subscriber* s) { s->OnGap(); });
    last_ = gap.elements[1].str;
  } else if (start) {
    last_ = gap.elements[1].str;
  }
  if (read.type == RedisReply::Type::kArray) {
    for (const RedisReply& stream : read.elements) {
      if (stream.type == RedisReply::Type::kArray && stream.elements.size() == 2) {
        Deliver(stream.elements[1].elements);
      }
    }
  }
  applied_->Applied(last_);
  ever_up_ = true;
  SetLink(LinkState::kUp);
  logged_down_ = false;
  ReadRound();
}

void RedisBus::Deliver(const std::vector<RedisReply>& entries) {
  for (const RedisReply& e : entries) {
    if (e.type != RedisReply::Type::kArray || e.elements.size() != 2) continue;
    const std::string& id = e.elements[0].str;
    Invalidation inv;
    bool has_sender = false;
    const std::vector<RedisReply>& f = e.elements[1].elements;
    for (size_t i = 0; i + 1 < f.size(); i += 2) {
      const std::string& name = f[i].str;
      const std::string& value = f[i + 1].str;
      if (name == "s") {
        inv.sender = value;
        has_sender = true;
      } else if (name == "q") {
        (void)absl::SimpleAtoi(value, &inv.sequence);
      } else if (name == "n") {
        inv.ns = value;
      } else if (name == "p") {
        inv.prefix = value;
      } else if (name == "u") {
        inv.purge_survival = value == "1";
      } else if (name == "k" && !value.empty()) {
        inv.keys = absl::StrSplit(value, absl::string_view("\0", 1));
      }
    }
    if (StreamIdAfter(id, last_)) last_ = id;
    if (!has_sender || (inv.keys.empty() && inv.prefix.empty())) {
      FANOUT_LOG(WARNING) << "invalidation stream: entry " << id
                          << " is not an invalidation; skipped";
      continue;
    }
    if (inv.sender == id_) continue;
    received_.fetch_add(1, std::memory_order_relaxed);
    Notify([&inv](Subscriber* s) { s->OnInvalidation(inv); });
  }
}

void RedisBus::ReadFailed(const absl::Status& why) {
  {
    absl::MutexLock l(&mu_);
    if (closing_) return;
  }
  name_sent_ = false;
  // The reader's first connection is still being made at start.
  const bool starting = !ever_up_ && absl::Now() - started_ < absl::Seconds(2);
  if (!logged_down_ && !starting) {
    FANOUT_LOG(WARNING) << "invalidation stream: read failed (" << why.message() << "); retrying";
    logged_down_ = true;
  }
  SetLink(LinkState::kDegraded);
  const absl::Duration delay = retry_;
  retry_ = std::min(retry_ * 2, options_.retry_max);
  reader_->RunAfter(delay, [this] { ReadRound(); });
}

void RedisBus::SetLink(LinkState state) {
  {
    absl::MutexLock l(&mu_);
    if (link_ == state) return;
    link_ = state;
  }
  if (state == LinkState::kDegraded) link_downs_.fetch_add(1, std::memory_order_relaxed);
  Notify([state](Subscriber* s) { s->OnLinkState(state); });
}

// ---- Publishing -------------------------------------------------------------

bool RedisBus::Enter() {
  absl::MutexLock l(&mu_);
  if (closing_) return false;
  ++publishing_;
  return true;
}

void RedisBus::Leave() {
  absl::MutexLock l(&mu_);
  --publishing_;
}

RedisClient::Command RedisBus::PublishScript(const Invalidation& inv, bool fence_only) const {
  std::vector<std::string> fences;
  std::vector<std::string> values;
  for (const std::string& k : inv.keys) {
    const std::string ckey = CompositeKey(inv.ns, k);
    fences.push_back(keys_.KeyFence(ckey));
    if (!fence_only) values.push_back(keys_.Value(ckey));
  }
  const bool prefix = !inv.prefix.empty();
  if (prefix) fences.push_back(keys_.PrefixFence(CompositeKey(inv.ns, inv.prefix)));
  RedisClient::Command cmd;
  cmd.reserve(8 + fences.size() + values.size() + 12);
  cmd.push_back("EVAL");
  cmd.push_back(PublishLua());
  cmd.push_back(std::to_string(2 + fences.size() + values.size()));
  cmd.push_back(stream_);
  cmd.push_back(keys_.AnyPrefixFence());
  for (std::string& f : fences) cmd.push_back(std::move(f));
  for (std::string& v : values) cmd.push_back(std::move(v));
  cmd.push_back(fence_only ? "fence" : "publish");
  cmd.push_back(std::to_string(prefix ? inv.keys.size() + 1 : inv.keys.size()));
  cmd.push_back(std::to_string(absl::ToInt64Milliseconds(options_.fence_ttl)));
  cmd.push_back(std::to_string(options_.max_len));
  cmd.push_back(prefix ? "1" : "0");
  if (!fence_only) {
    for (const char* field : {"s", "q", "n", "p", "u", "k"}) {
      cmd.push_back(field);
      switch (field[0]) {
        case 's':
          cmd.push_back(inv.sender);
          break;
        case 'q':
          cmd.push_back(std::to_string(inv.sequence));
          break;
        case 'n':
          cmd.push_back(inv.ns);
          break;
        case 'p':
          cmd.push_back(inv.prefix);
          break;
        case 'u':
          cmd.push_back(inv.purge_survival ? "1" : "0");
          break;
        default:
          cmd.push_back(absl::StrJoin(inv.keys, absl::string_view("\0", 1)));
      }
    }
  }
  return cmd;
}

void RedisBus::Publish(Invalidation invalidation, absl::Time deadline, PublishDone done) {
  if (invalidation.keys.empty() && invalidation.prefix.empty()) {
    std::move(done)(absl::InvalidArgumentError("nothing to invalidate: no keys and no prefix"));
    return;
  }
  if (!Enter()) {
    std::move(done)(absl::UnavailableError("the invalidation bus is closing"));
    return;
  }
  auto job = std::make_shared<PublishJob>();
  job->inv = std::move(invalidation);
  job->inv.sender = id_;
  job->inv.sequence = sequence_.fetch_add(1, std::memory_order_relaxed) + 1;
  job->deadline = deadline;
  job->done = std::move(done);
  if (job->inv.prefix.empty()) {
    RunPublishScript(std::move(job), absl::OkStatus());
    return;
  }
  // A prefix: fence, erase from L2, then publish (see the header).
  writer_->Run(
      PublishScript(job->inv, /*fence_only=*/true), deadline,
      [this, job](absl::StatusOr<RedisReply> fenced) mutable {
        absl::Status status = fenced.status();
        if (status.ok() && fenced->is_error()) {
          status = absl::UnavailableError(absl::StrCat("Redis answered ", fenced->str));
        }
        if (!status.ok()) {
          status =
              absl::Status(status.code(), absl::StrCat("fencing the prefix: ", status.message()));
        }
        shared_->Erase(
            {}, CompositeKey(job->inv.ns, job->inv.prefix), EraseMode::kRemove, job->deadline,
            [this, job, status = std::move(status)](absl::StatusOr<uint64_t> erased) mutable {
              if (status.ok() && !erased.ok()) {
                status = absl::Status(erased.status().code(),
                                      absl::StrCat("erasing the prefix from L2 (other pods may "
                                                   "still read old values under it): ",
                                                   erased.status().message()));
              }
              RunPublishScript(std::move(job), std::move(status));
            });
      });
}

void RedisBus::RunPublishScript(std::shared_ptr<PublishJob> job, absl::Status earlier) {
  writer_->Run(PublishScript(job->inv, /*fence_only=*/false), job->deadline,
               [this, job, earlier = std::move(earlier)](absl::StatusOr<RedisReply> id) mutable {
                 absl::Status status = id.status();
                 if (status.ok() && id->type != RedisReply::Type::kString) {
                   status = absl::UnavailableError(
                       id->is_error() ? absl::StrCat("Redis answered ", id->str)
                                      : std::string("unexpected reply to the publish script"));
                 }
                 if (!status.ok()) {
                   status = absl::Status(
                       status.code(),
                       absl::StrCat("publishing to the invalidation stream: ", status.message()));
                 } else {
                   published_.fetch_add(1, std::memory_order_relaxed);
                   status = std::move(earlier);
                 }
                 FinishPublish(job, std::move(status));
               });
}

void RedisBus::FinishPublish(const std::shared_ptr<PublishJob>& job, absl::Status status) {
  if (!status.ok()) publish_failures_.fetch_add(1, std::memory_order_relaxed);
  PublishDone done = std::move(job->done);
  std::move(done)(std::move(status));
  Leave();
}

// ---- Fenced L2 writes -------------------------------------------------------

namespace {

class FencedTier final : public Tier {
 public:
  FencedTier(std::unique_ptr<Tier> inner, std::shared_ptr<RedisClient> client,
             const std::string& prefix, std::shared_ptr<AppliedLog> applied,
             absl::Duration fence_ttl)
      : inner_(std::move(inner)),
        client_(std::move(client)),
        keys_(prefix),
        applied_(std::move(applied)),
        fence_ttl_(fence_ttl) {}
  // Waits for its writes in flight (each bounded by the client's timeout).
  ~FencedTier() override {
    absl::MutexLock l(&mu_);
    mu_.Await(absl::Condition(
        +[](int* n) { return *n == 0; }, &in_flight_));
  }

  TierId id() const override { return inner_->id(); }
  void Lookup(absl::string_view key, absl::Time deadline, LookupDone done) override {
    inner_->Lookup(key, deadline, std::move(done));
  }
  void LookupMany(std::vector<std::string> keys, absl::Time deadline,
                  LookupManyDone done) override {
    inner_->LookupMany(std::move(keys), deadline, std::move(done));
  }
  void Erase(std::vector<std::string> keys, std::string prefix, EraseMode mode, absl::Time deadline,
             EraseDone done) override {
    inner_->Erase(std::move(keys), std::move(prefix), mode, deadline, std::move(done));
  }

  void Store(absl::string_view key, const Entry& entry, StoreDone done) override {
    const absl::Time now = applied_->clock()->Now();
    if (entry.stale_until <= now) {
      // A removal: nothing to fence.
      inner_->Store(key, entry, std::move(done));
      return;
    }
    if (!client_->Available()) {
      // Dropped here rather than handed to `inner_`, which writes without
      // the fence: Redis may be back by the time it checks again.
      dropped_.fetch_add(1, std::memory_order_relaxed);
      std::move(done)(absl::UnavailableError("L2 unavailable; write dropped"));
      return;
    }
    const absl::Time started = entry.fetched_at - entry.fill_time;
    if (now - started >= fence_ttl_ / 2) {
      // Its fences may have expired already: it cannot be checked.
      applied_->CountFenced();
      std::move(done)(absl::AbortedError("fill too old to check against invalidations"));
      return;
    }
    const size_t ns_len = key.find('\0');
    std::string px = "0";
    if (entry.stale_until != absl::InfiniteFuture()) {
      px = std::to_string(std::max<int64_t>(
          1,
          absl::ToInt64Milliseconds(absl::Ceil(entry.stale_until - now, absl::Milliseconds(1)))));
    }
    RedisClient::Command cmd = {"EVAL",
                                FencedStoreLua(),
                                "3",
                                keys_.Value(key),
                                keys_.KeyFence(key),
                                keys_.AnyPrefixFence(),
                                EncodeEnvelope(entry),
                                std::move(px),
                                applied_->At(started),
                                keys_.PrefixFence(""),
                                std::string(key),
                                std::to_string(ns_len == absl::string_view::npos ? 1 : ns_len + 2)};
    {
      absl::MutexLock l(&mu_);
      ++in_flight_;
    }
    client_->Run(std::move(cmd), absl::InfiniteFuture(),
                 [this, done = std::move(done)](absl::StatusOr<RedisReply> reply) mutable {
                   absl::Status status = reply.status();
                   if (status.ok() && reply->type != RedisReply::Type::kInteger) {
                     status = absl::UnavailableError(
                         reply->is_error() ? absl::StrCat("Redis answered ", reply->str)
                                           : std::string("unexpected reply to a fenced write"));
                   }
                   if (!status.ok()) {
                     errors_.fetch_add(1, std::memory_order_relaxed);
                   } else if (reply->integer == 0) {
                     applied_->CountFenced();
                     status = absl::AbortedError("an invalidation came after this fill started");
                   } else {
                     stores_.fetch_add(1, std::memory_order_relaxed);
                   }
                   std::move(done)(std::move(status));
                   absl::MutexLock l(&mu_);
                   --in_flight_;
                 });
  }

  TierStats Stats() const override {
    TierStats s = inner_->Stats();
    s.stores += stores_.load(std::memory_order_relaxed);
    s.stores_dropped += dropped_.load(std::memory_order_relaxed);
    s.errors += errors_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  const std::unique_ptr<Tier> inner_;
  const std::shared_ptr<RedisClient> client_;
  const RedisKeys keys_;
  const std::shared_ptr<AppliedLog> applied_;
  const absl::Duration fence_ttl_;
  std::atomic<uint64_t> stores_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> errors_{0};
  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

std::unique_ptr<Tier> NewFencedTier(std::unique_ptr<Tier> inner,
                                    std::shared_ptr<RedisClient> client, const std::string& prefix,
                                    std::shared_ptr<AppliedLog> applied, absl::Duration fence_ttl) {
  return std::make_unique<FencedTier>(std::move(inner), std::move(client), prefix,
                                      std::move(applied), fence_ttl);
}

}  // namespace fanout::cache
