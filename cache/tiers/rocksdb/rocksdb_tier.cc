#include "cache/tiers/rocksdb/rocksdb_tier.h"

#include <pthread.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "cache/tiers/envelope.h"
#include "common/log.h"
#include "rocksdb/cache.h"
#include "rocksdb/compaction_filter.h"
#include "rocksdb/convenience.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/sst_file_manager.h"
#include "rocksdb/table.h"
#include "rocksdb/table_properties.h"
#include "rocksdb/write_batch.h"

namespace fanout::cache {
namespace {

namespace fs = std::filesystem;

// A file that says "this directory is an L3 directory". Written before the
// first DB::Open of an empty directory, so a directory holding RocksDB files
// but no marker was made by someone else (and is moved aside, never
// compacted through our filter, which would delete what it cannot decode).
constexpr char kMarkerName[] = "FANOUT_L3";
constexpr char kMarkerText[] = "fanout survival tier (L3): RocksDB, envelope format 1\n";
// Table property: the smallest stale_until (Unix µs) of the file's entries.
constexpr char kMinStaleUntilProperty[] = "fanout.l3.min_stale_until_us";
constexpr size_t kMaxBatchBytes = 8u << 20;
constexpr size_t kEraseChunk = 1000;
constexpr size_t kMaxRememberedKeys = 65536;
constexpr size_t kMaxRememberedPrefixes = 1024;
constexpr absl::Duration kReadOnlyLogEvery = absl::Minutes(10);
constexpr uint64_t kMaxInfoLogBytes = 1u << 20;
// What the writer deletes to learn whether RocksDB takes writes. Entry keys
// are composite keys (cache/entry.h), which always hold a NUL byte.
constexpr absl::string_view kProbeKey = "fanout.l3.write-probe";
constexpr absl::string_view kUntilRestart = " (L3 stays read-only until fanoutd restarts)";

rocksdb::Slice ToSlice(absl::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
absl::string_view ToView(const rocksdb::Slice& s) { return absl::string_view(s.data(), s.size()); }

// RocksDB's errors at the edge: corruption is DataLoss, anything else that
// keeps the tier from answering is Unavailable.
absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string message = absl::StrCat("L3 ", what, ": ", s.ToString());
  if (s.IsCorruption()) return absl::DataLossError(message);
  return absl::UnavailableError(message);
}

int64_t MicrosOf(absl::Time t) {
  if (t == absl::InfinitePast()) return std::numeric_limits<int64_t>::min();
  if (t == absl::InfiniteFuture()) return std::numeric_limits<int64_t>::max();
  return absl::ToUnixMicros(t);
}

// Drops entries past their stale_until, and bytes that are not an envelope.
// Called by RocksDB's compaction threads; a removed key becomes a deletion
// marker above the bottom level, so older versions below cannot reappear.
class ExpiryFilterImpl final : public rocksdb::CompactionFilter {
 public:
  explicit ExpiryFilterImpl(Clock* clock) : clock_(clock) {}
  bool Filter(int /*level*/, const rocksdb::Slice& /*key*/, const rocksdb::Slice& value,
              std::string* /*new_value*/, bool* /*value_changed*/) const override {
    absl::StatusOr<Envelope> env = DecodeEnvelope(ToView(value));
    if (!env.ok()) return true;
    return clock_->Now() >= env->entry.stale_until;
  }
  const char* Name() const override { return "fanout.l3.ExpiryFilter"; }

 private:
  Clock* const clock_;
};

// Records the smallest stale_until of a table's entries, so that the sweep
// rewrites only the files that hold something expired.
class MinStaleUntilCollector final : public rocksdb::TablePropertiesCollector {
 public:
  rocksdb::Status AddUserKey(const rocksdb::Slice& /*key*/, const rocksdb::Slice& value,
                             rocksdb::EntryType type, rocksdb::SequenceNumber /*seq*/,
                             uint64_t /*file_size*/) override {
    if (type != rocksdb::kEntryPut) return rocksdb::Status::OK();
    absl::StatusOr<Envelope> env = DecodeEnvelope(ToView(value));
    // Undecodable bytes count as expired: the sweep drops them.
    const int64_t stale =
        env.ok() ? MicrosOf(env->entry.stale_until) : std::numeric_limits<int64_t>::min();
    min_ = std::min(min_, stale);
    return rocksdb::Status::OK();
  }
  rocksdb::Status Finish(rocksdb::UserCollectedProperties* properties) override {
    (*properties)[kMinStaleUntilProperty] = std::to_string(min_);
    return rocksdb::Status::OK();
  }
  rocksdb::UserCollectedProperties GetReadableProperties() const override {
    return {{kMinStaleUntilProperty, std::to_string(min_)}};
  }
  const char* Name() const override { return "fanout.l3.MinStaleUntil"; }

 private:
  int64_t min_ = std::numeric_limits<int64_t>::max();
};

class MinStaleUntilCollectorFactory final : public rocksdb::TablePropertiesCollectorFactory {
 public:
  rocksdb::TablePropertiesCollector* CreateTablePropertiesCollector(
      rocksdb::TablePropertiesCollectorFactory::Context /*context*/) override {
    return new MinStaleUntilCollector();
  }
  const char* Name() const override { return "fanout.l3.MinStaleUntilFactory"; }
};

// RocksDB's info log (the LOG file in the DB directory), written so that a
// line that cannot be written is dropped and counted. RocksDB 7.8's own
// logger buffers lines and, once a write of them has failed (a full disk),
// asserts on the next line; Debian's build keeps assertions, so a full
// disk aborted the process. One file of at most `max_bytes`, plus the
// previous one as LOG.old. Thread-safe.
class InfoLog final : public rocksdb::Logger {
 public:
  InfoLog(rocksdb::Env* env, std::string path, uint64_t max_bytes,
          std::shared_ptr<std::atomic<uint64_t>> dropped)
      : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL),
        env_(env),
        path_(std::move(path)),
        max_bytes_(max_bytes),
        dropped_(std::move(dropped)) {}
  ~InfoLog() override { CloseImpl().PermitUncheckedError(); }

  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel()) return;
    static constexpr const char* kLevels[] = {"DEBUG", "INFO", "WARN", "ERROR", "FATAL", "HEADER"};
    char line[4096];
    const absl::Time now = absl::Now();
    size_t n = absl::FormatTime("%Y/%m/%d-%H:%M:%E6S ", now, absl::LocalTimeZone())
                   .copy(line, sizeof(line) - 1);
    if (level != rocksdb::InfoLogLevel::INFO_LEVEL &&
        level < rocksdb::InfoLogLevel::NUM_INFO_LOG_LEVELS) {
      n += std::snprintf(line + n, sizeof(line) - n, "[%s] ", kLevels[level]);
    }
    const int body = std::vsnprintf(line + n, sizeof(line) - n, format, ap);
    if (body < 0) return;
    n = std::min(n + static_cast<size_t>(body), sizeof(line) - 2);
    line[n++] = '\n';
    absl::MutexLock l(&mu_);
    if (closed_) return;
    if (file_ != nullptr && size_ + n > max_bytes_) {
      file_->Close().PermitUncheckedError();
      file_.reset();
      env_->RenameFile(path_, path_ + ".old").PermitUncheckedError();
      size_ = 0;
      fresh_ = true;
    }
    if (file_ == nullptr) {
      // A fresh file the first time and after a rotation; after a failed
      // write, the same file again (appending).
      rocksdb::Status opened = fresh_
                                   ? env_->NewWritableFile(path_, &file_, rocksdb::EnvOptions())
                                   : env_->ReopenWritableFile(path_, &file_, rocksdb::EnvOptions());
      if (!opened.ok()) file_.reset();
      fresh_ = false;
    }
    if (file_ == nullptr || !file_->Append(rocksdb::Slice(line, n)).ok()) {
      dropped_->fetch_add(1, std::memory_order_relaxed);
      if (file_ != nullptr) file_->Close().PermitUncheckedError();
      file_.reset();
      return;
    }
    size_ += n;
  }

 protected:
  rocksdb::Status CloseImpl() override {
    absl::MutexLock l(&mu_);
    closed_ = true;
    if (file_ != nullptr) file_->Close().PermitUncheckedError();
    file_.reset();
    return rocksdb::Status::OK();
  }

 private:
  rocksdb::Env* const env_;
  const std::string path_;
  const uint64_t max_bytes_;
  const std::shared_ptr<std::atomic<uint64_t>> dropped_;
  absl::Mutex mu_;
  std::unique_ptr<rocksdb::WritableFile> file_ ABSL_GUARDED_BY(mu_);
  uint64_t size_ ABSL_GUARDED_BY(mu_) = 0;
  bool fresh_ ABSL_GUARDED_BY(mu_) = true;
};

// Directory entries that do not make a directory "in use": a file system's
// lost+found and what an earlier move-aside left inside it.
bool Ignorable(const std::string& name) {
  return name == "lost+found" || absl::StartsWith(name, "corrupt-");
}

bool LooksEmpty(const std::string& path) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(path, ec)) {
    if (!Ignorable(e.path().filename().string())) return false;
  }
  return true;
}

bool HasMarker(const std::string& path) {
  std::error_code ec;
  return fs::exists(fs::path(path) / kMarkerName, ec);
}

bool WriteMarker(const std::string& path) {
  std::ofstream out(fs::path(path) / kMarkerName, std::ios::trunc);
  out << kMarkerText;
  out.close();
  return static_cast<bool>(out);
}

// Whether RocksDB's environment lets us create a file in `path`.
bool ProbeWritable(rocksdb::Env* env, const std::string& path) {
  const std::string probe = path + "/.fanout-write-probe";
  std::unique_ptr<rocksdb::WritableFile> file;
  if (!env->NewWritableFile(probe, &file, rocksdb::EnvOptions()).ok()) return false;
  const bool ok = file->Append("probe").ok() && file->Close().ok();
  env->DeleteFile(probe).PermitUncheckedError();
  return ok;
}

// What a failed DB::Open says about the directory: its contents are not a
// DB we can use (move them aside), as opposed to an environment problem
// (permissions, a lock held by another process, a full disk).
bool ContentsAreBad(const rocksdb::Status& s) {
  return s.IsCorruption() || s.IsInvalidArgument() || s.IsNotSupported() || s.IsPathNotFound();
}

// Moves `path` aside to "<path>.corrupt-<UTC time>"; if the directory itself
// cannot be renamed (a mount point, a read-only parent), moves its contents
// into "<path>/corrupt-<UTC time>/" instead. Returns where they went.
absl::StatusOr<std::string> MoveAside(const std::string& path) {
  const std::string stamp = absl::FormatTime("%Y%m%dT%H%M%SZ", absl::Now(), absl::UTCTimeZone());
  std::error_code ec;
  std::string target = absl::StrCat(path, ".corrupt-", stamp);
  for (int i = 2; fs::exists(target, ec); ++i) {
    target = absl::StrCat(path, ".corrupt-", stamp, "-", i);
  }
  fs::rename(path, target, ec);
  if (!ec) return target;
  const std::string rename_error = ec.message();

  std::string inside = absl::StrCat(path, "/corrupt-", stamp);
  for (int i = 2; fs::exists(inside, ec); ++i)
    inside = absl::StrCat(path, "/corrupt-", stamp, "-", i);
  if (!fs::is_directory(path, ec) || !fs::create_directory(inside, ec)) {
    return absl::UnavailableError(
        absl::StrCat("cannot move ", path, " aside: rename: ", rename_error, "; ", ec.message()));
  }
  for (const auto& e : fs::directory_iterator(path, ec)) {
    const std::string name = e.path().filename().string();
    if (Ignorable(name)) continue;
    fs::rename(e.path(), fs::path(inside) / name, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot move ", e.path().string(), " aside: ", ec.message()));
    }
  }
  return inside;
}

// The answer to a miss, built once: a copy shares it (a miss is what every
// fill of a new key asks L3 first).
const absl::Status& Miss() {
  static const absl::Status* const miss = new absl::Status(absl::NotFoundError("not in L3"));
  return *miss;
}

const rocksdb::ReadOptions& CachedOnly() {
  static const rocksdb::ReadOptions* const options = [] {
    auto* o = new rocksdb::ReadOptions();
    o->read_tier = rocksdb::kBlockCacheTier;
    return o;
  }();
  return *options;
}

}  // namespace

// ---------------------------------------------------------------------------
// Internal types.

struct RocksDbTier::Counters {
  std::atomic<uint64_t> hits{0};
  std::atomic<uint64_t> misses{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<uint64_t> timeouts{0};
  std::atomic<uint64_t> stores{0};
  std::atomic<uint64_t> stores_dropped{0};
  std::atomic<uint64_t> erased{0};
  std::atomic<uint64_t> undecodable{0};
  std::atomic<uint64_t> queue_depth{0};
  // Shared with the info logs, which RocksDB may keep after the tier.
  std::shared_ptr<std::atomic<uint64_t>> log_dropped = std::make_shared<std::atomic<uint64_t>>(0);
};

class RocksDbTier::ExpiryFilter final : public rocksdb::CompactionFilter {
 public:
  explicit ExpiryFilter(Clock* clock) : impl_(clock) {}
  bool Filter(int level, const rocksdb::Slice& key, const rocksdb::Slice& value,
              std::string* new_value, bool* value_changed) const override {
    return impl_.Filter(level, key, value, new_value, value_changed);
  }
  const char* Name() const override { return impl_.Name(); }

 private:
  ExpiryFilterImpl impl_;
};

// A read waiting for a reader thread. Exactly one of a reader, the deadline
// thread and shutdown claims it and answers.
struct RocksDbTier::ReadRequest {
  bool many = false;
  std::vector<std::string> keys;  // to read from the disk
  std::vector<size_t> slots;      // many: the result slot of each key
  std::vector<absl::StatusOr<Entry>> results;
  LookupDone one;
  LookupManyDone all;
  absl::Time deadline;
  uint64_t deadline_id = 0;
  std::atomic<bool> claimed{false};

  bool Claim() { return !claimed.exchange(true); }
  void Fail(const absl::Status& status) {
    if (!many) {
      std::move(one)(status);
      return;
    }
    for (size_t slot : slots) results[slot] = status;
    std::move(all)(std::move(results));
  }
};

struct RocksDbTier::EraseCall {
  EraseDone done;
  absl::Time deadline;
  uint64_t deadline_id = 0;
  std::atomic<bool> claimed{false};
  bool Claim() { return !claimed.exchange(true); }
};

struct RocksDbTier::WriteOp {
  enum class Kind { kPut, kErase, kBarrier };
  Kind kind = Kind::kPut;
  // kPut: the entry shares its value's buffer with the caller's; the writer
  // encodes it, off the filling thread.
  std::string key;
  Entry entry;
  StoreDone store_done;
  uint64_t bytes() const { return key.size() + entry.value.size() + kEnvelopeOverhead; }
  // kErase
  std::vector<std::string> keys;
  std::string prefix;
  EraseMode mode = EraseMode::kRemove;
  std::shared_ptr<EraseCall> erase;
  // kBarrier
  absl::AnyInvocable<void() &&> reached;
};

// Answers calls still waiting at their deadline: one thread, asleep until
// the earliest deadline. Expiry functions run on it, without its lock.
class RocksDbTier::DeadlineThread {
 public:
  using Expire = absl::AnyInvocable<void() &&>;

  DeadlineThread()
      : thread_([this] {
          pthread_setname_np(pthread_self(), "l3-deadlines");
          Loop();
        }) {}
  ~DeadlineThread() {
    {
      absl::MutexLock l(&mu_);
      stopping_ = true;
    }
    thread_.join();
  }

  uint64_t Add(absl::Time deadline, Expire expire) {
    absl::MutexLock l(&mu_);
    const uint64_t id = next_id_++;
    pending_.emplace(std::make_pair(deadline, id), std::move(expire));
    return id;
  }
  void Remove(uint64_t id, absl::Time deadline) {
    Expire doomed;  // destroyed outside the lock
    absl::MutexLock l(&mu_);
    auto it = pending_.find(std::make_pair(deadline, id));
    if (it == pending_.end()) return;
    doomed = std::move(it->second);
    pending_.erase(it);
  }

 private:
  void Loop() {
    for (;;) {
      Expire due;
      {
        absl::MutexLock l(&mu_);
        if (stopping_) return;
        const absl::Time now = absl::Now();
        if (pending_.empty() || pending_.begin()->first.first > now) {
          const auto first = pending_.empty() ? std::make_pair(absl::InfiniteFuture(), uint64_t{0})
                                              : pending_.begin()->first;
          auto changed = [this, first]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return stopping_ || (!pending_.empty() && pending_.begin()->first < first);
          };
          mu_.AwaitWithDeadline(absl::Condition(&changed), first.first);
          continue;
        }
        due = std::move(pending_.begin()->second);
        pending_.erase(pending_.begin());
      }
      std::move(due)();
    }
  }

  absl::Mutex mu_;
  absl::btree_map<std::pair<absl::Time, uint64_t>, Expire> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// ---------------------------------------------------------------------------
// Opening.

RocksDbTier::RocksDbTier(const RocksDbTierOptions& options)
    : options_(options),
      clock_(options.clock != nullptr ? options.clock : Clock::Real()),
      counters_(std::make_shared<Counters>()) {}

absl::StatusOr<std::unique_ptr<RocksDbTier>> RocksDbTier::Open(const RocksDbTierOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("cache.l3.path: must not be empty");
  if (options.max_bytes < (1u << 20)) {
    return absl::InvalidArgumentError("cache.l3.max_bytes: must be at least 1MiB");
  }
  if (options.read_threads < 1 || options.read_threads > 64) {
    return absl::InvalidArgumentError("L3 read_threads: must be from 1 to 64");
  }
  if (options.max_pending_writes < 1 || options.max_pending_reads < 1 || options.max_batch < 1) {
    return absl::InvalidArgumentError("L3 queue bounds: must be at least 1");
  }
  if (!(options.resume_fraction > 0 && options.resume_fraction < options.full_fraction)) {
    return absl::InvalidArgumentError(
        "L3 resume_fraction: must be more than 0 and less than full_fraction");
  }
  std::unique_ptr<RocksDbTier> tier(new RocksDbTier(options));
  absl::Status opened = tier->OpenDb();
  if (!opened.ok()) return opened;
  tier->deadlines_ = std::make_unique<DeadlineThread>();
  for (int i = 0; i < options.read_threads; ++i) {
    tier->readers_.emplace_back([t = tier.get()] {
      pthread_setname_np(pthread_self(), "l3-reader");
      t->ReaderLoop();
    });
  }
  tier->writer_ = std::thread([t = tier.get()] {
    pthread_setname_np(pthread_self(), "l3-writer");
    t->WriterLoop();
  });
  return tier;
}

absl::Status RocksDbTier::OpenDb() {
  std::string path = fs::path(options_.path).lexically_normal().string();
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  rocksdb::Env* env = options_.env != nullptr ? options_.env : rocksdb::Env::Default();

  // Sizes: small write buffers and files keep every compaction's need for
  // headroom (a file of one level and the files of the next it overlaps) a
  // few percent of the cap, well inside the room left above full_fraction.
  const uint64_t max_bytes = options_.max_bytes;
  const uint64_t write_buffer_bytes = std::clamp<uint64_t>(max_bytes / 64, 256u << 10, 64u << 20);
  const uint64_t file_bytes = std::clamp<uint64_t>(max_bytes / 256, 64u << 10, 64u << 20);

  filter_ = std::make_unique<ExpiryFilter>(clock_);
  sst_files_.reset(rocksdb::NewSstFileManager(env));
  sst_files_->SetMaxAllowedSpaceUsage(max_bytes);
  rocksdb::BlockBasedTableOptions table;
  if (options_.block_cache_bytes > 0) {
    block_cache_ = rocksdb::NewLRUCache(options_.block_cache_bytes);
    table.block_cache = block_cache_;
  } else {
    table.no_block_cache = true;
  }
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));

  rocksdb::Options o;
  o.env = env;
  o.create_if_missing = true;
  // Every table stays open with its index and filter in memory, so that a
  // read from memory (kBlockCacheTier) never opens a file.
  o.max_open_files = -1;
  o.compaction_filter = filter_.get();
  o.table_properties_collector_factories.push_back(
      std::make_shared<MinStaleUntilCollectorFactory>());
  o.sst_file_manager = sst_files_;
  o.write_buffer_size = write_buffer_bytes;
  o.max_write_buffer_number = 2;
  // A bloom filter over the memtable: a fill asks L3 for a key it does not
  // have before it stores it, and that miss should not walk the skiplist.
  o.memtable_prefix_bloom_size_ratio = 0.02;
  o.memtable_whole_key_filtering = true;
  o.max_total_wal_size = 4 * write_buffer_bytes;
  o.target_file_size_base = file_bytes;
  o.max_compaction_bytes = 10 * file_bytes;
  o.level_compaction_dynamic_level_bytes = true;
  o.max_bytes_for_level_base = 4 * write_buffer_bytes;
  // Files untouched for this long are rewritten (running the filter) even
  // without new writes.
  o.periodic_compaction_seconds = 12 * 3600;
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  // Compressed only at the bottom, where nine tenths of the data ends up:
  // the levels above are rewritten again soon, and compressing them would
  // spend the CPU the fills need.
  o.compression = rocksdb::kNoCompression;
  const std::vector<rocksdb::CompressionType> supported = rocksdb::GetSupportedCompressions();
  for (rocksdb::CompressionType c : {rocksdb::kLZ4Compression, rocksdb::kSnappyCompression}) {
    if (std::find(supported.begin(), supported.end(), c) != supported.end()) {
      o.bottommost_compression = c;
      break;
    }
  }

  // Only a directory that is provably ours (its marker) is ever moved
  // aside: a mistyped path must not get /var/lib or a file renamed.
  std::error_code ec;
  if (fs::exists(path, ec) && !fs::is_directory(path, ec)) {
    return absl::UnavailableError(
        absl::StrCat("cache.l3.path: ", path, " exists and is not a directory"));
  }
  fs::create_directories(path, ec);
  if (ec && !fs::is_directory(path)) {
    return absl::UnavailableError(
        absl::StrCat("cache.l3.path: cannot create ", path, ": ", ec.message()));
  }
  if (!HasMarker(path) && !LooksEmpty(path)) {
    return absl::UnavailableError(absl::StrCat(
        "cache.l3.path: ", path, " is not empty and has no ", kMarkerName,
        " file: not an L3 directory, left as it is (empty it or choose another path)"));
  }
  if (!HasMarker(path) && LooksEmpty(path)) WriteMarker(path);

  auto info_log = [&] {
    return std::make_shared<InfoLog>(env, path + "/LOG", kMaxInfoLogBytes, counters_->log_dropped);
  };
  o.info_log = info_log();
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(o, path, &raw);
  if (s.ok()) {
    db_.reset(raw);
    return absl::OkStatus();
  }

  if (ContentsAreBad(s) && ProbeWritable(env, path)) {
    absl::StatusOr<std::string> moved = MoveAside(path);
    if (!moved.ok()) return moved.status();
    moved_aside_ = *moved;
    FANOUT_LOG(ERROR) << "L3: RocksDB cannot open " << path << " (" << s.ToString()
                      << "); moved it aside to " << *moved << " and starting with an empty L3";
    fs::create_directories(path, ec);
    WriteMarker(path);
    o.info_log = info_log();
    s = rocksdb::DB::Open(o, path, &raw);
    if (!s.ok()) {
      return absl::UnavailableError(
          absl::StrCat("L3: cannot open a fresh DB at ", path, ": ", s.ToString()));
    }
    db_.reset(raw);
    return absl::OkStatus();
  }

  // Not writable here (permissions, a read-only mount, a full disk, or
  // another process holding the DB): what the directory holds can still
  // answer during an outage, so open it read-only rather than not at all.
  rocksdb::Status ro = rocksdb::DB::OpenForReadOnly(o, path, &raw);
  if (!ro.ok()) {
    return absl::UnavailableError(absl::StrCat("L3: cannot open ", path, ": ", s.ToString(),
                                               "; nor read-only: ", ro.ToString()));
  }
  db_.reset(raw);
  opened_read_only_ = true;
  writable_ = false;
  {
    absl::MutexLock l(&mu_);
    cause_ = ReadOnlyCause::kOpenedReadOnly;
    reason_ = absl::StrCat("opened read-only: ", s.ToString());
  }
  FANOUT_LOG(ERROR) << "L3: cannot open " << path << " for writing (" << s.ToString()
                    << "); serving what it holds read-only, writing nothing until a restart";
  return absl::OkStatus();
}

RocksDbTier::~RocksDbTier() {
  if (writer_.joinable()) {
    {
      absl::MutexLock l(&mu_);
      stopping_ = true;
    }
    writer_.join();
  }
  std::deque<std::shared_ptr<ReadRequest>> left;
  {
    absl::MutexLock l(&read_mu_);
    readers_stopping_ = true;
    left.swap(reads_);
  }
  for (auto& r : left) {
    if (r->Claim()) r->Fail(absl::UnavailableError("L3 is closing"));
  }
  for (auto& t : readers_) t.join();
  deadlines_.reset();
  if (db_ != nullptr) {
    db_->Close().PermitUncheckedError();
    db_.reset();
  }
}

// ---------------------------------------------------------------------------
// Reads.

absl::StatusOr<Entry> RocksDbTier::Finish(absl::string_view key, const rocksdb::Status& status,
                                          absl::string_view value,
                                          const std::optional<PendingErase>& before) {
  if (status.IsNotFound()) {
    counters_->misses.fetch_add(1, std::memory_order_relaxed);
    return Miss();
  }
  if (!status.ok()) {
    counters_->errors.fetch_add(1, std::memory_order_relaxed);
    return FromRocks(status, "read");
  }
  absl::StatusOr<Envelope> env = DecodeEnvelope(value);
  if (!env.ok()) {
    counters_->undecodable.fetch_add(1, std::memory_order_relaxed);
    counters_->misses.fetch_add(1, std::memory_order_relaxed);
    return absl::NotFoundError(absl::StrCat("undecodable in L3: ", env.status().message()));
  }
  Entry entry = std::move(env->entry);
  if (clock_->Now() >= entry.stale_until ||
      (any_remembered_.load(std::memory_order_acquire) && !ApplyRemembered(key, &entry)) ||
      ((before.has_value() || pending_erases_.load(std::memory_order_acquire) > 0) &&
       !ApplyPending(key, before, &entry))) {
    counters_->misses.fetch_add(1, std::memory_order_relaxed);
    return Miss();
  }
  counters_->hits.fetch_add(1, std::memory_order_relaxed);
  return entry;
}

void RocksDbTier::Lookup(absl::string_view key, absl::Time deadline, LookupDone done) {
  if (options_.inline_cached_reads) {
    const std::optional<PendingErase> before = PendingFor(key);
    rocksdb::PinnableSlice value;
    rocksdb::Status s = db_->Get(CachedOnly(), db_->DefaultColumnFamily(), ToSlice(key), &value);
    if (!s.IsIncomplete()) {
      std::move(done)(Finish(key, s, ToView(value), before));
      return;
    }
  }
  auto request = std::make_shared<ReadRequest>();
  request->keys.emplace_back(key);
  request->one = std::move(done);
  request->deadline = deadline;
  Enqueue(std::move(request));
}

void RocksDbTier::LookupMany(std::vector<std::string> keys, absl::Time deadline,
                             LookupManyDone done) {
  auto request = std::make_shared<ReadRequest>();
  request->many = true;
  request->results.resize(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    if (options_.inline_cached_reads) {
      const std::optional<PendingErase> before = PendingFor(keys[i]);
      rocksdb::PinnableSlice value;
      rocksdb::Status s =
          db_->Get(CachedOnly(), db_->DefaultColumnFamily(), ToSlice(keys[i]), &value);
      if (!s.IsIncomplete()) {
        request->results[i] = Finish(keys[i], s, ToView(value), before);
        continue;
      }
    }
    request->slots.push_back(i);
    request->keys.push_back(std::move(keys[i]));
  }
  if (request->keys.empty()) {
    std::move(done)(std::move(request->results));
    return;
  }
  request->all = std::move(done);
  request->deadline = deadline;
  Enqueue(std::move(request));
}

void RocksDbTier::Enqueue(std::shared_ptr<ReadRequest> request) {
  if (absl::Now() >= request->deadline) {
    counters_->timeouts.fetch_add(1, std::memory_order_relaxed);
    request->Fail(absl::DeadlineExceededError("L3 read: deadline passed before it started"));
    return;
  }
  bool closing;
  {
    absl::MutexLock l(&read_mu_);
    closing = readers_stopping_;
    if (!closing && reads_.size() < options_.max_pending_reads) {
      // The deadline is armed before the request can be taken, so a reader
      // that claims it always finds the id to disarm.
      request->deadline_id =
          deadlines_->Add(request->deadline, [request, counters = counters_]() mutable {
            if (!request->Claim()) return;
            counters->timeouts.fetch_add(1, std::memory_order_relaxed);
            request->Fail(absl::DeadlineExceededError("L3 read: still queued at its deadline"));
          });
      reads_.push_back(std::move(request));
      return;
    }
  }
  counters_->errors.fetch_add(1, std::memory_order_relaxed);
  request->Fail(absl::UnavailableError(closing ? "L3 is closing" : "L3 read queue full"));
}

void RocksDbTier::ReaderLoop() {
  auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(read_mu_) {
    return !reads_.empty() || readers_stopping_;
  };
  for (;;) {
    std::shared_ptr<ReadRequest> request;
    {
      absl::MutexLock l(&read_mu_);
      read_mu_.Await(absl::Condition(&has_work));
      if (reads_.empty()) return;
      request = std::move(reads_.front());
      reads_.pop_front();
    }
    if (!request->Claim()) continue;  // answered at its deadline
    deadlines_->Remove(request->deadline_id, request->deadline);
    Serve(*request);
  }
}

void RocksDbTier::Serve(ReadRequest& request) {
  if (absl::Now() >= request.deadline) {
    counters_->timeouts.fetch_add(1, std::memory_order_relaxed);
    request.Fail(absl::DeadlineExceededError("L3 read: still queued at its deadline"));
    return;
  }
  const rocksdb::ReadOptions options;
  if (!request.many) {
    const std::optional<PendingErase> before = PendingFor(request.keys[0]);
    rocksdb::PinnableSlice value;
    rocksdb::Status s =
        db_->Get(options, db_->DefaultColumnFamily(), ToSlice(request.keys[0]), &value);
    std::move(request.one)(Finish(request.keys[0], s, ToView(value), before));
    return;
  }
  std::vector<rocksdb::Slice> keys;
  std::vector<std::optional<PendingErase>> before;
  keys.reserve(request.keys.size());
  before.reserve(request.keys.size());
  for (const std::string& k : request.keys) {
    keys.push_back(ToSlice(k));
    before.push_back(PendingFor(k));
  }
  std::vector<std::string> values;
  std::vector<rocksdb::Status> statuses = db_->MultiGet(options, keys, &values);
  for (size_t i = 0; i < keys.size(); ++i) {
    request.results[request.slots[i]] = Finish(request.keys[i], statuses[i], values[i], before[i]);
  }
  std::move(request.all)(std::move(request.results));
}

// ---------------------------------------------------------------------------
// Writes.

void RocksDbTier::Store(absl::string_view key, const Entry& entry, StoreDone done) {
  if (clock_->Now() >= entry.stale_until) {
    std::move(done)(absl::OkStatus());  // nothing left to keep
    return;
  }
  if (!writable_.load(std::memory_order_acquire)) {
    counters_->stores_dropped.fetch_add(1, std::memory_order_relaxed);
    std::move(done)(absl::UnavailableError("L3 is read-only"));
    return;
  }
  WriteOp op;
  op.kind = WriteOp::Kind::kPut;
  op.key = std::string(key);
  op.entry = entry;
  op.store_done = std::move(done);
  std::vector<StoreDone> dropped;
  {
    absl::MutexLock l(&mu_);
    if (stopping_) {
      dropped.push_back(std::move(op.store_done));
    } else {
      queued_bytes_ += op.bytes();
      ++queued_puts_;
      queue_.push_back(std::move(op));
      counters_->queue_depth.fetch_add(1, std::memory_order_relaxed);
      // Over the bound: the oldest pending stores go (never an erase or a
      // barrier). The newest is what a reader will want after an outage.
      for (auto it = queue_.begin();
           it != queue_.end() && (queued_puts_ > options_.max_pending_writes ||
                                  queued_bytes_ > options_.max_pending_bytes);) {
        if (it->kind != WriteOp::Kind::kPut) {
          ++it;
          continue;
        }
        queued_bytes_ -= it->bytes();
        --queued_puts_;
        dropped.push_back(std::move(it->store_done));
        it = queue_.erase(it);
        counters_->queue_depth.fetch_sub(1, std::memory_order_relaxed);
      }
    }
  }
  for (StoreDone& d : dropped) {
    counters_->stores_dropped.fetch_add(1, std::memory_order_relaxed);
    std::move(d)(absl::UnavailableError("L3 write queue full: dropped"));
  }
}

void RocksDbTier::Erase(std::vector<std::string> keys, std::string prefix, EraseMode mode,
                        absl::Time deadline, EraseDone done) {
  auto call = std::make_shared<EraseCall>();
  call->done = std::move(done);
  call->deadline = deadline;
  WriteOp op;
  op.kind = WriteOp::Kind::kErase;
  op.keys = std::move(keys);
  op.prefix = std::move(prefix);
  op.mode = mode;
  op.erase = call;
  AddPending(op.keys, op.prefix, mode);
  {
    absl::MutexLock l(&mu_);
    if (!stopping_) {
      call->deadline_id = deadlines_->Add(deadline, [call, counters = counters_]() mutable {
        if (!call->Claim()) return;
        counters->timeouts.fetch_add(1, std::memory_order_relaxed);
        std::move(call->done)(absl::DeadlineExceededError(
            "L3 erase: still queued at its deadline (it will be applied)"));
      });
      queue_.push_back(std::move(op));
      counters_->queue_depth.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  RemovePending(op.keys, op.prefix);
  if (call->Claim()) std::move(call->done)(absl::UnavailableError("L3 is closing"));
}

void RocksDbTier::AddPending(const std::vector<std::string>& keys, const std::string& prefix,
                             EraseMode mode) {
  const absl::Time now = clock_->Now();
  auto add = [&](PendingErase& p) {
    if (p.queued == 0 || mode == EraseMode::kRemove) p.mode = mode;
    p.at = std::max(p.at, now);
    ++p.queued;
  };
  absl::MutexLock l(&pending_mu_);
  for (const std::string& k : keys) {
    add(pending_keys_.try_emplace(k, PendingErase{mode, now}).first->second);
  }
  if (!prefix.empty())
    add(pending_prefixes_.try_emplace(prefix, PendingErase{mode, now}).first->second);
  pending_erases_.fetch_add(1, std::memory_order_release);
}

void RocksDbTier::RemovePending(const std::vector<std::string>& keys, const std::string& prefix) {
  auto remove = [](auto& map, const std::string& k) {
    auto it = map.find(k);
    if (it != map.end() && --it->second.queued <= 0) map.erase(it);
  };
  absl::MutexLock l(&pending_mu_);
  for (const std::string& k : keys) remove(pending_keys_, k);
  if (!prefix.empty()) remove(pending_prefixes_, prefix);
  pending_erases_.fetch_sub(1, std::memory_order_release);
}

std::optional<RocksDbTier::PendingErase> RocksDbTier::PendingFor(absl::string_view key) const {
  if (pending_erases_.load(std::memory_order_acquire) == 0) return std::nullopt;
  std::optional<PendingErase> merged;
  auto merge = [&merged](const PendingErase& p) {
    if (!merged.has_value()) {
      merged = p;
      return;
    }
    if (p.mode == EraseMode::kRemove) merged->mode = EraseMode::kRemove;
    merged->at = std::max(merged->at, p.at);
  };
  absl::MutexLock l(&pending_mu_);
  auto it = pending_keys_.find(key);
  if (it != pending_keys_.end()) merge(it->second);
  for (const auto& [prefix, p] : pending_prefixes_) {
    if (absl::StartsWith(key, prefix)) merge(p);
  }
  return merged;
}

bool RocksDbTier::ApplyPending(absl::string_view key, const std::optional<PendingErase>& before,
                               Entry* entry) const {
  auto apply = [&](const PendingErase& p) {
    if (entry->fetched_at > p.at) return true;  // fetched after the erase
    if (p.mode == EraseMode::kRemove) return false;
    *entry = Supersede(std::move(*entry), p.at);
    return true;
  };
  if (before.has_value() && !apply(*before)) return false;
  const std::optional<PendingErase> now = PendingFor(key);
  return !now.has_value() || apply(*now);
}

absl::Status RocksDbTier::Flush() {
  absl::Notification reached;
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return absl::UnavailableError("L3 is closing");
    WriteOp op;
    op.kind = WriteOp::Kind::kBarrier;
    op.reached = [&reached] { reached.Notify(); };
    queue_.push_back(std::move(op));
  }
  reached.WaitForNotification();
  if (opened_read_only_) return absl::OkStatus();
  return FromRocks(db_->Flush(rocksdb::FlushOptions()), "flush");
}

absl::Status RocksDbTier::CompactAll() {
  if (opened_read_only_) return absl::FailedPreconditionError("L3 was opened read-only");
  rocksdb::CompactRangeOptions options;
  options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  return FromRocks(db_->CompactRange(options, nullptr, nullptr), "compaction");
}

void RocksDbTier::WriterLoop() {
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; };
  auto batch_ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || queued_puts_ >= options_.max_batch || queue_.size() > queued_puts_;
  };
  for (;;) {
    std::vector<WriteOp> ops;
    bool maintain = false;
    {
      absl::MutexLock l(&mu_);
      mu_.AwaitWithDeadline(absl::Condition(&ready), next_retry_);
      if (queue_.empty() && stopping_) return;
      // Group commit: let stores gather for up to batch_linger (an erase, a
      // barrier or a full batch ends the wait). Stores made meanwhile do not
      // wake this thread, and one WAL write carries them all.
      if (!queue_.empty() && options_.batch_linger > absl::ZeroDuration()) {
        mu_.AwaitWithTimeout(absl::Condition(&batch_ready), options_.batch_linger);
      }
      maintain = !stopping_ && absl::Now() >= next_retry_;
      if (maintain) next_retry_ = absl::InfiniteFuture();  // Maintain sets the next one
      // One erase or barrier alone, else a run of stores.
      size_t bytes = 0;
      while (!queue_.empty()) {
        WriteOp& front = queue_.front();
        if (front.kind != WriteOp::Kind::kPut) {
          if (ops.empty()) {
            ops.push_back(std::move(front));
            queue_.pop_front();
          }
          break;
        }
        if (ops.size() >= options_.max_batch || bytes >= kMaxBatchBytes) break;
        bytes += front.bytes();
        queued_bytes_ -= front.bytes();
        --queued_puts_;
        ops.push_back(std::move(front));
        queue_.pop_front();
      }
    }
    if (maintain) Maintain();
    if (ops.empty()) continue;
    switch (ops.front().kind) {
      case WriteOp::Kind::kPut:
        ApplyPuts(ops);
        break;
      case WriteOp::Kind::kErase:
        ApplyErase(ops.front());
        break;
      case WriteOp::Kind::kBarrier:
        std::move(ops.front().reached)();
        continue;
    }
    counters_->queue_depth.fetch_sub(ops.size(), std::memory_order_relaxed);
    if (writable_.load(std::memory_order_acquire) && OverFull(options_.full_fraction)) {
      EnterReadOnly(ReadOnlyCause::kFull,
                    absl::StrCat("near the disk cap (", options_.full_fraction * 100,
                                 "% of cache.l3.max_bytes)"));
    }
  }
}

void RocksDbTier::ApplyPuts(std::vector<WriteOp>& ops) {
  if (!writable_.load(std::memory_order_acquire)) {
    for (WriteOp& op : ops) {
      counters_->stores_dropped.fetch_add(1, std::memory_order_relaxed);
      std::move(op.store_done)(absl::UnavailableError("L3 is read-only"));
    }
    return;
  }
  rocksdb::WriteBatch batch;
  std::string value;
  for (const WriteOp& op : ops) {
    value = EncodeEnvelope(op.entry);
    batch.Put(ToSlice(op.key), ToSlice(value));
  }
  rocksdb::WriteOptions write;
  write.sync = options_.sync;
  rocksdb::Status s = db_->Write(write, &batch);
  if (!s.ok()) {
    counters_->errors.fetch_add(ops.size(), std::memory_order_relaxed);
    EnterReadOnly(ReadOnlyCause::kWriteFailed, s.ToString());
    const absl::Status failed = FromRocks(s, "write");
    for (WriteOp& op : ops) std::move(op.store_done)(failed);
    return;
  }
  counters_->stores.fetch_add(ops.size(), std::memory_order_relaxed);
  for (WriteOp& op : ops) std::move(op.store_done)(absl::OkStatus());
}

absl::Status RocksDbTier::WriteErase(const std::vector<std::string>& keys,
                                     const std::string& prefix, EraseMode mode, bool dry_run,
                                     uint64_t* count) {
  *count = 0;
  const absl::Time now = clock_->Now();
  rocksdb::WriteOptions write;
  write.sync = options_.sync;
  rocksdb::WriteBatch batch;
  absl::flat_hash_set<std::string> seen;
  auto flush = [&]() -> rocksdb::Status {
    if (dry_run || batch.Count() == 0) return rocksdb::Status::OK();
    rocksdb::Status s = db_->Write(write, &batch);
    batch.Clear();
    return s;
  };
  auto erase_one = [&](absl::string_view key, absl::string_view value) -> rocksdb::Status {
    if (!seen.emplace(key).second) return rocksdb::Status::OK();
    ++*count;
    if (dry_run) return rocksdb::Status::OK();
    absl::StatusOr<Envelope> env = DecodeEnvelope(value);
    if (mode == EraseMode::kRemove || !env.ok()) {
      batch.Delete(ToSlice(key));
    } else {
      const std::string superseded =
          EncodeEnvelope(Supersede(std::move(env->entry), now), /*superseded=*/true);
      batch.Put(ToSlice(key), ToSlice(superseded));
    }
    return batch.Count() >= kEraseChunk ? flush() : rocksdb::Status::OK();
  };

  const rocksdb::ReadOptions read;
  for (const std::string& key : keys) {
    rocksdb::PinnableSlice value;
    rocksdb::Status s = db_->Get(read, db_->DefaultColumnFamily(), ToSlice(key), &value);
    if (s.IsNotFound()) continue;
    if (s.ok()) s = erase_one(key, ToView(value));
    if (!s.ok()) return FromRocks(s, "erase");
  }
  if (!prefix.empty()) {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read));
    for (it->Seek(ToSlice(prefix)); it->Valid() && it->key().starts_with(ToSlice(prefix));
         it->Next()) {
      rocksdb::Status s = erase_one(ToView(it->key()), ToView(it->value()));
      if (!s.ok()) return FromRocks(s, "erase");
    }
    if (!it->status().ok()) return FromRocks(it->status(), "erase");
  }
  return FromRocks(flush(), "erase");
}

void RocksDbTier::ApplyErase(WriteOp& op) {
  uint64_t count = 0;
  absl::Status status;
  if (writable_.load(std::memory_order_acquire)) {
    status = WriteErase(op.keys, op.prefix, op.mode, /*dry_run=*/false, &count);
    if (!status.ok() && status.code() == absl::StatusCode::kUnavailable) {
      EnterReadOnly(ReadOnlyCause::kWriteFailed, std::string(status.message()));
    }
  }
  if (!writable_.load(std::memory_order_acquire)) {
    // Cannot be written (now): remembered and applied to lookups instead,
    // written when the tier is writable again.
    status = WriteErase(op.keys, op.prefix, op.mode, /*dry_run=*/true, &count);
    Remember(op.keys, op.prefix, op.mode);
  }
  // Written, or remembered for lookups: no longer pending.
  RemovePending(op.keys, op.prefix);
  if (status.ok()) {
    counters_->erased.fetch_add(count, std::memory_order_relaxed);
  } else {
    counters_->errors.fetch_add(1, std::memory_order_relaxed);
  }
  EraseCall& call = *op.erase;
  if (!call.Claim()) return;  // answered at its deadline
  deadlines_->Remove(call.deadline_id, call.deadline);
  if (status.ok()) {
    std::move(call.done)(count);
  } else {
    std::move(call.done)(status);
  }
}

// ---------------------------------------------------------------------------
// Read-only mode, the disk cap and the sweep.

void RocksDbTier::EnterReadOnly(ReadOnlyCause cause, const std::string& reason) {
  std::vector<StoreDone> dropped;
  {
    absl::MutexLock l(&mu_);
    if (cause_ == ReadOnlyCause::kOpenedReadOnly) return;
    const bool was_read_only = cause_ != ReadOnlyCause::kNone;
    if (!was_read_only || cause == ReadOnlyCause::kWriteFailed) {
      cause_ = cause;
      reason_ = reason;
    }
    writable_.store(false, std::memory_order_release);
    if (next_retry_ == absl::InfiniteFuture()) next_retry_ = absl::Now() + options_.retry_interval;
    const absl::Time now = absl::Now();
    if (!was_read_only && now - last_read_only_log_ >= kReadOnlyLogEvery) {
      last_read_only_log_ = now;
      FANOUT_LOG(ERROR) << "L3 is read-only: " << reason
                        << "; lookups go on, stores are dropped (counted), retrying every "
                        << absl::FormatDuration(options_.retry_interval);
    }
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->kind != WriteOp::Kind::kPut) {
        ++it;
        continue;
      }
      queued_bytes_ -= it->bytes();
      --queued_puts_;
      dropped.push_back(std::move(it->store_done));
      it = queue_.erase(it);
      counters_->queue_depth.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  for (StoreDone& d : dropped) {
    counters_->stores_dropped.fetch_add(1, std::memory_order_relaxed);
    std::move(d)(absl::UnavailableError("L3 is read-only"));
  }
}

void RocksDbTier::LeaveReadOnly() {
  if (!ReplayRememberedErases()) return;  // still cannot write; retried later
  absl::MutexLock l(&mu_);
  if (cause_ == ReadOnlyCause::kNone || cause_ == ReadOnlyCause::kOpenedReadOnly) return;
  FANOUT_LOG(WARNING) << "L3 is writable again (was read-only: " << reason_ << ")";
  cause_ = ReadOnlyCause::kNone;
  reason_.clear();
  next_retry_ = absl::InfiniteFuture();
  writable_.store(true, std::memory_order_release);
}

rocksdb::Status RocksDbTier::ProbeWrite() {
  rocksdb::WriteOptions write;
  write.no_slowdown = true;  // a stalled write answers Incomplete instead of waiting
  return db_->Delete(write, ToSlice(kProbeKey));
}

bool RocksDbTier::NeedsResume(const rocksdb::Status& s) {
  // A full disk or the cap: RocksDB's SstFileManager resumes by itself.
  // Incomplete (a write stall) and the like: nothing is broken. A fatal
  // error (RocksDB 7.8 rates a failed WAL or flush write that way, unless
  // the file system calls it retryable, which RocksDB then retries itself):
  // only reopening the DB clears it.
  if (s.IsNoSpace() || s.subcode() == rocksdb::Status::kSpaceLimit) return false;
  if (s.severity() >= rocksdb::Status::Severity::kFatalError) return false;
  return s.IsIOError() || s.IsCorruption();
}

bool RocksDbTier::OverFull(double fraction) {
  uint64_t memtables = 0;
  db_->GetIntProperty(rocksdb::DB::Properties::kCurSizeAllMemTables, &memtables);
  const double used = static_cast<double>(sst_files_->GetTotalSize() + memtables);
  return used >= fraction * static_cast<double>(options_.max_bytes);
}

void RocksDbTier::Maintain() {
  ReadOnlyCause cause;
  {
    absl::MutexLock l(&mu_);
    cause = cause_;
  }
  switch (cause) {
    case ReadOnlyCause::kOpenedReadOnly:
      return;
    case ReadOnlyCause::kNone:
      if (!OverFull(options_.full_fraction)) return;
      EnterReadOnly(ReadOnlyCause::kFull, "near the disk cap");
      break;
    case ReadOnlyCause::kFull:
      // Expired entries still in the memtables go to files the sweep sees.
      db_->Flush(rocksdb::FlushOptions()).PermitUncheckedError();
      break;
    case ReadOnlyCause::kWriteFailed: {
      // A write RocksDB takes says it is writable again, whatever its
      // error handler still records. Resume() is for errors nothing else
      // recovers from, and only while writes are refused (see the header:
      // called needlessly, it can wait for good).
      const rocksdb::Status probe = ProbeWrite();
      if (!probe.ok() && (!NeedsResume(probe) || !db_->Resume().ok())) {
        absl::MutexLock l(&mu_);
        if (probe.severity() >= rocksdb::Status::Severity::kFatalError &&
            !absl::StrContains(reason_, kUntilRestart)) {
          absl::StrAppend(&reason_, kUntilRestart);
          FANOUT_LOG(ERROR) << "L3: RocksDB cannot resume after " << probe.ToString() << ";"
                            << kUntilRestart;
        }
        next_retry_ = absl::Now() + options_.retry_interval;
        return;
      }
      break;
    }
  }
  SweepExpiredFiles();
  if (OverFull(options_.resume_fraction)) {
    absl::MutexLock l(&mu_);
    if (cause_ == ReadOnlyCause::kWriteFailed) {
      cause_ = ReadOnlyCause::kFull;
      reason_ = "near the disk cap";
    }
    next_retry_ = absl::Now() + options_.retry_interval;
    return;
  }
  LeaveReadOnly();
  absl::MutexLock l(&mu_);
  if (cause_ != ReadOnlyCause::kNone) next_retry_ = absl::Now() + options_.retry_interval;
}

void RocksDbTier::SweepExpiredFiles() {
  rocksdb::TablePropertiesCollection properties;
  if (!db_->GetPropertiesOfAllTables(&properties).ok()) return;
  std::vector<rocksdb::LiveFileMetaData> files;
  db_->GetLiveFilesMetaData(&files);
  int last = 0;
  for (const auto& f : files) last = std::max(last, f.level);
  const int64_t now = MicrosOf(clock_->Now());
  auto expired = [&](const rocksdb::LiveFileMetaData& f) {
    auto p = properties.find(f.db_path + f.name);
    if (p == properties.end()) return false;
    const auto& user = p->second->user_collected_properties;
    auto v = user.find(kMinStaleUntilProperty);
    int64_t min_stale;
    return v != user.end() && absl::SimpleAtoi(v->second, &min_stale) && min_stale <= now;
  };
  rocksdb::CompactionOptions compaction;
  for (const auto& f : files) {
    {
      absl::MutexLock l(&mu_);
      if (stopping_) return;
    }
    if (!expired(f)) continue;
    rocksdb::Status s;
    if (f.level == last && last > 0) {
      // A bottom file rewritten in place: room for one file is all it needs.
      s = db_->CompactFiles(compaction, {f.name}, f.level);
    } else {
      // Above the bottom the filter would only leave deletion markers: push
      // the file's key range down to the bottom, where they are dropped.
      // RocksDB refuses (and nothing happens) if that needs more room than
      // the cap leaves.
      const rocksdb::Slice begin(f.smallestkey);
      const rocksdb::Slice end(f.largestkey);
      s = db_->CompactRange(rocksdb::CompactRangeOptions(), &begin, &end);
    }
    if (!s.ok()) {
      FANOUT_LOG(DEBUG) << "L3 sweep of " << f.name << ": " << s.ToString();
    }
  }
}

// ---------------------------------------------------------------------------
// Erases remembered while read-only.

void RocksDbTier::Remember(const std::vector<std::string>& keys, const std::string& prefix,
                           EraseMode mode) {
  const absl::Time now = clock_->Now();
  auto merge = [&](RememberedErase& r) {
    if (mode == EraseMode::kRemove) r.mode = EraseMode::kRemove;
    r.at = std::max(r.at, now);
  };
  absl::MutexLock l(&remembered_mu_);
  bool overflow = false;
  for (const std::string& k : keys) {
    auto it = remembered_keys_.find(k);
    if (it != remembered_keys_.end()) {
      merge(it->second);
    } else if (remembered_keys_.size() < kMaxRememberedKeys) {
      remembered_keys_.emplace(k, RememberedErase{mode, now});
    } else {
      overflow = true;
    }
  }
  if (!prefix.empty()) {
    auto it = remembered_prefixes_.find(prefix);
    if (it != remembered_prefixes_.end()) {
      merge(it->second);
    } else if (remembered_prefixes_.size() < kMaxRememberedPrefixes) {
      remembered_prefixes_.emplace(prefix, RememberedErase{mode, now});
    } else {
      overflow = true;
    }
  }
  if (overflow) {
    // Too many to track one by one: nothing fetched before now is fresh any
    // more, for as long as this process runs.
    superseded_before_ = now;
    FANOUT_LOG(WARNING) << "L3: too many erases while read-only to remember one by one; every "
                           "entry fetched before now is served stale-only by this process";
  }
  any_remembered_.store(true, std::memory_order_release);
}

bool RocksDbTier::ApplyRemembered(absl::string_view key, Entry* entry) const {
  absl::ReaderMutexLock l(&remembered_mu_);
  auto apply = [&](const RememberedErase& r) {
    if (entry->fetched_at > r.at) return true;  // written after the erase
    if (r.mode == EraseMode::kRemove) return false;
    *entry = Supersede(std::move(*entry), r.at);
    return true;
  };
  if (entry->fetched_at < superseded_before_) {
    *entry = Supersede(std::move(*entry), superseded_before_);
  }
  auto it = remembered_keys_.find(key);
  if (it != remembered_keys_.end() && !apply(it->second)) return false;
  for (const auto& [prefix, r] : remembered_prefixes_) {
    if (absl::StartsWith(key, prefix) && !apply(r)) return false;
  }
  return true;
}

bool RocksDbTier::ReplayRememberedErases() {
  if (!any_remembered_.load(std::memory_order_acquire)) return true;
  std::vector<std::pair<std::string, RememberedErase>> keys;
  std::vector<std::pair<std::string, RememberedErase>> prefixes;
  {
    absl::ReaderMutexLock l(&remembered_mu_);
    keys.assign(remembered_keys_.begin(), remembered_keys_.end());
    prefixes.assign(remembered_prefixes_.begin(), remembered_prefixes_.end());
  }
  for (EraseMode mode : {EraseMode::kSupersede, EraseMode::kRemove}) {
    std::vector<std::string> batch;
    for (const auto& [k, r] : keys) {
      if (r.mode == mode) batch.push_back(k);
    }
    uint64_t n = 0;
    if (!batch.empty() && !WriteErase(batch, "", mode, /*dry_run=*/false, &n).ok()) return false;
    for (const auto& [p, r] : prefixes) {
      if (r.mode == mode && !WriteErase({}, p, mode, /*dry_run=*/false, &n).ok()) return false;
    }
  }
  absl::MutexLock l(&remembered_mu_);
  // Forget what was written, unless a newer erase of the same key came in.
  for (const auto& [k, r] : keys) {
    auto it = remembered_keys_.find(k);
    if (it != remembered_keys_.end() && it->second.at == r.at) remembered_keys_.erase(it);
  }
  for (const auto& [p, r] : prefixes) {
    auto it = remembered_prefixes_.find(p);
    if (it != remembered_prefixes_.end() && it->second.at == r.at) remembered_prefixes_.erase(it);
  }
  const bool all_written = remembered_keys_.empty() && remembered_prefixes_.empty();
  if (all_written && superseded_before_ == absl::InfinitePast()) {
    any_remembered_.store(false, std::memory_order_release);
  }
  return all_written;
}

// ---------------------------------------------------------------------------
// Introspection and iteration.

TierStats RocksDbTier::Stats() const {
  TierStats s;
  const Counters& c = *counters_;
  s.hits = c.hits.load(std::memory_order_relaxed);
  s.misses = c.misses.load(std::memory_order_relaxed);
  s.errors = c.errors.load(std::memory_order_relaxed);
  s.timeouts = c.timeouts.load(std::memory_order_relaxed);
  s.stores = c.stores.load(std::memory_order_relaxed);
  s.stores_dropped = c.stores_dropped.load(std::memory_order_relaxed);
  s.erased = c.erased.load(std::memory_order_relaxed);
  s.undecodable = c.undecodable.load(std::memory_order_relaxed);
  s.queue_depth = c.queue_depth.load(std::memory_order_relaxed);
  s.available = writable_.load(std::memory_order_acquire);
  return s;
}

RocksDbTierState RocksDbTier::State() const {
  RocksDbTierState s;
  s.opened_read_only = opened_read_only_;
  s.moved_aside = moved_aside_;
  s.sst_bytes = sst_files_->GetTotalSize();
  s.log_lines_dropped = counters_->log_dropped->load(std::memory_order_relaxed);
  {
    absl::MutexLock l(&mu_);
    s.read_only = cause_ != ReadOnlyCause::kNone;
    s.read_only_reason = reason_;
  }
  {
    absl::ReaderMutexLock l(&remembered_mu_);
    s.remembered_erases = remembered_keys_.size() + remembered_prefixes_.size();
  }
  return s;
}

absl::Status RocksDbTier::ForEach(
    absl::FunctionRef<bool(absl::string_view key, const Entry& entry)> visit,
    absl::Time deadline) const {
  rocksdb::ReadOptions read;
  read.fill_cache = false;  // a scan must not push the hot blocks out
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read));
  uint64_t n = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if ((++n & 255) == 0 && absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("L3 scan stopped at its deadline after ", n, " entries"));
    }
    absl::StatusOr<Envelope> env = DecodeEnvelope(ToView(it->value()));
    if (!env.ok()) continue;
    Entry& entry = env->entry;
    if (clock_->Now() >= entry.stale_until) continue;
    if (any_remembered_.load(std::memory_order_acquire) &&
        !ApplyRemembered(ToView(it->key()), &entry)) {
      continue;
    }
    if (!visit(ToView(it->key()), entry)) return absl::OkStatus();
  }
  return FromRocks(it->status(), "scan");
}

}  // namespace fanout::cache
